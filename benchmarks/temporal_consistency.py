#!/usr/bin/env python3
"""Animations (Ruder et al. 2016): how much a temporal run flickers less than frames stylised alone,
what it costs in style loss and time, and what the optical flow costs, in one run.

Two sequences whose true motion is known, so that no flow estimate enters the figure:

- *pan*: a sliding crop (FRAMES frames of 128×96 moving 3 px right and 1 px down per frame) of a photo
  stand-in, a 1/f-noise image (texture everywhere, as photographs have), or ``--pan-source FILE``
  (e.g. samples/content.png, whose flat sky leaves the flow undetermined);
- *occlusion*: a textured square (from samples/style2.png) moving 5 px right and 2 px down per frame
  over a background that pans 1 px left per frame: pixels it uncovers have no past.

The temporal warping error of a run is, per pair of frames, the RMS difference (0..1 scale, over
channels and the pixels that the true motion carries over) between a result and the previous result
moved by the true motion, averaged over the pairs.  The source frames give 0.  Each frame's style loss
(β·E, the engine's own objective) is compared with the independent run's, frame by frame.

    .venv/bin/python benchmarks/temporal_consistency.py --random-weights
    .venv/bin/python benchmarks/temporal_consistency.py --random-weights --temporal-weights 10 30 100 300 1000
    .venv/bin/python benchmarks/temporal_consistency.py --random-weights --frame-shares 0.25 0.5 1 --scales 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from engine_speed import pink_noise_image, random_normalised_state  # noqa: E402

from nst_engine import StyleSettings, StyleTransfer, VGGFeatures  # noqa: E402
from nst_engine.cli.image_files import read_image  # noqa: E402
from nst_engine.device import fp32_arithmetic  # noqa: E402
from nst_engine.image_ops import resize  # noqa: E402
from nst_engine.sequence import DEFAULT_FRAME_SHARE, DEFAULT_TEMPORAL_WEIGHT, stylize_sequence  # noqa: E402
from nst_engine.settings import Precision  # noqa: E402
from nst_engine.temporal import motion_between, warp  # noqa: E402

HEIGHT, WIDTH = 96, 128


@dataclass(frozen=True)
class Sequence:
    """Frames with their true motion: per frame after the first, the backward flow (2×H×W) and where it
    carries a pixel over from the previous frame (H×W, 0 or 1)."""

    name: str
    frames: list[torch.Tensor]
    flows: list[torch.Tensor]
    valid: list[torch.Tensor]


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
    size = thing.shape[-1]
    position = [(20 + 2 * t, 15 + 5 * t) for t in range(frames)]
    pictures, flows, valid = [], [], []
    for t in range(frames):
        picture = background[:, :HEIGHT, t: t + WIDTH].clone()
        y, x = position[t]
        picture[:, y: y + size, x: x + size] = thing
        pictures.append(picture)
        if t == 0:
            continue
        inside = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
        inside[y: y + size, x: x + size] = True
        before = torch.zeros(HEIGHT, WIDTH, dtype=torch.bool)
        py, px = position[t - 1]
        before[py: py + size, px: px + size] = True
        flow = torch.zeros(2, HEIGHT, WIDTH)
        flow[0] = 1.0  # the background: pixel p was at p + 1 in x
        flow[0][inside], flow[1][inside] = float(px - x), float(py - y)
        # A background pixel carries over unless it was under the thing, or came in at the right edge.
        was_hidden = warp(before[None].float(), flow)[0] > 0
        usable = inside | ~was_hidden
        usable[:, WIDTH - 1] &= inside[:, WIDTH - 1]
        flows.append(flow)
        valid.append(usable.float())
    return Sequence("occlusion", pictures, flows, valid)


def warping_errors(results: list[torch.Tensor], sequence: Sequence) -> list[float]:
    errors = []
    for t in range(1, len(results)):
        moved = warp(results[t - 1], sequence.flows[t - 1])
        mask = sequence.valid[t - 1]
        squared = ((results[t] - moved).square() * mask).sum() / (3 * mask.sum())
        errors.append(squared.sqrt().item())
    return errors


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
    seconds: list[float]  # per frame


def run_sequence(engine: StyleTransfer, sequence: Sequence, style: torch.Tensor, settings: StyleSettings,
                 weight: float, share: float) -> Run:
    iterations = max(1, round(settings.iterations * share))
    results, seconds = [], []
    started = time.perf_counter()
    for result in stylize_sequence(engine, sequence.frames, [style], settings, temporal_weight=weight,
                                          frame_iterations=iterations):
        results.append(result)
        seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
    return Run(results, seconds)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", help="VGG19 state dict")
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random VGG19, normalised to mean activation 1 (not the ImageNet weights)")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=100, help="the first frame's (and independent frames')")
    parser.add_argument("--scales", type=int, default=1, help="stages of the first frame (later frames: the last)")
    parser.add_argument("--temporal-weights", type=float, nargs="+", default=[DEFAULT_TEMPORAL_WEIGHT])
    parser.add_argument("--frame-shares", type=float, nargs="+", default=[DEFAULT_FRAME_SHARE],
                        help="later frames' iterations as a share of --iterations")
    parser.add_argument("--sequences", nargs="+", choices=["pan", "occlusion"], default=["pan", "occlusion"])
    parser.add_argument("--pan-source", type=Path, help="image to pan over (default: a 1/f-noise photo stand-in)")
    parser.add_argument("--style", type=Path, default=REPO_ROOT / "samples" / "style.png")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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
    thing = resize(read_image(REPO_ROOT / "samples" / "style2.png").rgb[None], 28, 28)[0]
    sequences = {"pan": pan_sequence(pan_source, args.frames, step),
                 "occlusion": occlusion_sequence(pink_noise_image(WIDTH + args.frames + 8, seed=12), thing,
                                                 args.frames)}
    style = resize(read_image(args.style).rgb[None], 128, 128)[0]

    if args.random_weights:
        state = random_normalised_state(torch.stack(sequences["pan"].frames[:2]))
        weights_label = "seeded random VGG19, normalised to mean activation 1 (not the ImageNet weights)"
    else:
        from nst_engine.weights import load_vgg19_state_dict

        state = load_vgg19_state_dict(args.weights)
        weights_label = str(args.weights)
    engine = StyleTransfer(VGGFeatures(state), torch.device("cpu"))
    settings = StyleSettings(size=0, iterations=args.iterations, scales=args.scales, precision=Precision.FP32)
    say(f"weights: {weights_label}; CPU, fp32, {torch.get_num_threads()} threads; {args.frames} frames of "
        f"{WIDTH}×{HEIGHT}, {args.iterations} L-BFGS iterations for the first frame, {args.scales} stage(s)")

    report: dict[str, object] = {"weights": weights_label, "frames": args.frames, "iterations": args.iterations,
                                 "scales": args.scales, "sequences": {}}
    for name in args.sequences:
        sequence = sequences[name]
        source_error = statistics.mean(warping_errors(sequence.frames, sequence))
        true_share = 1 - statistics.mean(v.mean().item() for v in sequence.valid)
        masks = [motion_between(a, b) for a, b in zip(sequence.frames, sequence.frames[1:])]
        mask_share = 1 - statistics.mean(m.reliable_share for m in masks)
        say(f"\n{name}: source frames' warping error {source_error:.4f}; pixels without a past: "
            f"{100 * true_share:.1f} % by the true motion, masked (c = 0) by the flow check {100 * mask_share:.1f} %")
        independent = run_sequence(engine, sequence, style, settings, 0.0, 1.0)
        base_errors = warping_errors(independent.results, sequence)
        base_style = style_losses(engine, sequence.frames, style, settings, independent.results)
        base_error = statistics.mean(base_errors)
        moved = moved_style_ratios(engine, sequence, style, settings, independent.results, base_style)
        say(f"  independent: warping error {base_error:.4f}, {statistics.mean(independent.seconds):.1f} s per frame; "
            f"its results moved into the next frame by the true motion have {min(moved):.1f}–{max(moved):.1f}× "
            "the style loss of that frame's own")
        entry: dict[str, object] = {"source_error": source_error, "true_occluded_share": true_share,
                                    "masked_share": mask_share, "independent_error": base_error,
                                    "independent_seconds": independent.seconds, "moved_style_ratios": moved,
                                    "runs": []}
        for weight in args.temporal_weights:
            for share in args.frame_shares:
                run = run_sequence(engine, sequence, style, settings, weight, share)
                error = statistics.mean(warping_errors(run.results, sequence))
                losses = style_losses(engine, sequence.frames, style, settings, run.results)
                ratios = [loss / base for loss, base in zip(losses, base_style)]
                later = statistics.mean(run.seconds[1:]) / run.seconds[0]
                say(f"  temporal weight {weight:g}, later frames {share:g}× iterations: warping error {error:.4f} "
                    f"({error / base_error:.2f}× independent); style loss vs independent per frame "
                    f"{' '.join(f'{r:.2f}' for r in ratios)} (max {max(ratios[1:] or ratios):.2f}); "
                    f"later frame {later:.2f}× the first's time")
                entry["runs"].append({"temporal_weight": weight, "frame_share": share, "error": error,
                                      "error_ratio": error / base_error, "style_ratios": ratios,
                                      "seconds": run.seconds, "later_time_ratio": later})
        report["sequences"][name] = entry
    seconds = flow_seconds()
    say(f"\nDIS flow at 1 MP (1155×866): {1000 * seconds:.0f} ms per frame (backward and forward flow, mask)")
    report["flow_seconds_1mp"] = seconds
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
