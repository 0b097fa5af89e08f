"""A job's plan, made once before anything is allocated: its stages' sizes and iterations, how each runs
(whole, or in tiles with which L-BFGS history) and what each costs in memory and VGG work.  The engine
runs it; the daemon's estimate, status and out-of-memory replies read the same plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InsufficientMemoryError
from .geometry import fit_longest_side, style_size_at
from .memory import Arithmetic
from .settings import StyleSettings
from .tiling import StagePlan, plan_stage, tiled_bytes, whole_stage_bytes


@dataclass(frozen=True)
class Stage:
    """One coarse-to-fine stage of a job's plan."""

    index: int  # from 1
    count: int
    height: int
    width: int
    iterations: int
    first_iteration: int  # overall index of this stage's first iteration, from 1
    total_iterations: int
    style_sizes: tuple[tuple[int, int], ...]  # each style image's (height, width) at this stage
    plan: StagePlan | None  # None: it does not fit (``refusal`` says why)
    peak_bytes: int  # by the memory model; for a stage that does not fit, what it would need at least
    tiles: int  # tiles per evaluation (1: whole)
    evaluated_pixels: int  # pixels one evaluation passes through VGG, the tiles' context margins included
    refusal: InsufficientMemoryError | None = None


@dataclass(frozen=True)
class JobPlan:
    stages: tuple[Stage, ...]

    @property
    def runnable(self) -> bool:
        return all(stage.plan is not None for stage in self.stages)

    @property
    def peak_bytes(self) -> int:
        return max(stage.peak_bytes for stage in self.stages)

    @property
    def tiled(self) -> bool:
        return any(stage.plan is not None and stage.plan.tiles is not None for stage in self.stages)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def require_runnable(self) -> None:
        """InsufficientMemoryError for the first stage that does not fit, naming the largest size that does."""
        for stage in self.stages:
            if stage.refusal is not None:
                raise stage.refusal


def output_size(height: int, width: int, settings: StyleSettings) -> tuple[int, int]:
    """(height, width) of the result of a job on a height×width content: its longest side ``size``, or
    the content's own."""
    return fit_longest_side(height, width, settings.size or max(height, width))


def plan_job(height: int, width: int, style_sizes: Sequence[tuple[int, int]], settings: StyleSettings, budget: int,
             arithmetic: Arithmetic) -> JobPlan:
    """The plan of a job on a height×width content with style images of ``style_sizes`` ((height, width)
    each, before scaling), within ``budget`` bytes in ``arithmetic`` (memory.arithmetic_for)."""
    final_h, final_w = output_size(height, width, settings)
    dims = [fit_longest_side(height, width, side) for side in settings.stage_sizes(max(final_h, final_w))]
    iterations = settings.stage_iterations(len(dims))
    stages = []
    for index, (stage_h, stage_w) in enumerate(dims, start=1):
        styles = tuple(style_size_at(style_h, style_w, settings.style_scale, stage_h, stage_w)
                       for style_h, style_w in style_sizes)
        common = {"index": index, "count": len(dims), "height": stage_h, "width": stage_w,
                  "iterations": iterations[index - 1], "first_iteration": sum(iterations[: index - 1]) + 1,
                  "total_iterations": sum(iterations), "style_sizes": styles}
        try:
            plan = plan_stage(stage_h, stage_w, settings, budget, styles, arithmetic=arithmetic)
        except InsufficientMemoryError as refusal:
            stages.append(Stage(**common, plan=None, peak_bytes=refusal.required_bytes, tiles=1,
                                evaluated_pixels=stage_h * stage_w, refusal=refusal))
            continue
        stages.append(Stage(**common, plan=plan, **_stage_cost(stage_h, stage_w, settings, arithmetic, plan, styles)))
    return JobPlan(tuple(stages))


def _stage_cost(height: int, width: int, settings: StyleSettings, arithmetic: Arithmetic, plan: StagePlan,
                style_sizes: Sequence[tuple[int, int]]) -> dict[str, int]:
    """Peak bytes, tiles and evaluated pixels of a stage run by ``plan``, by the model that chose it."""
    if plan.tiles is None:
        return {"peak_bytes": whole_stage_bytes(height, width, settings, arithmetic, style_sizes), "tiles": 1,
                "evaluated_pixels": height * width}
    grid = plan.tiles.tiles(height, width)
    passed = sum((rows.context_end - rows.context_start) * (cols.context_end - cols.context_start)
                 for rows, cols in grid)
    return {"peak_bytes": tiled_bytes(height, width, plan.tiles.tile, settings, arithmetic, plan.lbfgs_history),
            "tiles": len(grid), "evaluated_pixels": passed}
