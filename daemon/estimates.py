"""What a job would cost before it runs (the ``estimate`` request): memory by the engine's own model, the
plan the engine would follow (whole or tiles), and seconds from the daemon's measured speed."""

from __future__ import annotations

import threading

from nst_engine import InsufficientMemoryError, InvalidSettingsError, Progress, StyleSettings
from nst_engine.geometry import MIN_TILE, fit_longest_side
from nst_engine.memory import LBFGS_HISTORY, estimate_bytes, estimate_tiled_bytes
from nst_engine.settings import Optimizer
from nst_engine.tiling import DEFAULT_MARGIN, StagePlan, largest_runnable_side, plan_stage

from .messages import Estimate, EstimateReply, invalid

# A style image's Gram targets cost one forward pass, about a third of an evaluation (forward and backward).
_STYLE_PASS_FRACTION = 1 / 3
_DECAY = 0.98  # per sample, of the running figure's sums
_LARGEST_CHECKS = 16
LBFGS_SHORTEST_HISTORY = 5  # the shortest history nst_engine.tiling's planner falls back to


class EvaluationSpeed:
    """A running figure of seconds per optimiser iteration per megapixel, from the jobs the daemon runs.

    Measured from jobs rather than once at load, since it depends on the precision, the layers and the
    tiling a job uses, and a measurement at load would delay the first job.  Each sample is the time
    between two progress reports of one stage and that stage's megapixels (the first iteration of a
    stage also computes its targets, so it is skipped).  The figure is the ratio of the two sums, each
    decaying by ``_DECAY`` per sample: recent jobs count most, and large stages more than small ones,
    whose fixed costs per iteration would overstate the time per pixel of a large job.
    """

    def __init__(self) -> None:
        self._seconds = 0.0
        self._megapixel_iterations = 0.0
        self._last: tuple[str, int, int, float] | None = None  # job, stage, iteration, elapsed
        self._lock = threading.Lock()

    @property
    def seconds_per_megapixel(self) -> float | None:
        with self._lock:
            return self._seconds / self._megapixel_iterations if self._megapixel_iterations > 0 else None

    def observe(self, job_id: str, progress: Progress) -> None:
        with self._lock:
            last, self._last = self._last, (job_id, progress.stage, progress.iteration, progress.elapsed_s)
            if last is None or last[:2] != (job_id, progress.stage) or progress.stage_iteration < 2:
                return
            iterations = progress.iteration - last[2]
            seconds = progress.elapsed_s - last[3]
            if iterations <= 0 or seconds <= 0:
                return
            self._seconds = _DECAY * self._seconds + seconds
            self._megapixel_iterations = (_DECAY * self._megapixel_iterations
                                          + iterations * progress.width * progress.height / 1e6)


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
    memory, runnable, tiled, tiles, history = 0, True, False, 1, LBFGS_HISTORY
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
        history = plan.lbfgs_history
        memory = max(memory, stage_bytes)
        tiled = tiled or plan.tiles is not None
        styles = sum(_style_pixels(size, stage_h, stage_w, settings) for size in request.style_sizes)
        work += stage_iterations * pixels / 1e6 + _STYLE_PASS_FRACTION * styles / 1e6
    largest = _largest_runnable(height, width, settings, available)
    final_h, final_w = stages[-1]
    return EstimateReply(
        memory_bytes=memory, available_bytes=available, tiled=tiled, tiles=tiles, lbfgs_history=history,
        iterations=sum(iterations),
        seconds=None if seconds_per_megapixel is None else work * seconds_per_megapixel,
        runnable=runnable, largest_size=largest, output_width=final_w, output_height=final_h,
    )


def _largest_runnable(height: int, width: int, settings: StyleSettings, available: int) -> int:
    """The tiled planner's largest longest side for this shape, checked at the sizes a job of it would have:
    the planner's short side is rounded differently from fit_longest_side's, which can make its answer
    a pixel too large."""
    largest = largest_runnable_side(available, settings, min(height, width) / max(height, width))
    for candidate in range(largest, max(0, largest - _LARGEST_CHECKS), -1):
        if _runs(*fit_longest_side(height, width, candidate), settings, available):
            return candidate
    return max(0, largest - _LARGEST_CHECKS)


def _runs(height: int, width: int, settings: StyleSettings, available: int) -> bool:
    """Whether plan_stage finds a plan: the stage whole (unless tiles are forced), or else in the smallest
    tiles with the shortest history (what largest_runnable_side assumes), without its search for the best."""
    layers, optimizer = settings.layers, settings.optimizer
    if not settings.tile_size and estimate_bytes(height, width, layers, optimizer) <= available:
        return True
    side = (settings.tile_size or MIN_TILE) + 2 * DEFAULT_MARGIN
    history = LBFGS_SHORTEST_HISTORY if optimizer is Optimizer.LBFGS else LBFGS_HISTORY
    context = min(height, side) * min(width, side)
    return estimate_tiled_bytes(height, width, context, layers, optimizer, history) <= available


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
