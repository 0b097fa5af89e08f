"""Loading VGG19's ImageNet weights: torchvision's hash-checked download cache, or a local file.

Random weights are never used as a fallback: without real weights every function here raises.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torchvision.models import VGG19_Weights

from .errors import InvalidWeightsFileError, WeightsUnavailableError
from .layers import VGG19_CONVS

log = logging.getLogger(__name__)

WEIGHTS_ENV_VAR = "NEURAL_STYLE_WEIGHTS"
DEFAULT_WEIGHTS = VGG19_Weights.IMAGENET1K_V1


def default_weights_cache_path() -> Path:
    """Where torchvision's download of the default weights lives (inside the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(DEFAULT_WEIGHTS.url).name


def resolve_weights_file(weights_file: str | os.PathLike[str] | None) -> Path | None:
    """The explicit file if given, else ``$NEURAL_STYLE_WEIGHTS`` if set, else None (the default weights)."""
    if weights_file is not None:
        return Path(weights_file)
    from_env = os.environ.get(WEIGHTS_ENV_VAR)
    return Path(from_env) if from_env else None


def load_vgg19_state_dict(
    weights_file: str | os.PathLike[str] | None = None, *, progress: bool = False
) -> dict[str, torch.Tensor]:
    """VGG19 convolution parameters keyed as in torchvision's ``vgg19().features`` (``"0.weight"``…).

    ``weights_file`` (or ``$NEURAL_STYLE_WEIGHTS``) may hold a full torchvision VGG19 state dict or a
    features-only one.  Without either, torchvision's ``VGG19_Weights.IMAGENET1K_V1`` is read from the
    torch hub cache, downloading it (hash-checked) the first time.
    """
    path = resolve_weights_file(weights_file)
    if path is not None:
        return _features_state_dict(_read_state_dict_file(path), source=str(path))
    return _features_state_dict(_default_state_dict(progress), source=str(default_weights_cache_path()))


def _read_state_dict_file(path: Path) -> Mapping[str, object]:
    if not path.is_file():
        raise InvalidWeightsFileError(
            f"VGG19 weights file {path} does not exist. Pass an existing file, or unset "
            f"{WEIGHTS_ENV_VAR} to use torchvision's default weights."
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many unrelated types for a damaged file
        raise InvalidWeightsFileError(
            f"VGG19 weights file {path} cannot be read ({type(error).__name__}: {error}). "
            "It may be truncated or not a PyTorch state dict; download it again."
        ) from error
    if not isinstance(loaded, Mapping):
        raise InvalidWeightsFileError(
            f"VGG19 weights file {path} holds a {type(loaded).__name__}, not a state dict."
        )
    return loaded


def _default_state_dict(progress: bool) -> Mapping[str, object]:
    cache_path = default_weights_cache_path()
    cached = cache_path.is_file()
    if not cached:
        log.info("Downloading VGG19 weights from %s to %s", DEFAULT_WEIGHTS.url, cache_path)
    try:
        return DEFAULT_WEIGHTS.get_state_dict(
            progress=progress, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as error:  # network errors, hash mismatch, damaged cache file
        if cached:
            raise InvalidWeightsFileError(
                f"The cached VGG19 weights {cache_path} cannot be read ({type(error).__name__}: {error}). "
                "Delete that file and run again to download it afresh."
            ) from error
        raise WeightsUnavailableError(
            "VGG19 weights are not available. Tried: no weights file was given and "
            f"{WEIGHTS_ENV_VAR} is not set; torchvision's cache {cache_path} does not exist; downloading "
            f"{DEFAULT_WEIGHTS.url} failed ({type(error).__name__}: {error}). To fix: connect to the "
            "internet once and run again (the download is about 550 MB and is kept), or pass a local "
            f"torchvision VGG19 state dict with --weights FILE or {WEIGHTS_ENV_VAR}=FILE."
        ) from error


def _features_state_dict(loaded: Mapping[str, object], source: str) -> dict[str, torch.Tensor]:
    """Keep the convolution parameters, accepting full (``features.N.*``) and features-only keys."""
    prefix = "features." if any(str(key).startswith("features.") for key in loaded) else ""
    result: dict[str, torch.Tensor] = {}
    for spec in VGG19_CONVS:
        expected = {
            "weight": (spec.out_channels, spec.in_channels, 3, 3),
            "bias": (spec.out_channels,),
        }
        for kind, shape in expected.items():
            key = f"{prefix}{spec.features_index}.{kind}"
            tensor = loaded.get(key)
            if not isinstance(tensor, torch.Tensor):
                raise InvalidWeightsFileError(
                    f"{source} is not a VGG19 state dict: {key} ({spec.conv_name} {kind}) is missing."
                )
            if tuple(tensor.shape) != shape:
                raise InvalidWeightsFileError(
                    f"{source} is not a VGG19 state dict: {key} ({spec.conv_name} {kind}) has shape "
                    f"{tuple(tensor.shape)}, expected {shape}."
                )
            if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
                raise InvalidWeightsFileError(
                    f"{source} is damaged: {key} ({spec.conv_name} {kind}) holds non-finite values."
                )
            result[f"{spec.features_index}.{kind}"] = tensor.float()
    return result
