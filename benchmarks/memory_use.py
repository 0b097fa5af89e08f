#!/usr/bin/env python3
"""Peak memory of a run per size and optimiser, measured against the engine's estimate, in one run.

Each measurement runs in a fresh process (one-stage runs, then a style image's VGG pass alone): the peak
resident set (CPU, Linux: VmHWM, restarted once the float32 model is loaded) or torch's peak allocation
(CUDA) above what the process held with the model loaded (the estimates shown are less that model), over a
few iterations at one stage.
L-BFGS's history grows by two image-sized vectors per iteration up to 50 pairs; a short run does
not reach that, so its full-history peak is the measured peak plus the pairs not yet stored
(computed, and printed separately).

    .venv/bin/python benchmarks/memory_use.py --random-weights
    .venv/bin/python benchmarks/memory_use.py --random-weights --sizes 256 512 --device cuda --json
    .venv/bin/python benchmarks/memory_use.py --random-weights --precisions fp32 bf16
    ONEDNN_MAX_CPU_ISA=AVX2 .venv/bin/python benchmarks/memory_use.py --random-weights --precisions bf16

Each precision is estimated in the arithmetic it has on the device (nst_engine.memory.arithmetic_for);
the last line above measures bf16 as a CPU without native bf16 runs it (emulated).
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

import torch  # noqa: E402

from nst_engine.memory import (  # noqa: E402
    BYTES_PER_FLOAT,
    LBFGS_HISTORY,
    MODEL_BYTES,
    arithmetic_for,
    estimate_bytes,
    estimate_style_pass_bytes,
)
from nst_engine.settings import DEFAULT_CONTENT_LAYER, DEFAULT_STYLE_LAYERS, Optimizer, Precision  # noqa: E402

MEASURE = r"""
import json, sys, torch
from nst_engine import StyleSettings, StyleTransfer, VGGFeatures
weights, device, size, optimizer, iterations, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
if weights == "random":
    import torchvision
    torch.manual_seed(0)
    state = torchvision.models.vgg19().features.state_dict()
    engine = StyleTransfer(VGGFeatures(state), torch.device(device))
else:
    engine = StyleTransfer.from_weights(weights, device)
generator = torch.Generator().manual_seed(0)
content, style = torch.rand((3, size, size), generator=generator), torch.rand((3, size, size), generator=generator)
if device.startswith("cuda"):
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
else:
    def status_bytes(field):
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # Linux: restart the peak (VmHWM) from the resident set now, model loaded
    baseline = status_bytes("VmRSS")
if optimizer == "style-pass":  # one style image's Gram targets, computed whole
    engine.style_grams(style[None].to(device), StyleSettings(precision=precision))
else:
    settings = StyleSettings(size=size, scales=1, iterations=iterations, optimizer=optimizer, precision=precision)
    engine.stylize(content, [style], settings, memory_budget=2**62)
if device.startswith("cuda"):
    peak = torch.cuda.max_memory_allocated()
else:
    peak = status_bytes("VmHWM")
print(json.dumps({"above_model": peak - baseline}))
"""  # noqa: E501  (a script run in a subprocess, kept as written)


def measure(weights: str, device: str, size: int, optimizer: Optimizer | None, iterations: int,
            precision: Precision = Precision.FP32, env: dict[str, str] | None = None) -> int:
    """Peak bytes above the loaded float32 model of a one-stage run at size × size, or with ``optimizer``
    None of one style image's Gram targets (the VGG pass before a stage), in ``precision`` (a bf16 run's
    copy of the model included), in a process with ``env`` added to this one's environment."""
    what = "style-pass" if optimizer is None else optimizer.value
    completed = subprocess.run([sys.executable, "-c", MEASURE, weights, device, str(size), what,
                                str(iterations), precision.value], cwd=REPO_ROOT, capture_output=True, text=True,
                               check=True, env=dict(os.environ, **(env or {})))
    return json.loads(completed.stdout.strip().splitlines()[-1])["above_model"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", help="VGG19 state dict")
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random VGG19 (memory does not depend on the values)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", type=Precision, default=[Precision.FP32],
                        choices=[p for p in Precision if p is not Precision.AUTO])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()
    weights_arg = "random" if args.random_weights else args.weights
    layers = {DEFAULT_CONTENT_LAYER, *DEFAULT_STYLE_LAYERS}

    rows, passes = [], []
    for precision in args.precisions:
        arithmetic = arithmetic_for(precision, torch.device(args.device))
        for optimizer in Optimizer:
            for size in args.sizes:
                measured = measure(weights_arg, args.device, size, optimizer, args.iterations, precision)
                pending_history = 0
                if optimizer is Optimizer.LBFGS:
                    pending_history = 2 * (LBFGS_HISTORY - args.iterations) * 3 * size * size * BYTES_PER_FLOAT
                estimate = estimate_bytes(size, size, layers, DEFAULT_STYLE_LAYERS, optimizer, arithmetic) - MODEL_BYTES
                rows.append({"precision": arithmetic.name, "optimizer": optimizer.value, "size": size,
                             "measured_bytes": measured, "full_history_bytes": measured + pending_history,
                             "estimate_bytes": estimate})
                if not args.json:
                    row = rows[-1]
                    print(f"{arithmetic.name:13} {optimizer.value:6} {size:5} px: "
                          f"measured {measured / 2**20:8.0f} MiB, "
                          f"with full L-BFGS history {row['full_history_bytes'] / 2**20:8.0f} MiB, estimate "
                          f"{estimate / 2**20:8.0f} MiB ({estimate / row['full_history_bytes']:.2f}×)", flush=True)
        for size in args.sizes:
            measured = measure(weights_arg, args.device, size, None, 0, precision)
            estimate = estimate_style_pass_bytes(size, size, DEFAULT_STYLE_LAYERS, arithmetic) - MODEL_BYTES
            passes.append({"precision": arithmetic.name, "size": size, "measured_bytes": measured,
                           "estimate_bytes": estimate})
            if not args.json:
                print(f"{arithmetic.name:13} style pass {size:5} px: measured {measured / 2**20:8.0f} MiB, estimate "
                      f"{estimate / 2**20:8.0f} MiB ({estimate / measured:.2f}×)", flush=True)
    if args.json:
        print(json.dumps({"device": args.device, "iterations": args.iterations, "rows": rows, "style_passes": passes}))


if __name__ == "__main__":
    main()
