#!/usr/bin/env python3
"""Animations (Ruder et al. 2016): how much a temporal run flickers less than frames stylised alone,
what it costs in style loss and time, and what the optical flow costs, in one run; with the paper's two
options, long-term consistency (``--temporal-frames 1,2,4``) and the multi-pass algorithm
(``--multipass 4x25``: 4 passes of 25 iterations per frame).

Three sequences whose true motion is known, so that no flow estimate enters the figure:

- *pan*: a sliding crop (FRAMES frames of 128×96 moving 3 px right and 1 px down per frame) of a photo
  stand-in, a 1/f-noise image (texture everywhere, as photographs have), or ``--pan-source FILE``
  (e.g. samples/content.png, whose flat sky leaves the flow undetermined);
- *occlusion*: a textured square (from samples/style2.png) moving 5 px right and 2 px down per frame
  over a background that pans 1 px left per frame: pixels it uncovers have no past;
- *reveal* (REVEAL_FRAMES frames): a textured bar (48×24) moving 8 px right per frame over a background that
  pans 1 px left per frame, so that each background pixel it passes is hidden for two or three frames and
  then seen again: what long-term consistency is for.

The temporal warping error of a run is, per pair of frames, the RMS difference (0..1 scale, over
channels and the pixels that the true motion carries over) between a result and the previous result
moved by the true motion, averaged over the pairs.  The source frames give 0.  Each frame's style loss
(β·E, the engine's own objective) is compared with the independent run's, frame by frame.  The
*revisit error* is the paper's long-term measure: the RMS difference between a result where the true motion
uncovers a region again and the result of the last frame that showed it before it was covered, moved by the
true motion.

    .venv/bin/python benchmarks/temporal_consistency.py --random-weights
    .venv/bin/python benchmarks/temporal_consistency.py --random-weights --temporal-weights 10 30 100 300 1000
    .venv/bin/python benchmarks/temporal_consistency.py --random-weights --frame-shares 0.25 0.5 1 --scales 2
    .venv/bin/python benchmarks/temporal_consistency.py --random-weights --sequences reveal \
        --temporal-frames 1 1,2,4 --multipass 4x25
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from engine_speed import pink_noise_image, random_normalised_state  # noqa: E402

from nst_engine import StyleSettings, StyleTransfer, VGGFeatures  # noqa: E402
from nst_engine import sequence as sequence_module  # noqa: E402
from nst_engine.cli.image_files import read_image  # noqa: E402
from nst_engine.device import fp32_arithmetic  # noqa: E402
from nst_engine.image_ops import resize  # noqa: E402
from nst_engine.progress import CancelToken  # noqa: E402
from nst_engine.sequence import (  # noqa: E402
    DEFAULT_FRAME_SHARE,
    DEFAULT_TEMPORAL_FRAMES,
    DEFAULT_TEMPORAL_WEIGHT,
    TemporalObjective,
    TemporalTarget,
    _Options,
    _start,
    stylize_sequence,
)
from nst_engine.settings import Precision  # noqa: E402
from nst_engine.temporal import FrameMotion, long_term_weights, motion_between, warp  # noqa: E402
from nst_engine.transfer import _finish, _Reporting  # noqa: E402

HEIGHT, WIDTH = 96, 128
REVEAL_FRAMES = 8


@dataclass(frozen=True)
class Revisit:
    """Pixels of frame ``frame`` that the true motion uncovers again, last seen in frame ``earlier``: there
    they lie at p + flow(p)."""

    frame: int
    earlier: int
    flow: torch.Tensor  # 2×H×W
    mask: torch.Tensor  # H×W, 0 or 1


@dataclass(frozen=True)
class Sequence:
    """Frames with their true motion: per frame after the first, the backward flow (2×H×W) and where it
    carries a pixel over from the previous frame (H×W, 0 or 1)."""

    name: str
    frames: list[torch.Tensor]
    flows: list[torch.Tensor]
    valid: list[torch.Tensor]
    revisits: tuple[Revisit, ...] = ()

    @property
    def revisit_share(self) -> float:
        """The share of the later frames' pixels that are uncovered again."""
        return sum(revisit.mask.sum().item() for revisit in self.revisits) / ((len(self.frames) - 1) * HEIGHT * WIDTH)


