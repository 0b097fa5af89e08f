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
        """Redraw the line; an animation's leads with the frame ("frame 3/24 · iteration 40/150 …")."""
        if not self.enabled:
            return
        filled = round(iteration / total_iterations * _BAR_WIDTH)
        bar = f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}]"
        if frames == 1:
            where = f"stage {stage}/{stages} {width}×{height} {bar} {iteration}/{total_iterations}"
        else:
            where = f"frame {frame}/{frames or '?'} · iteration {iteration}/{total_iterations} {bar}"
        line = f"\r{where} loss {loss:.4g} {elapsed_s:.1f}s"
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
