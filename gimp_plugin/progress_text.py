"""What GIMP's progress bar shows while a job runs.  GIMP-free, so that tests can check it."""

from __future__ import annotations

from daemon.records import JobProgress


def progress_status(progress: JobProgress) -> tuple[str, float]:
    """The progress bar's text and its fraction done (0 to 1)."""
    text = (f"Neural Style: stage {progress.stage}/{progress.stages} at {progress.width}×{progress.height}, "
            f"iteration {progress.iteration}/{progress.total_iterations}")
    fraction = progress.iteration / progress.total_iterations if progress.total_iterations > 0 else 0.0
    return text, min(1.0, max(0.0, fraction))
