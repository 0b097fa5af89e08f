"""Gatys et al. (2016) neural style transfer on VGG19, in PyTorch.

Typical use::

    engine = StyleTransfer.from_weights()          # VGG19 resident on the best device
    result = engine.stylize(content, [style], StyleSettings(size=512), on_progress=print)
"""

from .errors import (
    CancelledError,
    InsufficientMemoryError,
    InvalidSettingsError,
    InvalidWeightsFileError,
    StyleTransferError,
    WeightsError,
    WeightsUnavailableError,
)
from .progress import CancelToken, LossTerms, Progress, ProgressCallback
from .settings import Init, Optimizer, Precision, StyleSettings
from .transfer import StyleTransfer
from .vgg import Pooling, VGGFeatures
from .weights import WEIGHTS_ENV_VAR, load_vgg19_state_dict

__all__ = [
    "CancelToken",
    "CancelledError",
    "Init",
    "InsufficientMemoryError",
    "InvalidSettingsError",
    "InvalidWeightsFileError",
    "LossTerms",
    "Optimizer",
    "Pooling",
    "Precision",
    "Progress",
    "ProgressCallback",
    "StyleSettings",
    "StyleTransfer",
    "StyleTransferError",
    "VGGFeatures",
    "WEIGHTS_ENV_VAR",
    "WeightsError",
    "WeightsUnavailableError",
    "load_vgg19_state_dict",
]
