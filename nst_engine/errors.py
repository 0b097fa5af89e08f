"""Exceptions the engine raises on purpose.  Every message is meant to be shown to a user as it is."""

from __future__ import annotations


class StyleTransferError(Exception):
    """Base class of every error the engine raises deliberately."""


class WeightsError(StyleTransferError):
    """The VGG19 weights cannot be used."""


class WeightsUnavailableError(WeightsError):
    """No weights file was given and the default weights are neither cached nor downloadable."""


class InvalidWeightsFileError(WeightsError):
    """A weights file exists but is not a usable VGG19 state dict (corrupt, truncated, wrong shapes)."""


class InvalidSettingsError(StyleTransferError, ValueError):
    """A setting or an input image is out of range; the message names the field."""


class InsufficientMemoryError(StyleTransferError):
    """The run would not fit in the memory available; ``largest_size`` is the longest side that would."""

    def __init__(self, message: str, *, required_bytes: int, available_bytes: int, largest_size: int) -> None:
        super().__init__(message)
        self.required_bytes = required_bytes
        self.available_bytes = available_bytes
        self.largest_size = largest_size


class CancelledError(StyleTransferError):
    """The run was cancelled through its :class:`~nst_engine.progress.CancelToken`."""