def pan_sequence(source: torch.Tensor, frames: int, step: tuple[int, int] = (1, 3)) -> Sequence:
    """A HEIGHT×WIDTH window sliding over ``source`` by ``step`` (down, right) per frame."""
    dy, dx = step
    crops = [source[:, t * dy: t * dy + HEIGHT, t * dx: t * dx + WIDTH].contiguous() for t in range(frames)]
    flow = torch.stack([torch.full((HEIGHT, WIDTH), float(dx)), torch.full((HEIGHT, WIDTH), float(dy))])
    valid = torch.zeros(HEIGHT, WIDTH)
    valid[: HEIGHT - dy, : WIDTH - dx] = 1.0
    return Sequence("pan", crops, [flow] * (frames - 1), [valid] * (frames - 1))


def occlusion_sequence(background: torch.Tensor, thing: torch.Tensor, frames: int) -> Sequence:
    """``thing`` (3×S×S) moving 5 px right, 2 px down per frame over ``background`` panning 1 px left."""
    return moving_thing_sequence("occlusion", background, thing, [(20 + 2 * t, 15 + 5 * t) for t in range(frames)])


def reveal_sequence(background: torch.Tensor, bar: torch.Tensor, frames: int) -> Sequence:
    """``bar`` (3×48×24) moving 8 px right per frame over ``background`` panning 1 px left: 9 px per frame
    over the background, so the bar hides each background pixel it passes for two or three frames."""
    return moving_thing_sequence("reveal", background, bar, [(24, 8 + 8 * t) for t in range(frames)])


def _covered(position: tuple[int, int], thing: torch.Tensor) -> torch.Tensor:
    """Where ``thing`` at ``position`` (y, x) covers a frame (H×W bool)."""
    y, x = position
    inside = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    inside[y: y + thing.shape[-2], x: x + thing.shape[-1]] = True
    return inside


def moving_thing_sequence(name: str, background: torch.Tensor, thing: torch.Tensor,
                          positions: list[tuple[int, int]]) -> Sequence:
    """``thing`` at ``positions`` (y, x per frame) over ``background`` panning 1 px left per frame."""
    pictures, flows, valid = [], [], []
    for t, (y, x) in enumerate(positions):
        picture = background[:, :HEIGHT, t: t + WIDTH].clone()
        picture[:, y: y + thing.shape[-2], x: x + thing.shape[-1]] = thing
        pictures.append(picture)
        if t == 0:
            continue
        inside, before = _covered((y, x), thing), _covered(positions[t - 1], thing)
        py, px = positions[t - 1]
        flow = torch.zeros(2, HEIGHT, WIDTH)
        flow[0] = 1.0  # the background: pixel p was at p + 1 in x
        flow[0][inside], flow[1][inside] = float(px - x), float(py - y)
        # A background pixel carries over unless it was under the thing, or came in at the right edge.
        was_hidden = warp(before[None].float(), flow)[0] > 0
        usable = inside | ~was_hidden
        usable[:, WIDTH - 1] &= inside[:, WIDTH - 1]
        flows.append(flow)
        valid.append(usable.float())
    return Sequence(name, pictures, flows, valid, _revisits(thing, positions))


