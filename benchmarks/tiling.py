#!/usr/bin/env python3
"""Tiled against whole runs: peak memory and time per size, in one run.

Each run is a fresh process doing --iterations iterations at one stage; the tiled run gets
--memory-budget, the whole run as much as it needs (skipped where its estimate exceeds what the machine
has free).  Peak memory is the whole process's (CPU: VmHWM, so torch and the model included; CUDA:
torch's peak allocation).

    .venv/bin/python benchmarks/tiling.py --random-weights --sizes 1024 2048
    .venv/bin/python benchmarks/tiling.py --random-weights --sizes 1024 2048 4096 --memory-budget 1GiB 1GiB 8GiB
    python3 benchmarks/tiling.py --random-weights --device cuda --sizes 1024 2048 4096 --memory-budget 8GiB
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from nst_engine import InsufficientMemoryError, Optimizer, StyleSettings  # noqa: E402
from nst_engine.cli import byte_size_argument  # noqa: E402
from nst_engine.memory import arithmetic_for, available_bytes, estimate_bytes, parse_byte_size  # noqa: E402
from nst_engine.tiling import plan_stage  # noqa: E402

RUN = r"""
import json, sys, time, torch
from nst_engine import StyleSettings, StyleTransfer, VGGFeatures
device, size, iterations, optimizer, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.manual_seed(0)
import torchvision
engine = StyleTransfer(VGGFeatures(torchvision.models.vgg19().features.state_dict()), torch.device(device))
generator = torch.Generator().manual_seed(0)
content, style = torch.rand((3, size, size), generator=generator), torch.rand((3, size, size), generator=generator)
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
started = time.perf_counter()
engine.stylize(content, [style], StyleSettings(size=size, scales=1, iterations=iterations, optimizer=optimizer),
               memory_budget=budget if budget else 2**62)
if device.startswith("cuda"):
    torch.cuda.synchronize()
seconds = time.perf_counter() - started
if device.startswith("cuda"):
    peak = torch.cuda.max_memory_allocated()
else:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_bytes": peak}))
"""  # noqa: E501  (a script run in a subprocess, kept as written)


def run(device: str, size: int, iterations: int, optimizer: str, budget: int) -> dict[str, float]:
    completed = subprocess.run([sys.executable, "-c", RUN, device, str(size), str(iterations), optimizer, str(budget)],
                               cwd=REPO_ROOT, capture_output=True, text=True, check=True, env=dict(os.environ))
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random-weights", action="store_true", required=True,
                        help="seeded random VGG19 (the only choice: memory and time do not depend on the values)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-budget", type=byte_size_argument, nargs="+", default=[parse_byte_size("1GiB")],
                        help="the tiled runs' budget: one for every size, or one per size")
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--optimizer", default="adam", choices=[o.value for o in Optimizer])
    args = parser.parse_args()
    import torch

    if len(args.memory_budget) not in (1, len(args.sizes)):
        parser.error("give one --memory-budget, or one per size")
    budgets = args.memory_budget * len(args.sizes) if len(args.memory_budget) == 1 else args.memory_budget
    free = available_bytes(torch.device(args.device))
    print(f"device {args.device}; {args.iterations} {args.optimizer} iteration(s) at one stage; "
          "peak memory of the whole process")
    for size, budget in zip(args.sizes, budgets):
        settings = StyleSettings(size=size, scales=1, optimizer=Optimizer(args.optimizer))
        arithmetic = arithmetic_for(settings.precision, torch.device(args.device))
        try:
            plan = plan_stage(size, size, settings, budget, arithmetic=arithmetic)
        except InsufficientMemoryError as refusal:
            print(f"{size:5} px  tiled: refused: {refusal}", flush=True)
            continue
        tiled = run(args.device, size, args.iterations, args.optimizer, budget)
        tiles = f"{plan.tiles.tile}-px tiles" if plan.tiles else "whole (fits the budget)"
        line = (f"{size:5} px  tiled in {budget / 2**30:.2f} GiB ({tiles}): {tiled['seconds']:7.1f} s, "
                f"peak {tiled['peak_bytes'] / 2**30:5.2f} GiB")
        if estimate_bytes(size, size, settings.layers, settings.style_layers, settings.optimizer, arithmetic) <= free:
            whole = run(args.device, size, args.iterations, args.optimizer, 0)
            line += f"   whole: {whole['seconds']:7.1f} s, peak {whole['peak_bytes'] / 2**30:5.2f} GiB"
        else:
            line += "   whole: does not fit in what is free"
        print(line, flush=True)


if __name__ == "__main__":
    main()
