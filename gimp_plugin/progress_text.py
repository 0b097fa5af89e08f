"""What GIMP's progress bar shows while a job runs.  GIMP-free, so that tests can check it."""

from __future__ import annotations

from daemon.wire.messages import JobProgress


def progress_status(progress: JobProgress, layer: int = 1, layers: int = 1) -> tuple[str, float]:
    """The progress bar's text and its fraction done (0 to 1) of the whole run, for job ``layer`` of
    ``layers`` (one per selected layer, run one after another).  A sequence's progress (an animation's)
    counts its frames instead: "frame 3/24 · iteration 40/150", the iteration within the frame."""
    if progress.frames > 1:  # 1 (the default): a still image
        frame, frames = progress.frame, progress.frames
        fraction = _share(progress.iteration, progress.total_iterations)
        return (f"Neural Style: frame {frame}/{frames} · iteration {progress.iteration}/{progress.total_iterations}",
                (frame - 1 + fraction) / frames)
    where = f"layer {layer}/{layers} · " if layers > 1 else ""
    text = (f"Neural Style: {where}stage {progress.stage}/{progress.stages} at {progress.width}×{progress.height}, "
            f"iteration {progress.iteration}/{progress.total_iterations}")
    return text, (layer - 1 + _share(progress.iteration, progress.total_iterations)) / max(1, layers)


def _share(iteration: int, total: int) -> float:
    return min(1.0, max(0.0, iteration / total)) if total > 0 else 0.0
