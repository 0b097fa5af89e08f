"""What the engine reports while it runs, and how a caller stops it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import CancelledError


@dataclass(frozen=True)
class LossTerms:
    """The weighted terms of the objective at one evaluation: α·content, β·style, tv_weight·TV, their sum
    (the temporal term included), and for a later frame of an animation the temporal term (see
    nst_engine.temporal; 0 elsewhere)."""

    content: float
    style: float
    tv: float
    total: float
    temporal: float = 0.0


@dataclass(frozen=True)
class Progress:
    """One report from a running style transfer; ``image`` is set every ``preview_every`` iterations."""

    stage: int  # 1-based index of the current scale
    stages: int
    width: int  # size being optimised at this stage
    height: int
    stage_iteration: int  # 1-based, within the stage
    stage_iterations: int
    iteration: int  # 1-based, across all stages: rises monotonically
    total_iterations: int
    losses: LossTerms
    elapsed_s: float
    image: torch.Tensor | None = None  # 3×H×W float32 on the CPU, sRGB in [0, 1]
    # In an animation (nst_engine.sequence) the frame being stylised, from 1, and the number of
    # frames (0 when not known in advance); the fields above then count within this frame.
    frame: int = 1
    frames: int = 1


ProgressCallback = Callable[[Progress], None]


class CancelToken:
    """Thread-safe flag; the engine checks it at every objective evaluation and raises CancelledError."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("Style transfer cancelled.")
