"""Animations (Ruder et al. 2016): flow, warping and the reliability mask; frames stylised in sequence,
consistently; the command line's folders of frames and animated files."""

from __future__ import annotations

import io
import statistics

import numpy as np
import pytest
import torch
from PIL import Image

from nst_engine import CancelledError, CancelToken, InvalidSettingsError, StyleSettings, stylize_sequence
from nst_engine.cli import main
from nst_engine.cli.animation_files import write_animation
from nst_engine.cli.image_files import read_image, write_image
from nst_engine.cli.progress_bar import TerminalProgressBar
from nst_engine.temporal import estimate_flow, long_term_weights, motion_between, reliability_mask, warp

from .stand_ins import smooth_image

HEIGHT, WIDTH = 48, 64
STEP = (1, 2)  # the known motion: the window slides 1 px down and 2 px right per frame
# fp32 pinned: the figures below hold on any CPU.
SETTINGS = StyleSettings(size=0, scales=1, iterations=12, precision="fp32")


def sliding_frames(count: int, step: tuple[int, int] = STEP, seed: int = 5) -> list[torch.Tensor]:
    """A window sliding over a larger image: every frame's true backward flow is ``step`` (dy, dx)."""
    dy, dx = step
    source = smooth_image(HEIGHT + dy * count, WIDTH + dx * count, seed=seed)
    return [source[:, t * dy: t * dy + HEIGHT, t * dx: t * dx + WIDTH].contiguous() for t in range(count)]


def warping_error(results: list[torch.Tensor], step: tuple[int, int] = STEP) -> float:
    """Mean over pairs of the RMS difference between a result and the previous one moved by the true motion,
    over the pixels it carries over."""
    dy, dx = step
    return statistics.mean(
        (later[:, : HEIGHT - dy, : WIDTH - dx] - earlier[:, dy:, dx:]).square().mean().sqrt().item()
        for earlier, later in zip(results, results[1:]))


def test_flow_and_warp_recover_a_known_shift():
    first, second = sliding_frames(2)
    flow = estimate_flow(second, first)
    inner = flow[:, 4:-4, 4:-4]
    assert inner[0].mean().item() == pytest.approx(STEP[1], abs=0.05)
    assert inner[1].mean().item() == pytest.approx(STEP[0], abs=0.05)
    moved = warp(first, flow)
    assert (moved - second)[:, 4:-4, 4:-4].abs().mean().item() < 0.01


def test_warp_by_a_whole_pixel_shift_is_exact():
    image = smooth_image(16, 20, seed=3)
    flow = torch.stack([torch.full((16, 20), 3.0), torch.full((16, 20), -2.0)])
    moved = warp(image, flow)
    assert torch.allclose(moved[:, 2:, :-3], image[:, :-2, 3:], atol=1e-6)


def moving_square(x: int) -> torch.Tensor:
    """A static background with a 16-px square of another texture at (12, x)."""
    picture = smooth_image(HEIGHT, WIDTH, seed=8).clone()
    picture[:, 12:28, x: x + 16] = smooth_image(16, 16, seed=9)
    return picture


def test_the_mask_is_zero_where_the_square_uncovers_the_background():
    """The square moves 6 px right: the 6-px strip it leaves has no past."""
    backward = torch.zeros(2, HEIGHT, WIDTH)
    backward[0, 12:28, 26:42] = -6.0  # the square's pixels were 6 px to the left
    forward = torch.zeros(2, HEIGHT, WIDTH)
    forward[0, 12:28, 20:36] = 6.0
    exact = reliability_mask(backward, forward)
    estimated = motion_between(moving_square(20), moving_square(26)).reliable
    for mask in (exact, estimated):
        assert mask[14:26, 21:25].mean() < 0.2  # the uncovered strip (its edges are motion boundaries too)
        assert mask[36:, :].mean() == 1.0 and mask[2:5, :].mean() == 1.0  # the background away from the square
        assert mask[14:26, 29:39].mean() == 1.0  # the square itself, carried over
    assert exact[14:26, 20:26].sum() == 0


def test_the_mask_is_zero_where_pixels_come_into_view():
    first, second = sliding_frames(2)
    mask = motion_between(first, second).reliable
    assert mask[:, -STEP[1]:].sum() == 0 and mask[-STEP[0]:, :].sum() == 0
    assert mask[: -4, : -4].mean() == 1.0


def test_long_term_weights_tie_each_pixel_to_the_nearest_reliable_frame():
    # Four pixels: reliable in t−1; only in t−2 and t−4; only in t−4; in none.
    c1, c2, c4 = torch.tensor([1.0, 0, 0, 0]), torch.tensor([1.0, 1, 0, 0]), torch.tensor([1.0, 1, 1, 0])
    weights = long_term_weights([c1, c2, c4])
    assert [w.tolist() for w in weights] == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]


def run(engine, frames, style, **options):
    return list(stylize_sequence(engine, frames, [style], SETTINGS, **options))


