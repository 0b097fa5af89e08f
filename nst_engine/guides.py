"""Spatial guidance (Gatys et al. 2017, section 4): masks that say where in the output a style applies,
or where in a style image its statistics are taken.

A mask reaches each layer's resolution by 2×2 average pooling, once per VGG pooling before that layer.
That follows the network's own grid exactly (odd sizes floor as VGG's pooling does, and the tiles' 16-px
grid maps onto it), keeps grey levels, so that regions can overlap softly, and costs next to nothing.
The paper's alternative propagates the guidance through the receptive fields and thresholds it; its
"inside" variant erodes any region narrower than a relu5_1 receptive field away entirely, and both
make soft masks binary, which is why we downsample.

Features are weighted by the mask before the Gram product, as in the paper, so a position counts with
the square of its mask value; the guided Gram matrix is divided by Σ mask², which makes it a mean over
the region and a region's loss independent of its area.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F

from .errors import InvalidSettingsError
from .layers import layer_downsampling

LayerGuides = dict[str, torch.Tensor]  # layer name → 1×1×h×w mask at that layer's resolution


def as_mask(mask: torch.Tensor) -> torch.Tensor:
    """A mask as a 1×1×H×W float32 tensor."""
    return mask.reshape(1, 1, *mask.shape[-2:]).float()


def guides_at_layers(mask: torch.Tensor, layers: Collection[str]) -> LayerGuides:
    """``mask`` (H×W, values in [0, 1], at the image's resolution) at each layer's resolution."""
    current = as_mask(mask)
    pooled = {1: current}
    for downsampling in sorted({layer_downsampling(layer) for layer in layers}):
        while max(pooled) < downsampling:
            current = F.avg_pool2d(current, 2)
            pooled[max(pooled) * 2] = current
    return {layer: pooled[layer_downsampling(layer)] for layer in layers}


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A mask at another size: area averaging when shrinking (a region's share of each pixel),
    bilinear when enlarging; 1×1×H×W."""
    mask = as_mask(mask)
    if mask.shape[-2:] == (height, width):
        return mask
    shrinking = height <= mask.shape[-2] and width <= mask.shape[-1]
    mode = "area" if shrinking else "bilinear"
    resized = F.interpolate(mask, size=(height, width), mode=mode, **({} if shrinking else {"align_corners": False}))
    return resized.clamp(0.0, 1.0)


def check_masks(masks: Sequence[torch.Tensor | None] | None, images: Sequence[torch.Tensor], what: str) -> None:
    """Raise InvalidSettingsError unless each mask is None or an H×W map in [0, 1] of its image's size
    that is not zero everywhere."""
    if masks is None:
        return
    if len(masks) != len(images):
        raise InvalidSettingsError(f"{what}: one mask (or None) per style image is needed, "
                                   f"got {len(masks)} for {len(images)}")
    for number, (mask, image) in enumerate(zip(masks, images), start=1):
        if mask is None:
            continue
        name = f"{what} {number}"
        if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3) or (mask.dim() == 3 and mask.shape[0] != 1):
            raise InvalidSettingsError(f"{name} must be an H×W tensor")
        if tuple(mask.shape[-2:]) != tuple(image.shape[-2:]):
            raise InvalidSettingsError(
                f"{name} is {mask.shape[-1]}×{mask.shape[-2]} pixels "
                f"but its image is {image.shape[-1]}×{image.shape[-2]}"
            )
        if not mask.is_floating_point() or not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
            raise InvalidSettingsError(f"{name} must hold values from 0 to 1")
        if not (mask > 0).any():
            raise InvalidSettingsError(f"{name} is empty (zero everywhere)")
