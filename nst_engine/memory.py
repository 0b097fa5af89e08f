"""Estimating a run's memory before allocating it; tiling.plan_stage uses it to refuse a run that cannot fit."""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Collection

import torch

from .settings import Optimizer
from .layers import LAYER_DEPTH, VGG19_CONVS, layer_channels, layer_downsampling

BYTES_PER_FLOAT = 4
LBFGS_HISTORY = 50
# Forward activations kept for the backward pass, plus the gradients alive at the backward pass's
# widest point, relative to the sum of all feature maps up to the deepest layer.  Measured with
# benchmarks/memory_use.py on the CPU (peak resident set above the loaded model, default layers):
# Adam 168, 614, 2356, 9033 MiB at 256, 512, 1024, 2048 px, i.e. a factor of 1.9–2.0 at the larger
# sizes; the estimate (with its 10 % margin) is 175, 676, 2679, 10691 MiB.  L-BFGS with its full
# history: 265, 938, 3510, 13643 MiB measured, 258, 1009, 4012, 16024 MiB estimated.
ACTIVATION_FACTOR = 2.0
MODEL_BYTES = 80 * 2**20  # VGG19's sixteen convolutions in float32
_SAFETY_MARGIN = 1.1


def feature_elements_per_pixel(layers: Collection[str]) -> float:
    """Feature-map elements per input pixel across all convolutions up to the deepest layer in use."""
    return _elements_through_conv(max(LAYER_DEPTH[name] for name in layers) // 2)


@functools.cache
def _elements_through_conv(deepest: int) -> float:
    # Cached: the planner evaluates the memory model for every tile size and history it weighs, and
    # summing the convolutions each time was most of an estimate's time (34 ms at 8192²).
    return sum(spec.out_channels / 4 ** (spec.block - 1) for spec in VGG19_CONVS[: deepest + 1])


def estimate_bytes(height: int, width: int, layers: Collection[str], optimizer: Optimizer) -> int:
    """Peak memory of one stage at height×width: model, activations, image copies, optimiser state."""
    pixels = height * width
    activations = ACTIVATION_FACTOR * feature_elements_per_pixel(layers) * pixels
    image_copies = image_copies_per_pixel(optimizer)
    return round(_SAFETY_MARGIN * (MODEL_BYTES + BYTES_PER_FLOAT * (activations + image_copies * pixels)))


def estimate_style_pass_bytes(height: int, width: int, style_layers: Collection[str]) -> int:
    """Peak memory of one style image's Gram targets from a whole-image VGG pass at height×width, which
    keeps no gradients: the input, the style layers' features until their Gram matrices are taken, and
    the widest feature map in flight.  For the default layers that is 189 floats (756 bytes) per pixel
    before the margin; measured 695, 695 and 712 bytes per pixel at 512, 1024 and 1536 px (CPU, peak
    resident set above the loaded model)."""
    kept = sum(layer_channels(name) / layer_downsampling(name) ** 2 for name in style_layers)
    deepest = max(LAYER_DEPTH[name] for name in style_layers) // 2
    in_flight = max(spec.out_channels / 4 ** (spec.block - 1) for spec in VGG19_CONVS[: deepest + 1])
    return round(_SAFETY_MARGIN * (MODEL_BYTES + BYTES_PER_FLOAT * (3 + kept + in_flight) * height * width))


def image_copies_per_pixel(optimizer: Optimizer, history: int = LBFGS_HISTORY) -> int:
    """Floats per pixel held at full size: the image, its gradient, the content and style images, and
    the optimiser's state (Adam's two moments, or L-BFGS's history of two vectors per step)."""
    return 3 * (6 + (2 * history + 4 if optimizer is Optimizer.LBFGS else 3))


def estimate_tiled_bytes(height: int, width: int, context_pixels: int, layers: Collection[str], optimizer: Optimizer,
                         history: int = LBFGS_HISTORY) -> int:
    """Peak memory of a tiled stage: one tile's VGG pass (over its context_pixels) plus the full-size images."""
    tile_pass = ACTIVATION_FACTOR * feature_elements_per_pixel(layers) * context_pixels
    # Plus the content target kept for the stage: 512 channels at 1/8 × 1/8 of the pixels (relu4_2).
    full_size = (image_copies_per_pixel(optimizer, history) + 8) * height * width
    return round(_SAFETY_MARGIN * (MODEL_BYTES + BYTES_PER_FLOAT * (tile_pass + full_size)))


def available_bytes(device: torch.device) -> int:
    """Memory the run may use on ``device``: free GPU memory plus torch's cached blocks, or free RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return _available_ram()


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:  # Linux: counts reclaimable cache too
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown (Windows): do not refuse


def largest_side(fits: Callable[[int, int], bool], aspect: float = 1.0, limit: int = 1 << 16) -> int:
    """Largest longest side (up to ``limit``) of an image with this short/long ``aspect`` for which
    ``fits(longest, shortest)`` holds; ``fits`` must hold for every size below one where it holds.  The
    short side is rounded as geometry.fit_longest_side rounds it, so that the answer is a size a job
    scaled to it has."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle, max(1, round(middle * aspect))):
            low = middle
        else:
            high = middle - 1
    return low


def largest_fitting_side(budget: int, layers: Collection[str], optimizer: Optimizer, aspect: float = 1.0,
                         limit: int = 1 << 16) -> int:
    """Largest longest side (up to ``limit``) of an image with this short/long ``aspect`` whose run fits ``budget``."""
    return largest_side(lambda long, short: estimate_bytes(long, short, layers, optimizer) <= budget, aspect, limit)


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_byte_size(text: str) -> int:
    """``"1GiB"``, ``"512MiB"``, ``"2G"`` (decimal), ``"1.5GB"`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", text.lower())
    if match is None:
        raise ValueError(f"not a memory size: {text!r} (for example 1GiB, 512MiB, 2G)")
    return round(float(match.group(1)) * _UNITS[match.group(2) or ""])
