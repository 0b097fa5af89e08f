"""Seeded stand-ins for what this workplace cannot have: VGG19 weights in torchvision's format (never the
real ones) and small images with structure at several scales."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision


def make_vgg19_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full torchvision VGG19 state dict with seeded random initialisation (never real weights)."""
    torch.manual_seed(seed)
    return torchvision.models.vgg19().state_dict()


def features_state_dict(full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``features`` part of a full state dict, with torchvision's features-only keys."""
    return {key.removeprefix("features."): value for key, value in full.items() if key.startswith("features.")}


def write_random_vgg19_features(path: Path) -> Path:
    """A seeded random VGG19 ``features`` state dict written to ``path`` (for benchmarks: their timing
    and memory do not depend on the values)."""
    torch.save(features_state_dict(make_vgg19_state_dict()), path)
    return path


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A deterministic 3×H×W image in [0, 1] with structure at several scales (unlike white noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, max(2, height // 8), max(2, width // 8)), generator=generator)
    fine = torch.rand((1, 3, height, width), generator=generator)
    upsampled = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (0.8 * upsampled + 0.2 * fine)[0].clamp(0, 1)