def test_frames_stylised_in_sequence_flicker_far_less(engine, style_image):
    frames = sliding_frames(4)
    independent = run(engine, frames, style_image, temporal_weight=0.0)
    temporal = run(engine, frames, style_image)
    assert warping_error(frames) < 0.002  # the measure itself: the source frames hardly differ
    assert warping_error(temporal) < 0.4 * warping_error(independent)


def bar_frames(count: int) -> list[torch.Tensor]:
    """A still background and a full-height bar 16 px wide moving 8 px right per frame: it hides each pixel
    it passes for two frames; frame 4 shows x 28..35 again, last seen in frame 1 (and frame 0)."""
    background, bar = smooth_image(HEIGHT, WIDTH, seed=8), smooth_image(HEIGHT, 16, seed=9)
    frames = []
    for t in range(count):
        frame = background.clone()
        frame[:, :, 4 + 8 * t: 20 + 8 * t] = bar
        frames.append(frame)
    return frames


def test_long_term_consistency_restores_a_region_uncovered_again(engine, style_image):
    """With frames t−1, t−2, t−4 the strip that frame 4 uncovers is tied to frame 0's result, where it was last
    reliable four frames back; with the previous frame alone it is stylised anew.  Measured where the
    estimated flow to frame 0 is reliable: next to the bar, which moved 32 px, DIS's flow is not."""
    frames = bar_frames(5)
    short = run(engine, frames, style_image, frame_iterations=4)
    long = run(engine, frames, style_image, frame_iterations=4, temporal_frames=(1, 2, 4))
    tied = long_term_weights([motion_between(frames[4 - gap], frames[4]).reliable for gap in (1, 2, 4)])[2]
    strip = torch.zeros(HEIGHT, WIDTH)
    strip[:, 28:36] = 1.0
    region = tied * strip
    assert region.sum() > 0.25 * strip.sum()

    def change(results):  # frame 4's result against frame 0's there (the background does not move)
        return ((results[4] - results[0]).square() * region).sum().div(3 * region.sum()).sqrt().item()

    assert change(long) < 0.3 * change(short)
    assert torch.equal(short[0], long[0])


@pytest.mark.parametrize("gaps", [(2,), (1, 1), (1, 17), (0, 1), (1, 2.0), (True,)])
def test_bad_temporal_frames_are_refused_at_the_call(engine, style_image, gaps):
    with pytest.raises(InvalidSettingsError, match="temporal_frames"):
        stylize_sequence(engine, [], [style_image], SETTINGS, temporal_frames=gaps)


def test_temporal_weight_zero_stylises_each_frame_as_alone(engine, style_image):
    frames = sliding_frames(2)
    results = run(engine, frames, style_image, temporal_weight=0.0)
    for frame, result in zip(frames, results):
        assert torch.equal(result, engine.stylize(frame, [style_image], SETTINGS))


def test_progress_carries_frame_numbers_and_the_temporal_term(engine, style_image):
    records = []
    results = run(engine, sliding_frames(3), style_image, frame_iterations=4, on_progress=records.append)
    assert len(results) == 3
    assert [(r.frame, r.frames, r.stage_iteration, r.stage_iterations) for r in records] == [
        *[(1, 3, i, 12) for i in range(1, 13)], *[(2, 3, i, 4) for i in range(1, 5)],
        *[(3, 3, i, 4) for i in range(1, 5)]]
    assert all(r.losses.temporal == 0 for r in records if r.frame == 1)
    assert all(r.losses.temporal > 0 for r in records if r.frame > 1 and r.stage_iteration > 1)
    assert all(r.losses.total == pytest.approx(r.losses.content + r.losses.style + r.losses.tv + r.losses.temporal)
               for r in records)
    stream = io.StringIO()  # the command line's progress line
    bar = TerminalProgressBar(stream, force=True)
    bar(records[-2])
    assert "frame 3/3 · iteration 3/4 [" in stream.getvalue()


