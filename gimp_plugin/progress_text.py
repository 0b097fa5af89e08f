"""What GIMP's progress bar shows while a job runs.  GIMP-free, so that tests can check it."""

from __future__ import annotations

from daemon.wire.messages import JobProgress


def progress_status(progress: JobProgress, layer: int = 1, layers: int = 1) -> tuple[str, float]:
    """The progress bar's text and its fraction done (0 to 1) of the whole run, for job ``layer`` of
    ``layers`` (one per selected layer, run one after another)."""
    where = f"layer {layer}/{layers} · " if layers > 1 else ""
    text = (f"Neural Style: {where}stage {progress.stage}/{progress.stages} at {progress.width}×{progress.height}, "
            f"iteration {progress.iteration}/{progress.total_iterations}")
    fraction = progress.iteration / progress.total_iterations if progress.total_iterations > 0 else 0.0
    fraction = min(1.0, max(0.0, fraction))
    return text, (layer - 1 + fraction) / max(1, layers)
