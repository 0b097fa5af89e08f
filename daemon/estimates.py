"""What a job would cost before it runs (the ``estimate`` request): memory by the engine's own model, the
plan the engine would follow (whole or tiles), and seconds from the daemon's measured speed."""

from __future__ import annotations

import threading

from nst_engine import InsufficientMemoryError, InvalidSettingsError, Progress, StyleSettings
from nst_engine.geometry import fit_longest_side
from nst_engine.memory import estimate_bytes, estimate_tiled_bytes
from nst_engine.tiling import StagePlan, largest_runnable_side, plan_stage

from .messages import Estimate, EstimateReply, invalid

# A style image's Gram targets cost one forward pass, about a third of an evaluation (forward and backward).
_STYLE_PASS_FRACTION = 1 / 3
_SMOOTHING = 0.2  # weight of the newest sample in the running figure


class EvaluationSpeed:
    """A running figure of seconds per optimiser iteration per megapixel, from the jobs the daemon runs.

    Measured from jobs rather than once at load, since it depends on the precision, the layers and the
    tiling a job uses, and a measurement at load would delay the first job.  Each sample is the time
    between two progress reports of one stage over that stage's pixels (the first iteration of a stage
    also computes its targets, so it is skipped); the figure is an exponential moving average.
    """

    def __init__(self) -> None:
        self.seconds_per_megapixel: float | None = None
        self._last: tuple[str, int, int, float] | None = None  # job, stage, iteration, elapsed
        self._lock = threading.Lock()

    def observe(self, job_id: str, progress: Progress) -> None:
        with self._lock:
            last, self._last = self._last, (job_id, progress.stage, progress.iteration, progress.elapsed_s)
            if last is None or last[:2] != (job_id, progress.stage) or progress.stage_iteration < 2:
                return
            iterations = progress.iteration - last[2]
            seconds = progress.elapsed_s - last[3]
            if iterations <= 0 or seconds <= 0:
                return
            sample = seconds / iterations / (progress.width * progress.height / 1e6)
            current = self.seconds_per_megapixel
            self.seconds_per_megapixel = sample if current is None else (1 - _SMOOTHING) * current + _SMOOTHING * sample


def estimate_job(request: Estimate, available: int, seconds_per_megapixel: float | None) -> EstimateReply:
    """The cost of a job of ``request``'s settings and sizes with ``available`` bytes; ProtocolError for
    settings the engine would refuse."""
    try:
        settings = StyleSettings.from_values(request.settings or {})
        settings.validate(max(1, len(request.style_sizes)))
    except InvalidSettingsError as error:
        raise invalid(str(error)) from None
    height, width = request.height, request.width
    longest = settings.size or max(height, width)
    stages = [fit_longest_side(height, width, side) for side in settings.stage_sizes(longest)]
    iterations = settings.stage_iterations(len(stages))
    memory, runnable, tiled, tiles = 0, True, False, 1
    work = 0.0  # megapixel-iterations, tiles' context margins included
    for (stage_h, stage_w), stage_iterations in zip(stages, iterations):
        try:
            plan = plan_stage(stage_h, stage_w, settings, available)
        except InsufficientMemoryError as error:
            runnable = False
            memory = max(memory, error.required_bytes)
            work += stage_iterations * stage_h * stage_w / 1e6
            continue
        stage_bytes, pixels, tiles = _stage_cost(stage_h, stage_w, settings, plan)
        memory = max(memory, stage_bytes)
        tiled = tiled or plan.tiles is not None
        styles = sum(_style_pixels(size, stage_h, stage_w, settings) for size in request.style_sizes)
        work += stage_iterations * pixels / 1e6 + _STYLE_PASS_FRACTION * styles / 1e6
    final_h, final_w = stages[-1]
    largest = largest_runnable_side(available, settings, min(final_h, final_w) / max(final_h, final_w))
    return EstimateReply(
        memory_bytes=memory, available_bytes=available, tiled=tiled, tiles=tiles, iterations=sum(iterations),
        seconds=None if seconds_per_megapixel is None else work * seconds_per_megapixel,
        runnable=runnable, largest_size=largest, output_width=final_w, output_height=final_h,
    )


def _stage_cost(height: int, width: int, settings: StyleSettings, plan: StagePlan) -> tuple[int, int, int]:
    """(peak bytes, pixels one evaluation passes through VGG, tiles) of a stage run by ``plan``, by the
    same model the planner used to choose it."""
    if plan.tiles is None:
        return estimate_bytes(height, width, settings.layers, settings.optimizer), height * width, 1
    grid = plan.tiles.tiles(height, width)
    side = plan.tiles.tile + 2 * plan.tiles.margin
    context = min(height, side) * min(width, side)
    peak = estimate_tiled_bytes(height, width, context, settings.layers, settings.optimizer, plan.lbfgs_history)
    passed = sum((rows.context_end - rows.context_start) * (cols.context_end - cols.context_start) for rows, cols in grid)
    return peak, passed, len(grid)


def _style_pixels(size: tuple[int, int], height: int, width: int, settings: StyleSettings) -> int:
    style_h, style_w = fit_longest_side(size[1], size[0], round(settings.style_scale * max(height, width)))
    return style_h * style_w