def _revisits(thing: torch.Tensor, positions: list[tuple[int, int]]) -> tuple[Revisit, ...]:
    """The background pixels of each frame hidden in the frame before and seen in an earlier one, with the
    last earlier frame that showed them (the background pans 1 px left per frame)."""
    covered = [_covered(position, thing) for position in positions]
    revisits = []
    for t in range(2, len(positions)):
        wanted = ~covered[t] & ~_seen(covered[t - 1], 1)
        for s in range(t - 2, -1, -1):
            found = wanted & _seen(covered[s], t - s)
            if found.any():
                flow = torch.stack([torch.full((HEIGHT, WIDTH), float(t - s)), torch.zeros(HEIGHT, WIDTH)])
                revisits.append(Revisit(t, s, flow, found.float()))
            wanted &= ~found
    return tuple(revisits)


def warping_errors(results: list[torch.Tensor], sequence: Sequence) -> list[float]:
    errors = []
    for t in range(1, len(results)):
        moved = warp(results[t - 1], sequence.flows[t - 1])
        mask = sequence.valid[t - 1]
        squared = ((results[t] - moved).square() * mask).sum() / (3 * mask.sum())
        errors.append(squared.sqrt().item())
    return errors


def _seen(covered: torch.Tensor, shift: int) -> torch.Tensor:
    """Which pixels of a frame show background that a frame ``shift`` frames earlier, with ``covered`` (H×W),
    showed too: there it lay ``shift`` px further right."""
    seen = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
    seen[:, : WIDTH - shift] = ~covered[:, shift:]
    return seen


def revisit_error(results: list[torch.Tensor], sequence: Sequence, within: list[torch.Tensor] | None = None) -> float:
    """RMS difference over the uncovered-again pixels of all frames (or those ``within``, a mask per revisit)
    between a result and the result of the frame that last showed them, moved by the true motion."""
    squared, count = 0.0, 0.0
    for index, revisit in enumerate(sequence.revisits):
        mask = revisit.mask if within is None else revisit.mask * within[index]
        moved = warp(results[revisit.earlier], revisit.flow)
        squared += ((results[revisit.frame] - moved).square() * mask).sum().item()
        count += 3 * mask.sum().item()
    return (squared / count) ** 0.5 if count else float("nan")


@dataclass(frozen=True)
class Ties:
    """Per revisit, where the estimated flow's long-term weights tie the uncovered-again pixels to a frame
    that showed them (where long-term consistency can restore them) and to one in which they were hidden
    (the flow check missed the occlusion)."""

    showing: list[torch.Tensor]
    hiding: list[torch.Tensor]

    def shares(self, sequence: Sequence) -> tuple[float, float]:
        total = max(1.0, sum(float(revisit.mask.sum()) for revisit in sequence.revisits))
        return tuple(sum(float((mask * revisit.mask).sum()) for mask, revisit in zip(masks, sequence.revisits)) / total
                     for masks in (self.showing, self.hiding))


def ties(sequence: Sequence, gaps: tuple[int, ...]) -> Ties:
    showing, hiding = [], []
    for revisit in sequence.revisits:
        t = revisit.frame
        used = [gap for gap in gaps if gap <= t]
        weights = long_term_weights([motion_between(sequence.frames[t - gap], sequence.frames[t]).reliable
                                     for gap in used])
        none = torch.zeros(HEIGHT, WIDTH)
        showing.append(sum((w for gap, w in zip(used, weights) if t - gap <= revisit.earlier), none))
        hiding.append(sum((w for gap, w in zip(used, weights) if t - gap > revisit.earlier), none))
    return Ties(showing, hiding)


def style_losses(engine: StyleTransfer, frames: list[torch.Tensor], style: torch.Tensor, settings: StyleSettings,
                 results: list[torch.Tensor]) -> list[float]:
    """β·E of each result, by the objective of its own frame."""
    losses = []
    with torch.no_grad(), fp32_arithmetic(engine.device, Precision.FP32):
        for frame, result in zip(frames, results):
            objective = engine.objective(frame, [style], settings, *result.shape[-2:])
            losses.append(objective(engine.to_device(result[None]))[1][1].item())
    return losses


