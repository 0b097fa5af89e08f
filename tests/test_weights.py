"""Weights loading: local files in both torchvision layouts, the hub cache, and every failure."""

import urllib.error

import pytest
import torch

from nst_engine import (
    InvalidWeightsFileError,
    StyleTransfer,
    WeightsError,
    WeightsUnavailableError,
    load_vgg19_state_dict,
)
from nst_engine.weights import WEIGHTS_ENV_VAR, default_weights_cache_path


@pytest.fixture(autouse=True)
def no_weights_env(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)


def test_full_torchvision_state_dict_loads(weights_dir):
    full = torch.load(weights_dir / "vgg19-full.pth", weights_only=True)
    loaded = load_vgg19_state_dict(weights_dir / "vgg19-full.pth")
    assert torch.equal(loaded["21.weight"], full["features.21.weight"])
    assert len(loaded) == 32


def test_features_only_state_dict_loads(weights_file):
    assert load_vgg19_state_dict(weights_file)["0.weight"].shape == (64, 3, 3, 3)


def test_environment_variable_names_the_file(weights_file, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(weights_file))
    assert torch.equal(load_vgg19_state_dict()["0.bias"], load_vgg19_state_dict(weights_file)["0.bias"])


def test_default_weights_come_from_the_torch_hub_cache(weights_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = default_weights_cache_path()
    assert cache == tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cache.parent.mkdir(parents=True)
    cache.write_bytes((weights_dir / "vgg19-full.pth").read_bytes())
    engine = StyleTransfer.from_weights(device="cpu")
    expected = torch.load(cache, weights_only=True)["features.0.weight"]
    assert torch.equal(engine.model.convs[0].weight, expected)


def test_offline_without_cache_raises_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as raised:
        load_vgg19_state_dict()
    message = str(raised.value)
    for expected in (WEIGHTS_ENV_VAR, str(default_weights_cache_path()), "download.pytorch.org", "--weights",
                     "connect"):
        assert expected in message


def test_damaged_cache_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = default_weights_cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidWeightsFileError, match="Delete that file"):
        load_vgg19_state_dict()


def test_missing_file(tmp_path):
    with pytest.raises(InvalidWeightsFileError, match="does not exist"):
        load_vgg19_state_dict(tmp_path / "absent.pth")


def test_truncated_file(weights_file, tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights_file.read_bytes()[:100_000])
    with pytest.raises(InvalidWeightsFileError, match="cannot be read"):
        load_vgg19_state_dict(truncated)


def test_wrong_shapes_are_named(weights_file, tmp_path):
    state = torch.load(weights_file, weights_only=True)
    state["21.weight"] = torch.zeros(512, 256, 3, 3)
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(InvalidWeightsFileError, match=r"conv4_2 weight.*\(512, 256, 3, 3\)"):
        load_vgg19_state_dict(path)


def test_a_different_network_is_refused(tmp_path):
    path = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(InvalidWeightsFileError, match="missing"):
        load_vgg19_state_dict(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_vgg19_state_dict(path)


def test_non_finite_weights_are_refused(weights_file, tmp_path):
    state = torch.load(weights_file, weights_only=True)
    state["0.bias"][0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(InvalidWeightsFileError, match="non-finite"):
        load_vgg19_state_dict(path)
