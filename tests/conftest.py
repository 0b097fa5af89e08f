"""Shared fixtures: a seeded random-init VGG19 in torchvision's file format, tiny test images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nst_engine import StyleTransfer

from .stand_ins import features_state_dict, make_vgg19_state_dict, smooth_image


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("weights")
    full = make_vgg19_state_dict()
    torch.save(full, directory / "vgg19-full.pth")
    features = features_state_dict(full)
    torch.save(features, directory / "vgg19-features.pth")
    return directory


@pytest.fixture(scope="session")
def weights_file(weights_dir: Path) -> Path:
    """Features-only state dict: the small variant, used wherever the file format is not the subject."""
    return weights_dir / "vgg19-features.pth"


@pytest.fixture(scope="session")
def engine(weights_file: Path) -> StyleTransfer:
    return StyleTransfer.from_weights(weights_file, "cpu")


@pytest.fixture
def content_image() -> torch.Tensor:
    return smooth_image(48, 64, seed=1)


@pytest.fixture
def style_image() -> torch.Tensor:
    return smooth_image(64, 64, seed=2)