def moved_style_ratios(engine: StyleTransfer, sequence: Sequence, style: torch.Tensor, settings: StyleSettings,
                       independent: list[torch.Tensor], base: list[float]) -> list[float]:
    """Style loss of each independent result moved by the true motion into the next frame, over that frame's
    independent result's: what a perfectly consistent result built from the previous one would score before
    any optimisation.  VGG19 is not shift-invariant (its pooling grid), so this is not 1."""
    moved = [warp(result, flow) for result, flow in zip(independent, sequence.flows)]
    losses = style_losses(engine, sequence.frames[1:], style, settings, moved)
    return [loss / reference for loss, reference in zip(losses, base[1:])]


@dataclass(frozen=True)
class Run:
    results: list[torch.Tensor]
    seconds: list[float]  # per frame, by the run's clock


@dataclass(frozen=True)
class Method:
    """One way to stylise a sequence: the engine's (one pass, each frame after the previous one) or, with
    ``passes``, Ruder et al.'s multi-pass algorithm."""

    temporal_weight: float
    frame_share: float = DEFAULT_FRAME_SHARE
    temporal_frames: tuple[int, ...] = DEFAULT_TEMPORAL_FRAMES
    passes: int = 0
    pass_iterations: int = 0
    paper_start: bool = False  # long-term terms, but every pixel starts from the previous result, as the paper's


    @property
    def label(self) -> str:
        if self.passes:
            return (f"multi-pass {self.passes}×{self.pass_iterations} iterations, temporal weight "
                    f"{self.temporal_weight:g}")
        return (f"temporal weight {self.temporal_weight:g}, frames t−{','.join(map(str, self.temporal_frames))}"
                f"{' (paper start)' if self.paper_start else ''}, later frames {self.frame_share:g}× iterations")


Clock = Callable[[], float]


def run_method(engine: StyleTransfer, sequence: Sequence, style: torch.Tensor, settings: StyleSettings,
               method: Method, clock: Clock = time.perf_counter) -> Run:
    if method.passes:
        return run_multipass(engine, sequence, style, settings, method, clock)
    iterations = max(1, round(settings.iterations * method.frame_share))
    results, seconds = [], []
    start = (lambda targets: targets[0].warped) if method.paper_start else sequence_module._temporal_start
    with mock.patch.object(sequence_module, "_temporal_start", start):
        started = clock()
        for result in stylize_sequence(engine, sequence.frames, [style], settings,
                                       temporal_weight=method.temporal_weight, temporal_frames=method.temporal_frames,
                                       frame_iterations=iterations):
            results.append(result)
            seconds.append(clock() - started)
            started = clock()
    return Run(results, seconds)


