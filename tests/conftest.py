"""Shared fixtures: a seeded random-init VGG19 in torchvision's file format, tiny test images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from nst_engine import StyleTransfer


def make_vgg19_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full torchvision VGG19 state dict with seeded random initialisation (never real weights)."""
    torch.manual_seed(seed)
    return torchvision.models.vgg19().state_dict()


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("weights")
    full = make_vgg19_state_dict()
    torch.save(full, directory / "vgg19-full.pth")
    features = {key.removeprefix("features."): value for key, value in full.items() if key.startswith("features.")}
    torch.save(features, directory / "vgg19-features.pth")
    return directory


@pytest.fixture(scope="session")
def weights_file(weights_dir: Path) -> Path:
    """Features-only state dict: the small variant, used wherever the file format is not the subject."""
    return weights_dir / "vgg19-features.pth"


@pytest.fixture(scope="session")
def engine(weights_file: Path) -> StyleTransfer:
    return StyleTransfer.from_weights(weights_file, "cpu")


def smooth_image(height: int, width: int, seed: int) -> torch.Tensor:
    """A deterministic 3×H×W image in [0, 1] with structure at several scales (unlike white noise)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, max(2, height // 8), max(2, width // 8)), generator=generator)
    fine = torch.rand((1, 3, height, width), generator=generator)
    upsampled = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (0.8 * upsampled + 0.2 * fine)[0].clamp(0, 1)


@pytest.fixture
def content_image() -> torch.Tensor:
    return smooth_image(48, 64, seed=1)


@pytest.fixture
def style_image() -> torch.Tensor:
    return smooth_image(64, 64, seed=2)
