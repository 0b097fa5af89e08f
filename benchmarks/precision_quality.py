#!/usr/bin/env python3
"""Whole runs per precision mode: wall time, final loss and the picture against the fp32 run.

Same inputs, seed and settings for every mode; the final image of each is judged by one fp32
objective, and compared with the fp32 image (PSNR).  Each reduced precision also gets the verdict of
nst_engine.quality's check (the one the bf16 tests use): it passes when it costs at most a fifth of
fp32's iterations, judged against fp32's own spread from starts perturbed at bf16's rounding size.

    .venv/bin/python benchmarks/precision_quality.py --random-weights --size 128 --iterations 50
    python3 benchmarks/precision_quality.py --random-weights --device cuda --size 512 --iterations 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_speed import pink_noise_image, random_normalised_state, synchronize  # noqa: E402

from nst_engine import Precision, StyleSettings, StyleTransfer  # noqa: E402
from nst_engine.device import cpu_has_native_bf16, fp32_arithmetic  # noqa: E402
from nst_engine.quality import judge_precision, psnr_db  # noqa: E402
from nst_engine.vgg import VGGFeatures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", help="VGG19 state dict")
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random VGG19, normalised to mean activation 1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--optimizer", default="lbfgs", choices=["lbfgs", "adam"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"],
                        choices=[p.value for p in Precision])
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the quality check's extra fp32 runs (2 + 3 per reduced precision)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)

    content, style = pink_noise_image(args.size, seed=1), pink_noise_image(args.size, seed=2)
    if args.random_weights:
        state = random_normalised_state(torch.stack([content, style]))
    else:
        from nst_engine.weights import load_vgg19_state_dict

        state = load_vgg19_state_dict(args.weights)
    engine = StyleTransfer(VGGFeatures(state), device)
    judge_settings = StyleSettings(size=args.size, scales=1, precision=Precision.FP32)
    judge = engine.objective(content, [style], judge_settings, args.size, args.size)

    results: dict[str, dict[str, float]] = {}
    images: dict[str, torch.Tensor] = {}
    for name in ["fp32"] + [p for p in args.precisions if p != "fp32"]:
        settings = StyleSettings(size=args.size, scales=1, iterations=args.iterations, optimizer=args.optimizer,
                                 precision=Precision(name))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        synchronize(device)
        started = time.perf_counter()
        images[name] = engine.stylize(content, [style], settings)
        synchronize(device)
        seconds = time.perf_counter() - started
        with torch.no_grad(), fp32_arithmetic(device, Precision.FP32):
            loss = judge(engine.to_device(images[name][None]))[0].item()
        results[name] = {
            "seconds": seconds,
            "ms_per_iteration": 1000 * seconds / args.iterations,
            "final_loss": loss,
            "loss_vs_fp32_percent": (100 * (loss - results["fp32"]["final_loss"]) / results["fp32"]["final_loss"]
                                     if name != "fp32" else 0.0),
            "psnr_vs_fp32_db": psnr_db(images[name], images["fp32"]),
            "peak_allocated_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0,
        }
        if not args.json:
            r = results[name]
            print(f"{name:5} {args.iterations} {args.optimizer} iterations at {args.size} px: {seconds:7.2f} s "
                  f"({r['ms_per_iteration']:.2f} ms/iteration), loss {loss:.5g} "
                  f"({r['loss_vs_fp32_percent']:+.2f} % vs fp32), "
                  f"PSNR vs fp32 {r['psnr_vs_fp32_db']:.1f} dB, peak {r['peak_allocated_bytes'] / 2**20:.0f} MiB",
                  flush=True)
        if name != "fp32" and args.check:
            settings = StyleSettings(size=args.size, scales=1, iterations=args.iterations, optimizer=args.optimizer,
                                     precision=Precision(name))
            report = judge_precision(engine, content, [style], settings, images[name])
            results[name]["check"] = {**report.to_dict(), "failures": report.failures()}
            if not args.json:
                spread = ", ".join(f"{loss / report.fp32_loss:.3f}" for loss in report.fp32_spread_losses)
                print(f"      check: {name} {report.loss_ratio:.3f}× fp32's loss, bound {report.bound_ratio:.3f}× "
                      f"(fp32 after {report.early_iterations} iterations), fp32 from perturbed starts {spread}: "
                      f"{'; '.join(report.failures()) or 'passes'}", flush=True)
    if args.json:
        print(json.dumps({"device": args.device, "cpu_native_bf16": cpu_has_native_bf16(), "size": args.size,
                          "iterations": args.iterations, "results": results}))


if __name__ == "__main__":
    main()
