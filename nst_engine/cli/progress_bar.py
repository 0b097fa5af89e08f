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
        if not self.enabled:
            return
        done = progress.iteration / progress.total_iterations
        filled = round(done * _BAR_WIDTH)
        line = (
            f"\rstage {progress.stage}/{progress.stages} {progress.width}×{progress.height} "
            f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {progress.iteration}/{progress.total_iterations} "
            f"loss {progress.losses.total:.4g} {progress.elapsed_s:.1f}s"
        )
        self.stream.write(line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