def test_style_targets_are_computed_once_per_sequence(engine, style_image, monkeypatch):
    calls = []
    original = engine.style_grams
    monkeypatch.setattr(engine, "style_grams", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    run(engine, sliding_frames(3), style_image, frame_iterations=2)
    assert len(calls) == 1


def test_cancel_mid_sequence_raises(engine, style_image):
    token = CancelToken()

    def on_progress(record):
        if record.frame == 2 and record.stage_iteration == 2:
            token.cancel()

    sequence = stylize_sequence(engine, sliding_frames(3), [style_image], SETTINGS, cancel=token,
                                       on_progress=on_progress)
    assert next(sequence).shape == (3, HEIGHT, WIDTH)
    with pytest.raises(CancelledError):
        next(sequence)


def test_a_frame_of_another_size_ends_the_sequence_clearly(engine, style_image):
    frames = [smooth_image(HEIGHT, WIDTH, seed=1), smooth_image(HEIGHT, WIDTH + 16, seed=2)]
    sequence = stylize_sequence(engine, frames, [style_image], SETTINGS, frame_iterations=1)
    next(sequence)
    with pytest.raises(InvalidSettingsError, match="frame 2 is 80×48 pixels, but the first frame is 64×48"):
        next(sequence)


def test_bad_sequence_options_are_refused_at_the_call(engine, style_image):
    with pytest.raises(InvalidSettingsError, match="temporal_weight"):
        stylize_sequence(engine, [], [style_image], SETTINGS, temporal_weight=-1.0)
    with pytest.raises(InvalidSettingsError, match="init 'image'"):
        stylize_sequence(engine, [], [style_image], StyleSettings(init="image"))


def test_tiled_stages_take_the_temporal_term_too(engine, style_image):
    records = []
    settings = StyleSettings(size=0, scales=1, iterations=3, precision="fp32", tile_size=64)
    results = list(stylize_sequence(engine, sliding_frames(2), [style_image], settings, frame_iterations=2,
                                           on_progress=records.append))
    assert len(results) == 2
    assert records[-1].frame == 2 and records[-1].losses.temporal > 0


# The command line, in this process (it loads the weights file itself).

def cli(weights_file, *args: str) -> int:
    return main([*args, "--weights", str(weights_file), "--device", "cpu", "--precision", "fp32", "--size", "0",
                 "--scales", "1", "-q"])


def test_a_folder_of_frames_round_trips_in_name_order_and_flickers_less(weights_file, tmp_path):
    frames_dir, style = tmp_path / "frames", tmp_path / "style.png"
    frames_dir.mkdir()
    frames = sliding_frames(3)
    names = ["frame9.png", "frame10.png", "frame11.png"]  # name order counts 9 before 10
    for name, frame in zip(names, frames):
        write_image(frames_dir / name, frame, bits=16)
    (frames_dir / "notes.txt").write_text("not a frame")
    write_image(style, smooth_image(64, 64, seed=2))
    outputs = {}
    for label, weight in (("independent", ["--temporal-weight", "0"]), ("default", [])):
        out = tmp_path / label
        assert cli(weights_file, str(frames_dir), str(style), "-o", str(out), "--iterations", "12", *weight) == 0
        assert sorted(path.name for path in out.iterdir()) == sorted(names)
        outputs[label] = [read_image(out / name) for name in names]
    assert all(image.bits == 16 and image.rgb.shape == (3, HEIGHT, WIDTH) for image in outputs["default"])
    for index, image in enumerate(outputs["default"]):  # each result is nearest its own frame: the order is kept
        distances = [(image.rgb - frame).square().mean().item() for frame in frames]
        assert distances.index(min(distances)) == index
    independent = warping_error([image.rgb for image in outputs["independent"]])
    assert warping_error([image.rgb for image in outputs["default"]]) < 0.4 * independent  # the default weight


@pytest.mark.parametrize("suffix", [".png", ".gif", ".webp"])
def test_an_animated_file_round_trips_with_its_timing(weights_file, tmp_path, suffix):
    animation, style, out = tmp_path / f"in{suffix}", tmp_path / "style.png", tmp_path / f"out{suffix}"
    frames = sliding_frames(3, step=(4, 8))  # far apart, so that each result is nearest its own frame
    write_animation(animation, [(frame, None) for frame in frames], [80, 120, 200], loop=3)
    write_image(style, smooth_image(64, 64, seed=2))
    assert cli(weights_file, str(animation), str(style), "-o", str(out), "--iterations", "3") == 0
    with Image.open(out) as written:
        assert written.format == Image.open(animation).format and written.n_frames == 3
        assert written.info.get("loop") == 3
        durations, pictures = [], []
        for index in range(3):
            written.seek(index)
            written.load()
            durations.append(written.info.get("duration"))
            rgb = torch.from_numpy(np.array(written.convert("RGB"))).permute(2, 0, 1) / 255.0
            pictures.append(rgb)
    assert durations == [80, 120, 200]
    for index, picture in enumerate(pictures):
        distances = [(picture - frame).square().mean().item() for frame in frames]
        assert distances.index(min(distances)) == index


@pytest.mark.parametrize(("make_output", "message"), [
    (lambda tmp: tmp / "frames", "the frames' own folder"),
    (lambda tmp: tmp / "style.png", "is a file"),
])
def test_a_bad_output_folder_is_refused_before_the_model_loads(tmp_path, make_output, message, capsys):
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for index, frame in enumerate(sliding_frames(2)):
        write_image(frames_dir / f"{index}.png", frame)
    write_image(tmp_path / "style.png", smooth_image(64, 64, seed=2))
    assert main([str(frames_dir), str(tmp_path / "style.png"), "-o", str(make_output(tmp_path)),
                 "--weights", str(tmp_path / "no-such-weights.pth")]) == 1
    assert message in capsys.readouterr().err


def test_an_animation_is_not_written_as_a_still_format(tmp_path, capsys):
    animation = tmp_path / "in.gif"
    write_animation(animation, [(frame, None) for frame in sliding_frames(2)], [100, 100], loop=0)
    write_image(tmp_path / "style.png", smooth_image(64, 64, seed=2))
    assert main([str(animation), str(tmp_path / "style.png"), "-o", str(tmp_path / "out.jpg"),
                 "--weights", str(tmp_path / "no-such-weights.pth")]) == 1
    assert "an animation is written as .png (APNG), .gif or .webp" in capsys.readouterr().err
