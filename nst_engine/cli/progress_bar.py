"""A one-line progress bar for a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from ..progress import Progress

_BAR_WIDTH = 24


class TerminalProgressBar:
    """Redraws one line on ``stream`` for each Progress; silent when ``stream`` is not a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, *, force: bool = False) -> None:
        self.stream = stream
        self.enabled = force or stream.isatty()
        self._drawn = False

    def __call__(self, progress: Progress) -> None:
        self.update(progress.stage, progress.stages, progress.width, progress.height, progress.iteration,
                    progress.total_iterations, progress.losses.total, progress.elapsed_s,
                    frame=progress.frame, frames=progress.frames)

    def update(self, stage: int, stages: int, width: int, height: int, iteration: int, total_iterations: int,
               loss: float, elapsed_s: float, *, frame: int = 1, frames: int = 1) -> None:
        """Redraw the line; an animation's frame number leads it ("frame 3/24 · stage 1/1 …")."""
        if not self.enabled:
            return
        filled = round(iteration / total_iterations * _BAR_WIDTH)
        frame_part = "" if frames == 1 else f"frame {frame}/{frames or '?'} · "
        line = (
            f"\r{frame_part}stage {stage}/{stages} {width}×{height} "
            f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {iteration}/{total_iterations} "
            f"loss {loss:.4g} {elapsed_s:.1f}s"
        )
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
