"""The GIMP-free parts of the plug-in's Animation: layer names' frame timings, the frames' order, the
progress text of a sequence, and the record an animation's result image keeps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from daemon.wire.messages import JobProgress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"))

from arguments import BY_NAME, ArgumentKind  # noqa: E402
from frames import Disposal, FrameTiming, bottom_to_top, frame_timing, names_carry_timings  # noqa: E402
from pixels import Region  # noqa: E402
from progress_text import progress_status  # noqa: E402
from result_record import ResultRecord  # noqa: E402


@pytest.mark.parametrize(("name", "timing"), [
    ("Frame 1 (100ms)", FrameTiming(100, None)),
    ("walk (250 ms) (combine)", FrameTiming(250, Disposal.COMBINE)),
    ("walk (replace) (40ms)", FrameTiming(40, Disposal.REPLACE)),
    ("Background (REPLACE)", FrameTiming(None, Disposal.REPLACE)),
    ("Background", FrameTiming(None, None)),
    ("photo (2)", FrameTiming(None, None)),  # a number in brackets is no timing
    ("Layer 100ms", FrameTiming(None, None)),  # nor a duration outside brackets
])
def test_frame_timings_are_read_from_layer_names(name, timing):
    assert frame_timing(name) == timing


def test_names_with_a_timing_make_the_image_an_animation():
    assert names_carry_timings(["style", "frame 2 (combine)", "frame 1"])
    assert names_carry_timings(["a (80ms)"])
    assert not names_carry_timings(["style", "Background", "copy (2)"])
    assert not names_carry_timings([])


def test_frames_run_bottom_to_top_whatever_the_order_selected():
    # GIMP counts positions from the top (0); selected in any order, the bottom layer comes first.
    selected = [("frame 3", 1), ("frame 1", 3), ("frame 4", 0), ("frame 2", 2)]
    assert bottom_to_top(selected) == ["frame 1", "frame 2", "frame 3", "frame 4"]


def test_the_animation_choice_is_a_switch_off_unless_the_names_say_otherwise():
    animation = BY_NAME["animation"]
    assert animation.kind is ArgumentKind.BOOLEAN and animation.default is False and animation.setting is None


def sequence_progress(frame: int, frames: int, iteration: int, total: int) -> JobProgress:
    return JobProgress("job", 1, 1, iteration, total, 32, 24, {"total": 1.0}, 0.5, iteration, total,
                       frame=frame, frames=frames)


def test_a_sequences_progress_counts_frames_and_the_iteration_within_one():
    text, fraction = progress_status(sequence_progress(3, 24, 40, 150))
    assert text == "Neural Style: frame 3/24 · iteration 40/150"
    assert fraction == pytest.approx((2 + 40 / 150) / 24)
    assert progress_status(sequence_progress(24, 24, 150, 150))[1] == 1.0


def test_a_sequences_progress_through_a_real_sequence_rises_and_ends_full(engine):
    """The engine's sequence reports, as the daemon's worker sends them: the bar rises frame by frame."""
    from daemon.server.devices import progress_record
    from nst_engine import StyleSettings
    from nst_engine.sequence import stylize_sequence

    from .stand_ins import smooth_image

    reports = []
    frames = [smooth_image(32, 24, seed) for seed in (1, 2, 3)]
    results = list(stylize_sequence(engine, frames, [smooth_image(32, 32, 9)],
                                    StyleSettings(size=32, scales=1, iterations=4, precision="fp32"),
                                    on_progress=reports.append))
    assert len(results) == 3
    statuses = [progress_status(JobProgress.from_wire(progress_record("job", report).to_wire())) for report in reports]
    fractions = [fraction for _, fraction in statuses]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert statuses[0][0] == "Neural Style: frame 1/3 · iteration 1/4"
    assert statuses[-1][0].startswith("Neural Style: frame 3/3 · iteration ")


def test_an_animations_record_keeps_its_frames_and_results_in_order():
    record = ResultRecord(11, Region(0, 0, 48, 40), {"seed": 3}, {"style-layer": 5}, {"size": 32}, {"frames": 3},
                          frame_tattoos=(11, 12, 13), frame_image_id=2, frame_names=("a (100ms)", "b", "c (replace)"),
                          result_tattoos=(4, 5, 6))
    back = ResultRecord.from_json(record.to_json())
    assert back is not None and back.frame_tattoos == (11, 12, 13) and back.source_tattoo == 11
    assert back.frame_names == ("a (100ms)", "b", "c (replace)") and back.result_tattoos == (4, 5, 6)
    assert back.frame_image_id == 2
    still = ResultRecord(7, Region(1, 2, 30, 40), {"seed": 3})
    assert "frame_tattoos" not in still.to_json()
    assert ResultRecord.from_json(still.to_json()).frame_tattoos == ()
