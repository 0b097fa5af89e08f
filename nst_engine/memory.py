"""Estimating a run's memory before allocating it; tiling.plan_stage uses it to refuse a run that cannot fit."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch

from .device import cpu_has_native_bf16, resolve_precision
from .layers import LAYER_DEPTH, VGG19_CONVS, layer_channels, layer_downsampling
from .products import WIDENING_BYTES
from .settings import Optimizer, Precision

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
_UNFOLD = 9  # a 3×3 convolution's input unfolded (im2col): nine values per input value


@dataclass(frozen=True)
class Arithmetic:
    """How a run's VGG passes hold their numbers on a device, as far as its memory goes.  bf16 halves
    the feature maps, but its runs keep a bf16 copy of the model beside the float32 one, a CPU widens
    each style layer's features to float32 for its Gram product (nst_engine.products), and a CPU
    without native bf16 unfolds each convolution's input (im2col) where oneDNN's bf16 kernels would
    not."""

    name: str
    activation_bytes: int  # per feature-map value
    model_bytes: int
    widened_grams: bool = False
    unfolded_convolutions: bool = False


FP32 = Arithmetic("fp32", BYTES_PER_FLOAT, MODEL_BYTES)  # and tf32, which stores float32
BF16_GPU = Arithmetic("bf16", 2, MODEL_BYTES * 3 // 2)
BF16_CPU = Arithmetic("bf16 on a CPU", 2, MODEL_BYTES * 3 // 2, widened_grams=True)
BF16_EMULATED = Arithmetic("bf16 emulated", 2, MODEL_BYTES * 3 // 2, widened_grams=True, unfolded_convolutions=True)


def arithmetic_for(precision: Precision, device: torch.device) -> Arithmetic:
    """The arithmetic a run in ``precision`` (``auto`` resolved for ``device``) has on ``device``."""
    if resolve_precision(precision, device) is not Precision.BF16:
        return FP32
    if device.type == "cuda":
        return BF16_GPU
    if device.type == "cpu" and not cpu_has_native_bf16():
        return BF16_EMULATED
    return BF16_CPU


def feature_elements_per_pixel(layers: Collection[str]) -> float:
    """Feature-map elements per input pixel across all convolutions up to the deepest layer in use."""
    return _elements_through_conv(max(LAYER_DEPTH[name] for name in layers) // 2)


@functools.cache
def _elements_through_conv(deepest: int) -> float:
    # Cached: the planner evaluates the memory model for every tile size and history it weighs, and
    # summing the convolutions each time was most of an estimate's time (34 ms at 8192²).
    return sum(spec.out_channels / 4 ** (spec.block - 1) for spec in VGG19_CONVS[: deepest + 1])


def _widest_style_layer(layers: Collection[str]) -> float:
    """Elements per input pixel of the largest style layer's feature map (the one widened for its Gram)."""
    return max(layer_channels(name) / layer_downsampling(name) ** 2 for name in layers)


def _unfolded_input(layers: Collection[str]) -> float:
    """Elements per input pixel of the largest unfolded convolution input up to the deepest layer."""
    deepest = max(LAYER_DEPTH[name] for name in layers) // 2
    return max(_UNFOLD * spec.in_channels / 4 ** (spec.block - 1) for spec in VGG19_CONVS[: deepest + 1])


def _pass_bytes_per_pixel(layers: Collection[str], style_layers: Collection[str], arithmetic: Arithmetic) -> float:
    """Bytes per pixel of a VGG pass with gradients, beyond the image-sized float32 copies: the
    activations and gradients (ACTIVATION_FACTOR, fitted in float32, scales with their bytes), a style
    layer widened to float32 for its Gram product, and the largest unfolded convolution input (conv1_2's,
    1152 bytes per pixel in bf16).  Emulated bf16's peak varies from run to run: measured (Adam, two
    iterations, above both models) 2350, 3100–3600 and 2184 bytes per pixel at 192, 320 and 512 px,
    against 2676 estimated; native bf16, 1665 at 512 px."""
    bytes_ = ACTIVATION_FACTOR * feature_elements_per_pixel(layers) * arithmetic.activation_bytes
    if arithmetic.widened_grams and style_layers:
        bytes_ += BYTES_PER_FLOAT * _widest_style_layer(style_layers)
    if arithmetic.unfolded_convolutions:
        bytes_ += arithmetic.activation_bytes * _unfolded_input(layers)
    return bytes_


