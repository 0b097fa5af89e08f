"""Shared fixtures: a seeded random-init VGG19 in torchvision's file format, tiny test images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nst_engine import StyleTransfer
from nst_engine import device as device_module

from .stand_ins import features_state_dict, make_vgg19_state_dict, smooth_image


@pytest.fixture(autouse=True)
def auto_means_fp32_on_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs resolve ``auto`` as on a CPU without native bf16, whatever this one has, so that
    the suite's tolerances, set in fp32, hold on every machine.  bf16 is tested where a test names it
    (tests/test_bf16.py, the quality checks of tests/test_transfer.py); subprocesses (the command line,
    the daemon, GIMP) see the real CPU."""
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)


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


@pytest.fixture
def client(daemon):
    """A connected client of the module's ``daemon`` fixture."""
    with daemon.client() as connected:
        yield connected