def run_multipass(engine: StyleTransfer, sequence: Sequence, style: torch.Tensor, settings: StyleSettings,
                  method: Method, clock: Clock = time.perf_counter) -> Run:
    """Ruder et al.'s multi-pass algorithm (section 3.3; their artistic_video_multiPass.lua), built here only
    to be measured, from the engine's own steps as nst_engine.sequence uses them.  Pass 1 stylises every frame
    alone from its content; the later passes alternate backward and forward over the sequence, and start
    each frame from the blend ½·(its previous pass's result + the neighbour just done in this pass, moved
    into it) where the flow between them is reliable, from its previous pass's result elsewhere.  The
    temporal term (to that neighbour) is on in the second half of the passes, as the paper's default (from
    pass 8 of 15) has it.  Every pass runs ``pass_iterations`` per frame; one stage (``settings.scales`` 1)."""
    frames, cancel = sequence.frames, CancelToken()
    started = clock()
    options = _Options(method.temporal_weight, (1,), method.pass_iterations, None, [("style", 0)], {}, None)
    inputs = [engine._content_inputs(frame, settings) for frame in frames]
    first = _start(engine, frames[0], *inputs[0], [style], settings, options, cancel)
    # The flow of each frame to its neighbours, once: towards[0][t] to frame t−1, towards[1][t] to frame t+1.
    towards: tuple[list[FrameMotion | None], list[FrameMotion | None]] = (
        [None] + [motion_between(a, b) for a, b in zip(frames, frames[1:])],
        [motion_between(b, a) for a, b in zip(frames, frames[1:])] + [None])
    images: list[torch.Tensor] = []
    for number in range(1, method.passes + 1):
        forward = number % 2 == 1
        order = range(len(frames)) if forward else range(len(frames) - 1, -1, -1)
        with_term = number > method.passes // 2 and method.temporal_weight > 0
        for t in order:
            content_rgb, content_work = inputs[t]
            neighbour = t - 1 if forward else t + 1
            motion = towards[0 if forward else 1][t]
            final_term = None
            if number == 1:
                image = engine._initial_image(content_work, None, settings, *frames[t].shape[-2:])
            else:
                image = images[t]
                if motion is not None:
                    moved = warp(images[neighbour], motion.flow)
                    reliable = engine.to_device(motion.reliable)
                    image = image + 0.5 * reliable * (moved - image)
                    if with_term:
                        final_term = functools.partial(TemporalObjective, targets=[TemporalTarget(moved, reliable)],
                                                       weight=first.temporal_lambda)
            image = engine._run_stages(image, (first.later_stage,), content_rgb, content_work, first.inputs,
                                       settings, cancel, _Reporting(None, 0, time.perf_counter()), final_term)
            if number == 1:
                images.append(image)
            else:
                images[t] = image
    results = [_finish(image, content_rgb, settings) for image, (content_rgb, _) in zip(images, inputs)]
    return Run(results, [(clock() - started) / len(frames)] * len(frames))


