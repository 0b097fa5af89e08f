#!/usr/bin/env python3
"""CPU time of one objective evaluation (forward and backward to the image), on one thread.

On a shared machine wall-clock time swings with the other processes' load; the CPU time of a single
thread (``time.process_time()``) swings far less, so it is the figure to compare code before and after
a change (issue #30): run this in two worktrees in turn, several times, and compare.  Prints per size
and precision the median and minimum CPU ms per evaluation, the page faults per evaluation, and the
profile's split (convolutions, Gram products, casts, the rest: benchmarks/evaluation_profile.py), with
``--ops`` the costliest operators of the rest.

    taskset -c 1 .venv/bin/python benchmarks/evaluation_cpu_time.py --sizes 256 512 --precisions fp32 bf16
    PYTHONPATH=/path/to/other/worktree .venv/bin/python benchmarks/evaluation_cpu_time.py --json   # its code
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
from engine_speed import pink_noise_image, random_normalised_state
from evaluation_profile import Part, part_of, profile_evaluations
from torch.profiler import ProfilerActivity, profile

from nst_engine import Precision, StyleSettings, StyleTransfer
from nst_engine.device import fp32_arithmetic, resolve_precision
from nst_engine.vgg import VGGFeatures


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def rest_operators(evaluate, evaluations: int, top: int) -> list[tuple[str, int, float]]:
    """The ``top`` operators of "the rest" by self CPU ms per evaluation: (name, calls, ms)."""
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(evaluations):
            evaluate()
    rows = [(event.key, event.count // evaluations, event.self_cpu_time_total / 1000 / evaluations)
            for event in profiler.key_averages() if part_of(event.key) is Part.REST]
    return sorted(rows, key=lambda row: -row[2])[:top]


def measure(engine: StyleTransfer, images, size: int, precision: Precision, evaluations: int,
            top: int, profiled: bool) -> dict:
    content, style = images
    objective = engine.objective(content, [style], StyleSettings(precision=precision), size, size)
    image = engine.to_device(content[None]).requires_grad_(True)

    def evaluate() -> None:
        image.grad = None
        objective(image)[0].backward()

    with fp32_arithmetic(engine.device, precision):
        evaluate()
        evaluate()
        times, faults = [], minor_faults()
        for _ in range(evaluations):
            started = time.process_time()
            evaluate()
            times.append(1000 * (time.process_time() - started))
        faults = (minor_faults() - faults) / evaluations
        parts = profile_evaluations(evaluate, max(1, evaluations // 2), engine.device) if profiled else None
        operators = rest_operators(evaluate, max(1, evaluations // 2), top) if top else []
    return {"size": size, "precision": precision.value, "cpu_ms_median": statistics.median(times),
            "cpu_ms_min": min(times), "page_faults_mib": faults * resource.getpagesize() / 2**20,
            "profile_ms_per_eval": parts.to_dict() if parts else None, "rest_operators": operators}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--precisions", nargs="+", choices=[p.value for p in Precision], default=["fp32", "bf16"])
    parser.add_argument("--evals", type=int, default=6, help="timed evaluations per size and precision")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ops", type=int, default=0, help="also list this many costliest operators of the rest")
    parser.add_argument("--no-profile", action="store_true", help="CPU time and page faults only (quicker)")
    parser.add_argument("--json", action="store_true", help="one JSON list instead of lines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    images = {size: (pink_noise_image(size, seed=1), pink_noise_image(size, seed=2)) for size in args.sizes}
    engine = StyleTransfer(VGGFeatures(random_normalised_state(torch.stack(images[min(args.sizes)]))), device)
    results = []
    for size in args.sizes:
        for name in args.precisions:
            precision = resolve_precision(Precision(name), device)
            result = measure(engine, images[size], size, precision, args.evals, args.ops, not args.no_profile)
            results.append(result)
            if args.json:
                continue
            parts = result["profile_ms_per_eval"]
            split = "; profile: " + ", ".join(f"{part.value} {parts[part.value]:.1f}" for part in Part) if parts else ""
            print(f"{size} {precision.value}: CPU {result['cpu_ms_median']:.0f} ms/eval (min "
                  f"{result['cpu_ms_min']:.0f}), page faults {result['page_faults_mib']:.0f} MiB/eval{split}",
                  flush=True)
            for operator, calls, ms in result["rest_operators"]:
                print(f"    {ms:7.1f} ms  {calls:3d}×  {operator}")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
