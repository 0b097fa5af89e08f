#!/usr/bin/env python3
"""Paired before/after CPU time of an objective evaluation, in one process (issue #30).

Evaluations alternate one by one between another worktree's ``nst_engine/{fused,losses,products}.py``
(BASE, loaded beside this checkout's) and this checkout's, on one thread, on the same image and
weights, so that a shared machine's swings in load fall on both sides alike; the precisions take
their turns too, so that bf16's ratio to fp32 comes from the same stretch of time.  Prints per size
and precision the median single-thread CPU ms per evaluation of each side, that ratio, the page
faults per evaluation, and whether the two sides give the same loss and image gradient bit for bit
(on the CPU ``fp32_arithmetic`` changes nothing, so it is left out).  Only those three modules are
swapped: the rest of the engine (vgg.py, transfer.py) is this checkout's, so BASE must be close to it.

    git worktree add /tmp/base 8fff9cc
    taskset -c 1 .venv/bin/python benchmarks/evaluation_ab.py /tmp/base --sizes 256 512
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import resource
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from engine_speed import pink_noise_image, random_normalised_state
from evaluation_cpu_time import minor_faults

from nst_engine import Precision, StyleSettings, StyleTransfer, fused, losses, transfer, vgg
from nst_engine.vgg import VGGFeatures

_WARM_UP = 4


def load_module(name: str, path: Path) -> ModuleType:
    """``path`` imported as ``nst_engine.<name>_base`` (its relative imports: this checkout's)."""
    spec = importlib.util.spec_from_file_location(f"nst_engine.{name}_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "nst_engine"
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def base_modules(root: Path) -> tuple[ModuleType, ModuleType]:
    """(fused, losses) of the worktree at ``root``, its losses using its own products."""
    products = load_module("products", root / "nst_engine" / "products.py")
    base_losses = load_module("losses", root / "nst_engine" / "losses.py")
    base_losses.gram = products.gram  # type: ignore[attr-defined]
    base_fused = load_module("fused", root / "nst_engine" / "fused.py")
    if "owner" not in inspect.signature(base_fused.features).parameters and \
            "owner" in inspect.signature(fused.features).parameters:
        features = base_fused.features
        base_fused.features = lambda convs, plan, x, owner=None: features(convs, plan, x)  # type: ignore[attr-defined]
    return base_fused, base_losses


def use(modules: tuple[ModuleType, ModuleType]) -> None:
    fused_module, losses_module = modules
    vgg.fused = fused_module  # type: ignore[attr-defined]
    transfer.content_loss = losses_module.content_loss  # type: ignore[attr-defined]
    transfer.style_loss = losses_module.style_loss  # type: ignore[attr-defined]


def compare(engine: StyleTransfer, images: tuple[torch.Tensor, torch.Tensor], size: int,
            precisions: list[Precision], variants: dict[str, tuple[ModuleType, ModuleType]],
            evaluations: int) -> list[str]:
    """Lines of figures for one size: every (precision, side) pair takes its turn, evaluation by
    evaluation, so that each precision's ratio to fp32 comes from the same stretch of time."""
    content, style = images
    image = engine.to_device(content[None]).requires_grad_(True)
    objectives = {precision: engine.objective(content, [style], StyleSettings(precision=precision), size, size)
                  for precision in precisions}
    turns = [(precision, name) for precision in precisions for name in variants]
    times: dict[tuple[Precision, str], list[float]] = {turn: [] for turn in turns}
    faults = dict.fromkeys(turns, 0)
    results: dict[tuple[Precision, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for step in range(len(turns) * (evaluations + _WARM_UP)):
        turn = turns[step % len(turns)]
        use(variants[turn[1]])
        image.grad = None
        before, started = minor_faults(), time.process_time()
        loss = objectives[turn[0]](image)[0]
        loss.backward()
        if step >= len(turns) * _WARM_UP:
            times[turn].append(1000 * (time.process_time() - started))
            faults[turn] += minor_faults() - before
        assert image.grad is not None
        results[turn] = (loss.detach(), image.grad.clone())
    median = {turn: statistics.median(values) for turn, values in times.items()}
    mib = {turn: count * resource.getpagesize() / 2**20 / evaluations for turn, count in faults.items()}
    lines = []
    for precision in precisions:
        base, new = median[precision, "base"], median[precision, "new"]
        same = all(torch.equal(a, b) for a, b in zip(results[precision, "base"], results[precision, "new"]))
        ratio = ""
        if precision is not precisions[0]:
            ratio = "; ÷ {}: base {:.3f} new {:.3f}".format(
                precisions[0].value, base / median[precisions[0], "base"], new / median[precisions[0], "new"])
        lines.append(f"{size} {precision.value}: base {base:.0f} new {new:.0f} CPU ms/eval (new/base "
                     f"{new / base:.3f}, saved {base - new:.0f}){ratio}; page faults base "
                     f"{mib[precision, 'base']:.0f} new {mib[precision, 'new']:.0f} MiB/eval; bit for bit: {same}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="the other worktree's root")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--evals", type=int, default=8, help="timed evaluations of each side")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = {"base": base_modules(args.base), "new": (fused, losses)}
    images = {size: (pink_noise_image(size, seed=1), pink_noise_image(size, seed=2)) for size in args.sizes}
    state = random_normalised_state(torch.stack(images[min(args.sizes)]))
    engine = StyleTransfer(VGGFeatures(state), torch.device("cpu"))
    precisions = [Precision(name) for name in args.precisions]
    for size in args.sizes:
        print("\n".join(compare(engine, images[size], size, precisions, variants, args.evals)), flush=True)
    use(variants["new"])


if __name__ == "__main__":
    main()
