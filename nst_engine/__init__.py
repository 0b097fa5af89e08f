"""Gatys et al. (2016) neural style transfer on VGG19, in PyTorch.

Typical use::

    engine = StyleTransfer.from_weights()          # VGG19 resident on the best device
    result = engine.stylize(content, [style], StyleSettings(size=512), on_progress=print)

The names below are imported on first use (PEP 562), so that the torch-free modules (settings, schema,
layers, geometry, errors) can be imported without torch, by the daemon's client and the GIMP plug-in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULE_OF = {
    "CancelledError": "errors",
    "InsufficientMemoryError": "errors",
    "InvalidSettingsError": "errors",
    "InvalidWeightsFileError": "errors",
    "StyleTransferError": "errors",
    "WeightsError": "errors",
    "WeightsUnavailableError": "errors",
    "CancelToken": "progress",
    "LossTerms": "progress",
    "Progress": "progress",
    "ProgressCallback": "progress",
    "Colors": "settings",
    "Init": "settings",
    "Optimizer": "settings",
    "Precision": "settings",
    "StyleSettings": "settings",
    "Pooling": "layers",
    "StyleTransfer": "transfer",
    "stylize_sequence": "sequence",
    "VGGFeatures": "vgg",
    "WEIGHTS_ENV_VAR": "weights",
    "load_vgg19_state_dict": "weights",
}

__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:
    from .errors import (
        CancelledError,
        InsufficientMemoryError,
        InvalidSettingsError,
        InvalidWeightsFileError,
        StyleTransferError,
        WeightsError,
        WeightsUnavailableError,
    )
    from .layers import Pooling
    from .progress import CancelToken, LossTerms, Progress, ProgressCallback
    from .sequence import stylize_sequence
    from .settings import Colors, Init, Optimizer, Precision, StyleSettings
    from .transfer import StyleTransfer
    from .vgg import VGGFeatures
    from .weights import WEIGHTS_ENV_VAR, load_vgg19_state_dict


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
