"""The dialog's line about what a run will cost, from the daemon's estimate.  GIMP-free."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from arguments import settings_from_arguments


def _bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count / 1e3:.0f} kB"


def _seconds(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cost_text(estimate: Any, layers: int = 1) -> str:
    """One line: size, memory, whole or tiled, time; or why it cannot run and the largest size that can.
    ``estimate`` is the daemon's EstimateReply (for the first selected layer)."""
    if not estimate.runnable:
        return (f"Cannot run: {estimate.output_width}×{estimate.output_height} needs {_bytes(estimate.memory_bytes)}, "
                f"the daemon has {_bytes(estimate.available_bytes)}. The largest size that would run: "
                f"{estimate.largest_size} px (Max size).")
    plan = ("in 1 tile" if estimate.tiles == 1 else f"in {estimate.tiles} tiles") if estimate.tiled else "whole"
    time = "time known after the daemon's first job" if estimate.seconds is None else \
        ("" if estimate.seconds * layers < 1 else "about ") + _seconds(estimate.seconds * layers)
    several = f" for {layers} layers" if layers > 1 and estimate.seconds is not None else ""
    return (f"{estimate.output_width}×{estimate.output_height}, {_bytes(estimate.memory_bytes)} {plan}, "
            f"{time}{several}")


def estimate_line(client: Any, value_of: Callable[[str], Any], width: int, height: int,
                  style_sizes: Sequence[tuple[int, int]], layers: int = 1) -> str:
    """The dialog's cost line for a width × height region and style layers of ``style_sizes`` (width,
    height), from the procedure's current values (``value_of(name)``) and ``client``'s estimate.  Never
    raises: the estimate is a help, never a reason to fail."""
    try:
        settings = settings_from_arguments(value_of, width, height, max(1, len(style_sizes)))
        return cost_text(client.estimate(settings, width, height, style_sizes=list(style_sizes)), layers)
    except Exception as error:
        return f"No estimate: {error}"