def flow_seconds(side_long: int = 1155, side_short: int = 866, repeats: int = 3) -> float:
    """Median seconds of one frame's motion (backward and forward DIS flow and the mask) at 1 MP."""
    picture = pink_noise_image(side_long + 8, seed=7)
    first = picture[:, :side_short, :side_long]
    second = picture[:, 2: 2 + side_short, 3: 3 + side_long]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        motion_between(first, second)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def gaps(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def passes(text: str) -> tuple[int, int]:
    count, iterations = text.lower().split("x")
    return int(count), int(iterations)


def methods_of(args: argparse.Namespace) -> list[Method]:
    methods = [Method(weight, share, frames, paper_start=paper) for weight in args.temporal_weights
               for share in args.frame_shares for frames in args.temporal_frames
               for paper in ([False, True] if args.paper_start and len(frames) > 1 else [False])]
    return methods + [Method(args.temporal_weights[0], passes=count, pass_iterations=iterations)
                      for count, iterations in args.multipass]


def measure(engine: StyleTransfer, sequence: Sequence, style: torch.Tensor, settings: StyleSettings,
            methods: list[Method], say, clock: Clock = time.perf_counter) -> dict[str, object]:
    """The independent run and each method on ``sequence``, reported through ``say``."""
    source_error = statistics.mean(warping_errors(sequence.frames, sequence))
    true_share = 1 - statistics.mean(v.mean().item() for v in sequence.valid)
    masks = [motion_between(a, b) for a, b in zip(sequence.frames, sequence.frames[1:])]
    mask_share = 1 - statistics.mean(m.reliable_share for m in masks)
    long_term = max((method.temporal_frames for method in methods), key=len)
    tied = ties(sequence, long_term)
    tied_within = tied.showing
    showing, hiding = tied.shares(sequence)
    say(f"\n{sequence.name} ({len(sequence.frames)} frames): source frames' warping error {source_error:.4f}; pixels "
        f"without a past: {100 * true_share:.1f} % by the true motion, masked (c = 0) by the flow check "
        f"{100 * mask_share:.1f} %; uncovered again: {100 * sequence.revisit_share:.1f} %, of which frames "
        f"t−{','.join(map(str, long_term))} tie {100 * showing:.0f} % to a frame that showed them, "
        f"{100 * hiding:.0f} % to one in which they were hidden")
    independent = run_method(engine, sequence, style, settings, Method(0.0, 1.0), clock)
    base_errors = warping_errors(independent.results, sequence)
    base_style = style_losses(engine, sequence.frames, style, settings, independent.results)
    base_error = statistics.mean(base_errors)
    base_revisit = revisit_error(independent.results, sequence)
    base_tied = revisit_error(independent.results, sequence, tied_within)
    moved = moved_style_ratios(engine, sequence, style, settings, independent.results, base_style)
    say(f"  independent: warping error {base_error:.4f}, revisit error {base_revisit:.4f} ({base_tied:.4f} where "
        f"tied to a frame that showed them), {statistics.mean(independent.seconds):.1f} s per frame (by the run's "
        f"clock); its results moved into the next frame by the true motion have {min(moved):.1f}–{max(moved):.1f}× "
        "the style loss of that frame's own")
    entry: dict[str, object] = {"frames": len(sequence.frames), "source_error": source_error,
                                "true_occluded_share": true_share, "masked_share": mask_share,
                                "revisit_share": sequence.revisit_share, "tied_showing_share": showing,
                                "tied_hiding_share": hiding,
                                "independent_error": base_error,
                                "independent_revisit_error": base_revisit, "independent_revisit_tied": base_tied,
                                "independent_seconds": independent.seconds,
                                "moved_style_ratios": moved, "runs": []}
    for method in methods:
        run = run_method(engine, sequence, style, settings, method, clock)
        error = statistics.mean(warping_errors(run.results, sequence))
        revisit = revisit_error(run.results, sequence)
        revisit_tied = revisit_error(run.results, sequence, tied_within)
        losses = style_losses(engine, sequence.frames, style, settings, run.results)
        ratios = [loss / base for loss, base in zip(losses, base_style)]
        per_frame = statistics.mean(run.seconds) / statistics.mean(independent.seconds)
        later = statistics.mean(run.seconds[1:]) / run.seconds[0]
        say(f"  {method.label}: warping error {error:.4f} ({error / base_error:.2f}× independent); revisit error "
            f"{revisit:.4f} ({revisit / base_revisit:.2f}×; there {revisit_tied / base_tied:.2f}×); "
            "style loss vs independent per frame "
            f"{' '.join(f'{r:.2f}' for r in ratios)} (max {max(ratios[1:] or ratios):.2f}); "
            f"time per frame {per_frame:.2f}× independent, later frame {later:.2f}× the first's")
        entry["runs"].append({"method": method.label, "temporal_weight": method.temporal_weight,
                              "frame_share": method.frame_share, "temporal_frames": method.temporal_frames,
                              "passes": method.passes, "pass_iterations": method.pass_iterations, "error": error,
                              "error_ratio": error / base_error, "revisit_error": revisit,
                              "revisit_ratio": revisit / base_revisit, "revisit_tied_ratio": revisit_tied / base_tied,
                              "style_ratios": ratios,
                              "seconds": run.seconds, "time_ratio": per_frame, "later_time_ratio": later})
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", help="VGG19 state dict")
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random VGG19, normalised to mean activation 1 (not the ImageNet weights)")
    parser.add_argument("--frames", type=int, default=6, help="of the pan and occlusion sequences")
    parser.add_argument("--reveal-frames", type=int, default=REVEAL_FRAMES)
    parser.add_argument("--iterations", type=int, default=100, help="the first frame's (and independent frames')")
    parser.add_argument("--scales", type=int, default=1, help="stages of the first frame (later frames: the last)")
    parser.add_argument("--temporal-weights", type=float, nargs="+", default=[DEFAULT_TEMPORAL_WEIGHT])
    parser.add_argument("--frame-shares", type=float, nargs="+", default=[DEFAULT_FRAME_SHARE],
                        help="later frames' iterations as a share of --iterations")
    parser.add_argument("--temporal-frames", type=gaps, nargs="+", default=[DEFAULT_TEMPORAL_FRAMES], metavar="J",
                        help="earlier frames each frame is tied to, e.g. 1 (short-term) or 1,2,4 (long-term)")
    parser.add_argument("--paper-start", action="store_true",
                        help="also run each long-term J with every pixel starting from the previous result")
    parser.add_argument("--multipass", type=passes, nargs="*", default=[], metavar="PxN",
                        help="also the multi-pass algorithm: P passes of N iterations per frame (one stage)")
    parser.add_argument("--sequences", nargs="+", choices=["pan", "occlusion", "reveal"], default=["pan", "occlusion"])
    parser.add_argument("--pan-source", type=Path, help="image to pan over (default: a 1/f-noise photo stand-in)")
    parser.add_argument("--style", type=Path, default=REPO_ROOT / "samples" / "style.png")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time frames by this process's CPU time, not the wall clock (for a shared machine)")
    parser.add_argument("--no-flow-timing", action="store_true", help="skip the 1-MP flow timing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.multipass and args.scales != 1:
        parser.error("--multipass runs one stage: use --scales 1")
    say = (lambda *_: None) if args.json else (lambda *parts: print(*parts, flush=True))

    step = (1, 3)
    pan_size = (HEIGHT + step[0] * args.frames, WIDTH + step[1] * args.frames)
    if args.pan_source:
        pan_source = read_image(args.pan_source).rgb
        scale = max(pan_size[0] / pan_source.shape[-2], pan_size[1] / pan_source.shape[-1])
        pan_source = resize(pan_source[None], round(pan_source.shape[-2] * scale + 0.5),
                            round(pan_source.shape[-1] * scale + 0.5))[0]
    else:
        pan_source = pink_noise_image(max(pan_size), seed=11)
    texture = read_image(REPO_ROOT / "samples" / "style2.png").rgb[None]
    sequences = {
        "pan": lambda: pan_sequence(pan_source, args.frames, step),
        "occlusion": lambda: occlusion_sequence(pink_noise_image(WIDTH + args.frames + 8, seed=12),
                                                resize(texture, 28, 28)[0], args.frames),
        "reveal": lambda: reveal_sequence(pink_noise_image(WIDTH + args.reveal_frames + 8, seed=13),
                                          resize(texture, 48, 24)[0], args.reveal_frames),
    }
    style = resize(read_image(args.style).rgb[None], 128, 128)[0]

    if args.random_weights:
        state = random_normalised_state(torch.stack(sequences["pan"]().frames[:2]))
        weights_label = "seeded random VGG19, normalised to mean activation 1 (not the ImageNet weights)"
    else:
        from nst_engine.weights import load_vgg19_state_dict

        state = load_vgg19_state_dict(args.weights)
        weights_label = str(args.weights)
    engine = StyleTransfer(VGGFeatures(state), torch.device("cpu"))
    settings = StyleSettings(size=0, iterations=args.iterations, scales=args.scales, precision=Precision.FP32)
    say(f"weights: {weights_label}; CPU, fp32, {torch.get_num_threads()} threads; frames of {WIDTH}×{HEIGHT}, "
        f"{args.iterations} L-BFGS iterations for the first frame, {args.scales} stage(s)")

    report: dict[str, object] = {"weights": weights_label, "iterations": args.iterations, "scales": args.scales,
                                 "sequences": {}}
    methods = methods_of(args)
    for name in args.sequences:
        report["sequences"][name] = measure(engine, sequences[name](), style, settings, methods, say,
                                            time.process_time if args.cpu_time else time.perf_counter)
    if not args.no_flow_timing:
        seconds = flow_seconds()
        say(f"\nDIS flow at 1 MP (1155×866): {1000 * seconds:.0f} ms per frame (backward and forward flow, mask)")
        report["flow_seconds_1mp"] = seconds
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
