"""What a job would cost before it runs (the ``estimate`` request): memory by the engine's own model, the
plan the engine would follow (whole or tiles), and seconds from the daemon's measured speed."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from nst_engine import InsufficientMemoryError, InvalidSettingsError, Progress, StyleSettings
from nst_engine.geometry import MIN_TILE, fit_longest_side, style_size_at
import torch

from nst_engine.memory import LBFGS_HISTORY, Arithmetic, arithmetic_for, estimate_bytes
from nst_engine.settings import Optimizer
from nst_engine.tiling import StagePlan, largest_runnable_side, plan_stage, tiled_bytes, whole_stage_bytes

from ..wire.messages import Estimate, EstimateReply, invalid

# A style image's Gram targets cost one forward pass, about a third of an evaluation (forward and backward).
_STYLE_PASS_FRACTION = 1 / 3
_DECAY = 0.98  # per sample, of the running fit's sums
_MIN_SIZE_SPREAD = 0.1  # the samples' sizes' standard deviation, relative to their mean, that a slope needs
_LARGEST_CHECKS = 16
LBFGS_SHORTEST_HISTORY = 5  # the shortest history nst_engine.tiling's planner falls back to


@dataclass(frozen=True)
class SpeedModel:
    """Seconds of one optimiser iteration: a fixed part (per evaluation, whatever the size: dispatch,
    the optimiser's own work) and a part per megapixel the evaluation passes through VGG."""

    seconds_per_iteration: float
    seconds_per_megapixel: float

    def seconds(self, iterations: float, megapixel_iterations: float) -> float:
        return iterations * self.seconds_per_iteration + megapixel_iterations * self.seconds_per_megapixel


class EvaluationSpeed:
    """A running fit of seconds per optimiser iteration against megapixels, from the jobs the daemon runs.

    Measured from jobs rather than once at load, since it depends on the precision, the layers and the
    tiling a job uses, and a measurement at load would delay the first job.  Each sample is the time
    between two progress reports of one stage, per iteration, at that stage's megapixels (the first
    iteration of a stage also computes its targets, so it is skipped).  The fit is a weighted least-squares
    line through the samples, each weighted by its iterations and all decaying by ``_DECAY`` per sample, so
    that recent jobs count most.  A line rather than a ratio through zero: a tiny job's time is mostly
    fixed costs, and a ratio learnt from it overstated a large job many times over.  While every sample
    has about the same size (one single-stage job), the slope cannot be told from the fixed part, and the
    ratio through zero is all there is.
    """

    def __init__(self) -> None:
        self._sums = [0.0] * 5  # weight, Σw·x, Σw·y, Σw·x², Σw·x·y
        self._last: tuple[str, int, int, float] | None = None  # job, stage, iteration, elapsed
        self._lock = threading.Lock()

    def model(self) -> SpeedModel | None:
        with self._lock:
            weight, sum_x, sum_y, sum_xx, sum_xy = self._sums
        if weight <= 0 or sum_x <= 0:
            return None
        mean_x, mean_y = sum_x / weight, sum_y / weight
        spread = sum_xx / weight - mean_x * mean_x
        if spread > (_MIN_SIZE_SPREAD * mean_x) ** 2:
            slope = (sum_xy / weight - mean_x * mean_y) / spread
            fixed = mean_y - slope * mean_x
            if slope > 0 and fixed >= 0:
                return SpeedModel(fixed, slope)
        return SpeedModel(0.0, sum_xy / sum_xx)  # least squares through zero

    def observe(self, job_id: str, progress: Progress) -> None:
        with self._lock:
            last, self._last = self._last, (job_id, progress.stage, progress.iteration, progress.elapsed_s)
            if last is None or last[:2] != (job_id, progress.stage) or progress.stage_iteration < 2:
                return
            iterations = progress.iteration - last[2]
            seconds = progress.elapsed_s - last[3]
            if iterations <= 0 or seconds <= 0:
                return
            x, y = progress.width * progress.height / 1e6, seconds / iterations
            sample = (1.0, x, y, x * x, x * y)
            self._sums = [_DECAY * total + iterations * value for total, value in zip(self._sums, sample)]


def estimate_job(request: Estimate, available: int, speed: SpeedModel | None, device: torch.device) -> EstimateReply:
    """The cost of a job of ``request``'s settings and sizes on ``device`` with ``available`` bytes;
    ProtocolError for settings the engine would refuse."""
    try:
        settings = StyleSettings.from_values(request.settings or {})
        settings.validate(max(1, len(request.style_sizes)))
    except InvalidSettingsError as error:
        raise invalid(str(error)) from None
    available = settings.memory_budget(available)
    arithmetic = arithmetic_for(settings.precision, device)
    height, width = request.height, request.width
    longest = settings.size or max(height, width)
    stages = [fit_longest_side(height, width, side) for side in settings.stage_sizes(longest)]
    iterations = settings.stage_iterations(len(stages))
    memory, runnable, tiled, tiles, history = 0, True, False, 1, LBFGS_HISTORY
    work = 0.0  # megapixel-iterations, tiles' context margins included
    evaluations = 0  # of the whole image or of one tile
    for (stage_h, stage_w), stage_iterations in zip(stages, iterations):
        try:
            style_sizes = [style_size_at(style_h, style_w, settings.style_scale, stage_h, stage_w)
                           for style_w, style_h in request.style_sizes]
            plan = plan_stage(stage_h, stage_w, settings, available, style_sizes, arithmetic=arithmetic)
        except InsufficientMemoryError as error:
            runnable = False
            memory = max(memory, error.required_bytes)
            work += stage_iterations * stage_h * stage_w / 1e6
            evaluations += stage_iterations
            continue
        stage_bytes, pixels, tiles = _stage_cost(stage_h, stage_w, settings, arithmetic, plan, style_sizes)
        history = plan.lbfgs_history
        memory = max(memory, stage_bytes)
        tiled = tiled or plan.tiles is not None
        styles = sum(style_h * style_w for style_h, style_w in style_sizes)
        work += stage_iterations * pixels / 1e6 + _STYLE_PASS_FRACTION * styles / 1e6
        evaluations += stage_iterations * tiles
    largest = _largest_runnable(height, width, settings, arithmetic, available)
    final_h, final_w = stages[-1]
    return EstimateReply(
        memory_bytes=memory, available_bytes=available, tiled=tiled, tiles=tiles, lbfgs_history=history,
        iterations=sum(iterations),
        seconds=None if speed is None else speed.seconds(evaluations, work),
        runnable=runnable, largest_size=largest, output_width=final_w, output_height=final_h,
    )


def _largest_runnable(height: int, width: int, settings: StyleSettings, arithmetic: Arithmetic, available: int) -> int:
    """The tiled planner's largest longest side for this shape, checked at the sizes a job of it would have
    (the planner works from the aspect ratio, whose rounding can in rare cases differ by a pixel from
    fit_longest_side's from the two sides)."""
    largest = largest_runnable_side(available, settings, min(height, width) / max(height, width), arithmetic=arithmetic)
    for candidate in range(largest, max(0, largest - _LARGEST_CHECKS), -1):
        if _runs(*fit_longest_side(height, width, candidate), settings, arithmetic, available):
            return candidate
    return max(0, largest - _LARGEST_CHECKS)


def _runs(height: int, width: int, settings: StyleSettings, arithmetic: Arithmetic, available: int) -> bool:
    """Whether plan_stage finds a plan: the stage whole (unless tiles are forced), or else in the smallest
    tiles with the shortest history (what largest_runnable_side assumes), without its search for the best."""
    whole = estimate_bytes(height, width, settings.layers, settings.style_layers, settings.optimizer, arithmetic)
    if not settings.tile_size and whole <= available:
        return True
    history = LBFGS_SHORTEST_HISTORY if settings.optimizer is Optimizer.LBFGS else LBFGS_HISTORY
    return tiled_bytes(height, width, settings.tile_size or MIN_TILE, settings, arithmetic, history) <= available


def _stage_cost(height: int, width: int, settings: StyleSettings, arithmetic: Arithmetic, plan: StagePlan,
                style_sizes: list[tuple[int, int]]) -> tuple[int, int, int]:
    """(peak bytes, pixels one evaluation passes through VGG, tiles) of a stage run by ``plan``, by the
    same model the planner used to choose it."""
    if plan.tiles is None:
        return whole_stage_bytes(height, width, settings, arithmetic, style_sizes), height * width, 1
    grid = plan.tiles.tiles(height, width)
    peak = tiled_bytes(height, width, plan.tiles.tile, settings, arithmetic, plan.lbfgs_history)
    passed = sum((rows.context_end - rows.context_start) * (cols.context_end - cols.context_start) for rows, cols in grid)
    return peak, passed, len(grid)
