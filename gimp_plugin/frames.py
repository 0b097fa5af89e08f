"""GIMP's layer-frames, read from layer names as Filters → Animation → Playback and the GIF and WebP
exports read them: the bottom layer is the first frame, and a name may carry the frame's timing
("(100ms)") and how it joins the frame below ("(combine)" or "(replace)").  GIMP-free, so that tests
can check it."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

_DELAY = re.compile(r"\(\s*(\d+)\s*ms\s*\)", re.IGNORECASE)
_DISPOSAL = re.compile(r"\(\s*(combine|replace)\s*\)", re.IGNORECASE)

T = TypeVar("T")


class Disposal(enum.Enum):
    COMBINE = "combine"
    REPLACE = "replace"


@dataclass(frozen=True)
class FrameTiming:
    """What a layer's name says of its frame: its delay in ms and its disposal, each None where unsaid."""

    delay_ms: int | None = None
    disposal: Disposal | None = None

    @property
    def timed(self) -> bool:
        return self.delay_ms is not None or self.disposal is not None


def frame_timing(name: str) -> FrameTiming:
    delay = _DELAY.search(name)
    disposal = _DISPOSAL.search(name)
    return FrameTiming(int(delay.group(1)) if delay else None,
                       Disposal(disposal.group(1).lower()) if disposal else None)


def names_carry_timings(names: Sequence[str]) -> bool:
    """Whether any of the layer names carries a frame timing: then the image is an animation, and the
    dialog's Animation choice starts on."""
    return any(frame_timing(name).timed for name in names)


def bottom_to_top(layers_with_positions: Sequence[tuple[T, int]]) -> list[T]:
    """The frames in playing order: ``(layer, position)`` pairs, position as GIMP counts it within one
    parent (0 at the top), ordered from the bottom layer up."""
    return [layer for layer, _ in sorted(layers_with_positions, key=lambda pair: pair[1], reverse=True)]

