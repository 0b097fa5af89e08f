"""Resizing of images held as tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize of a 1×C×H×W tensor, antialiased when shrinking, clamped to [0, 1]."""
    if image.shape[-2:] == (height, width):
        return image
    shrinking = height < image.shape[-2] or width < image.shape[-1]
    resized = F.interpolate(image, size=(height, width), mode="bicubic", align_corners=False, antialias=shrinking)
    return resized.clamp(0.0, 1.0)