def estimate_bytes(height: int, width: int, layers: Collection[str], style_layers: Collection[str],
                   optimizer: Optimizer, arithmetic: Arithmetic) -> int:
    """Peak memory of one stage at height×width: model, activations, image copies, optimiser state."""
    pixels = height * width
    per_pixel = _pass_bytes_per_pixel(layers, style_layers, arithmetic)
    image_copies = BYTES_PER_FLOAT * image_copies_per_pixel(optimizer)
    return round(_SAFETY_MARGIN * (arithmetic.model_bytes + (per_pixel + image_copies) * pixels))


def estimate_style_pass_bytes(height: int, width: int, style_layers: Collection[str], arithmetic: Arithmetic) -> int:
    """Peak memory of one style image's Gram targets from a whole-image VGG pass at height×width, which
    keeps no gradients: the input (and its cast), the style layers' features until their Gram matrices
    are taken, the widest feature map in flight (or its unfolded input), and the buffer a CPU widens the
    style layers into for their Gram products (at most WIDENING_BYTES; before issue #30 a copy of the
    whole layer, which the bf16 figures below were measured with: 535 MiB at 1024 px since, model
    included).  In float32 that is 189 floats (756 bytes) per pixel before the margin, for the default
    layers; measured 695–753 bytes per pixel at 512, 1024, 1536 and 2048 px (CPU, peak resident set
    above the loaded model).  bf16 on a CPU: 518 bytes per pixel, measured 455–644 at 512 px (a noisy
    size) and 538, 500 at 1024 and 2048 px; emulated: 1542, measured 1400–1450 at 512 and 1024 px."""
    width_bytes = arithmetic.activation_bytes
    kept = sum(layer_channels(name) / layer_downsampling(name) ** 2 for name in style_layers)
    deepest = max(LAYER_DEPTH[name] for name in style_layers) // 2
    in_flight = max(spec.out_channels / 4 ** (spec.block - 1) for spec in VGG19_CONVS[: deepest + 1])
    if arithmetic.unfolded_convolutions:
        in_flight += _unfolded_input(style_layers)
    widened = min(BYTES_PER_FLOAT * _widest_style_layer(style_layers) * height * width, WIDENING_BYTES) \
        if arithmetic.widened_grams else 0.0
    image = 3 * (BYTES_PER_FLOAT + (width_bytes if width_bytes != BYTES_PER_FLOAT else 0))
    per_pixel = image + width_bytes * kept + width_bytes * in_flight
    return round(_SAFETY_MARGIN * (arithmetic.model_bytes + widened + per_pixel * height * width))


def image_copies_per_pixel(optimizer: Optimizer, history: int = LBFGS_HISTORY) -> int:
    """Floats per pixel held at full size: the image, its gradient, the content and style images, and
    the optimiser's state (Adam's two moments, or L-BFGS's history of two vectors per step)."""
    return 3 * (6 + (2 * history + 4 if optimizer is Optimizer.LBFGS else 3))


def estimate_tiled_bytes(height: int, width: int, context_pixels: int, layers: Collection[str],
                         style_layers: Collection[str], optimizer: Optimizer, arithmetic: Arithmetic,
                         history: int = LBFGS_HISTORY) -> int:
    """Peak memory of a tiled stage: one tile's VGG pass (over its context_pixels) plus the full-size images."""
    tile_pass = _pass_bytes_per_pixel(layers, style_layers, arithmetic) * context_pixels
    # Plus the content target kept for the stage: 512 channels at 1/8 × 1/8 of the pixels (relu4_2).
    full_size = BYTES_PER_FLOAT * (image_copies_per_pixel(optimizer, history) + 8) * height * width
    return round(_SAFETY_MARGIN * (arithmetic.model_bytes + tile_pass + full_size))


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


def largest_fitting_side(budget: int, layers: Collection[str], style_layers: Collection[str], optimizer: Optimizer,
                         arithmetic: Arithmetic, aspect: float = 1.0, limit: int = 1 << 16) -> int:
    """Largest longest side (up to ``limit``) of an image with this short/long ``aspect`` whose run fits ``budget``."""
    return largest_side(
        lambda long, short: estimate_bytes(long, short, layers, style_layers, optimizer, arithmetic) <= budget,
        aspect, limit)


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_byte_size(text: str) -> int:
    """``"1GiB"``, ``"512MiB"``, ``"2G"`` (decimal), ``"1.5GB"`` or a plain number of bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", text.lower())
    if match is None:
        raise ValueError(f"not a memory size: {text!r} (for example 1GiB, 512MiB, 2G)")
    return round(float(match.group(1)) * _UNITS[match.group(2) or ""])
