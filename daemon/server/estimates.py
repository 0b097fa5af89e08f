"""What a job would cost before it runs (the ``estimate`` request): memory by the engine's own model, the
plan the engine would follow (whole or tiles), and seconds from the daemon's measured speed."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from nst_engine import InvalidSettingsError, Progress, StyleSettings
from nst_engine.memory import LBFGS_HISTORY, arithmetic_for
from nst_engine.planning import Stage, plan_job
from nst_engine.tiling import largest_runnable_size

from ..wire.messages import Estimate, EstimateReply, invalid

# A style image's Gram targets cost one forward pass, about a third of an evaluation (forward and backward).
_STYLE_PASS_FRACTION = 1 / 3
_DECAY = 0.98  # per sample, of the running fit's sums
_MIN_SIZE_SPREAD = 0.1  # the samples' sizes' standard deviation, relative to their mean, that a slope needs


@dataclass(frozen=True)
class SpeedModel:
    """Seconds of one optimiser iteration: a fixed part (per evaluation, whatever the size: dispatch,
    the optimiser's own work) and a part per megapixel the evaluation passes through VGG."""

    seconds_per_iteration: float
    seconds_per_megapixel: float

    def seconds(self, iterations: float, megapixel_iterations: float) -> float:
        return iterations * self.seconds_per_iteration + megapixel_iterations * self.seconds_per_megapixel


class EvaluationSpeed:
    """A running fit of seconds per optimiser iteration against megapixels, from the jobs the daemon runs: the
    speed depends on a job's precision, layers and tiling, and measuring it at load would delay the first job.

    A sample is the time between two progress reports of one stage, per iteration (not the stage's first, which
    also computes its targets).  The fit is a least-squares line, weighted by iterations and decaying by ``_DECAY``
    per sample so that recent jobs count most: a ratio through zero, learnt from a tiny job (mostly fixed costs),
    overstated a large job many times over.  While all samples have about one size, the ratio is all there is.
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
    """The cost of a job of ``request``'s settings and sizes on ``device`` with ``available`` bytes, by
    the plan the engine would follow; ProtocolError for settings the engine would refuse."""
    try:
        settings = StyleSettings.from_values(request.settings or {})
        settings.validate(max(1, len(request.style_sizes)))
    except InvalidSettingsError as error:
        raise invalid(str(error)) from None
    available = settings.memory_budget(available)
    arithmetic = arithmetic_for(settings.precision, device)
    plan = plan_job(request.height, request.width, [(height, width) for width, height in request.style_sizes],
                    settings, available, arithmetic)
    work = sum(_megapixel_iterations(stage) for stage in plan.stages)
    evaluations = sum(stage.iterations * stage.tiles for stage in plan.stages)
    final = plan.final
    return EstimateReply(
        memory_bytes=plan.peak_bytes, available_bytes=available, tiled=plan.tiled, tiles=final.tiles,
        lbfgs_history=final.plan.lbfgs_history if final.plan is not None else LBFGS_HISTORY,
        iterations=final.total_iterations, seconds=None if speed is None else speed.seconds(evaluations, work),
        runnable=plan.runnable,
        largest_size=largest_runnable_size(request.height, request.width, settings, available, arithmetic),
        output_width=final.width, output_height=final.height)


def _megapixel_iterations(stage: Stage) -> float:
    """A stage's VGG work: its evaluations' pixels (tiles' margins included), and if it runs, its styles' passes."""
    work = stage.iterations * stage.evaluated_pixels / 1e6
    if stage.plan is not None:
        work += _STYLE_PASS_FRACTION * sum(height * width for height, width in stage.style_sizes) / 1e6
    return work
