"""The objective over overlapping tiles, for stages whose VGG passes do not fit in memory at once.

Every evaluation gives the gradient of the *whole image's* loss, tile by tile:

1. A no-gradient pass over the tiles sums each style layer's Gram matrix over the tiles' cores (for each
   region, weighted by its guide: nst_engine.guides), so Ĝ_l and hence (Ĝ_l − Â_l) are those of the
   whole image, not of any tile.
2. A gradient pass over the tiles.  ∂E_l/∂F = (Ĝ_l − Â_l)·(F∘g)∘g/(N²·Σg²) is linear in a tile's
   features once Ĝ_l is known, so each tile backpropagates that term for its core's features (plus its
   share of the content loss), and the image's gradient accumulates across tiles.

Each tile's VGG pass sees its core plus a context margin, so features near a core's edge are computed
from real neighbouring pixels; only core features count, each feature position in exactly one core.
Receptive fields of the deepest layers exceed any practical margin, so a small error remains near
core edges; the grid shifts every iteration so that no edge stays in one place long enough to leave a
seam.  Tile edges lie on a 16-pixel grid, which maps exactly onto every VGG19 layer (pooled at most 16×).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from .errors import InsufficientMemoryError
from .geometry import MIN_TILE, TILE_ALIGN, fit_longest_side
from .guides import LayerGuides
from .layers import layer_channels, layer_downsampling
from .losses import (
    StyleTerm,
    content_loss,
    gram_error,
    gram_gradient_surrogate,
    guided_gram_sum,
    style_normaliser,
    total_variation_loss,
)
from .memory import (
    LBFGS_HISTORY,
    Arithmetic,
    estimate_bytes,
    estimate_style_pass_bytes,
    estimate_tiled_bytes,
    largest_side,
)
from .progress import CancelToken
from .settings import Optimizer, StyleSettings
from .vgg import VGGFeatures

# Context around each core: with 64 px the tiled gradient was within 0.5 % of the untiled one (relative
# norm of the difference, 64-px cores on a 192-px image); with 32 px, 7 %; with 16 px, 17 %.
DEFAULT_MARGIN = 64
_SHIFT_STEP = 3 * TILE_ALIGN  # grid offset added per iteration (modulo the tile size)


@dataclass(frozen=True)
class Span:
    """One tile's extent along one axis: its core, and the core with context, in image pixels."""

    core_start: int
    core_end: int
    context_start: int
    context_end: int

    def feature_slice(self, downsampling: int) -> slice:
        """The core's positions within the context's feature map at a layer ``downsampling``× smaller."""
        offset = self.context_start // downsampling
        return slice(self.core_start // downsampling - offset, self.core_end // downsampling - offset)

    @property
    def context(self) -> slice:
        return slice(self.context_start, self.context_end)


def spans(length: int, tile: int, margin: int, shift: int = 0) -> list[Span]:
    """Cores of ``tile`` pixels (the first shortened by ``shift``) covering [0, length), with context."""
    starts = [0, *range(tile - shift if shift else tile, length, tile)]
    ends = [*starts[1:], length]
    return [Span(start, end, max(0, start - margin), min(length, end + margin)) for start, end in zip(starts, ends)]


@dataclass(frozen=True)
class TilePlan:
    tile: int  # core side, a multiple of TILE_ALIGN
    margin: int = DEFAULT_MARGIN  # context on each side, a multiple of TILE_ALIGN

    def tiles(self, height: int, width: int, iteration: int = 0) -> list[tuple[Span, Span]]:
        shift = (iteration * _SHIFT_STEP) % self.tile
        return [(rows, cols) for rows in spans(height, self.tile, self.margin, shift)
                for cols in spans(width, self.tile, self.margin, shift)]


def _core(features: torch.Tensor, rows: Span, cols: Span, layer: str) -> torch.Tensor:
    d = layer_downsampling(layer)
    return features[..., rows.feature_slice(d), cols.feature_slice(d)]


@torch.no_grad()
def sum_grams(model: VGGFeatures, image: torch.Tensor, tiles: list[tuple[Span, Span]], settings: StyleSettings,
              cancel: CancelToken | None = None,
              guides: Sequence[LayerGuides | None] = (None,)) -> list[dict[str, torch.Tensor]]:
    """For each of ``guides`` (per layer, at the whole image's feature resolution; None: the whole
    image), the per-position Gram matrix Ĝ of the whole ``image`` (1×3×H×W) at each style layer: the
    guided Σ g² f fᵀ summed over the tiles' cores, over the whole image's Σ g²."""
    height, width = image.shape[-2:]
    sums: list[dict[str, torch.Tensor]] = [{} for _ in guides]
    for rows, cols in tiles:
        if cancel is not None:
            cancel.raise_if_cancelled()
        features = model(image[..., rows.context, cols.context], settings.style_layers, settings.pooling)
        for layer in settings.style_layers:
            core = _core(features[layer], rows, cols, layer)
            for guide_sums, layer_guides in zip(sums, guides):
                core_guide = None if layer_guides is None else _global_core(layer_guides[layer], rows, cols, layer)
                tile_sum = guided_gram_sum(core, core_guide)
                guide_sums[layer] = guide_sums[layer] + tile_sum if layer in guide_sums else tile_sum
    return [{layer: total / _total_weight(layer_guides, layer, height, width) for layer, total in guide_sums.items()}
            for guide_sums, layer_guides in zip(sums, guides)]


def _total_weight(guides: LayerGuides | None, layer: str, height: int, width: int) -> float:
    """Σ g² of a guide over the whole image's positions at ``layer`` (their number without a guide)."""
    if guides is None:
        return float(feature_positions(height, width, layer))
    return float(guides[layer].double().square().sum())


def _global_core(feature_map: torch.Tensor, rows: Span, cols: Span, layer: str) -> torch.Tensor:
    """A core's part of a whole image's feature map."""
    d = layer_downsampling(layer)
    return feature_map[..., rows.core_start // d: rows.core_end // d, cols.core_start // d: cols.core_end // d]


@torch.no_grad()
def _whole_feature_map(model: VGGFeatures, image: torch.Tensor, plan: TilePlan, layer: str, settings: StyleSettings,
                       cancel: CancelToken) -> torch.Tensor:
    """One layer's feature map of the whole image in float32, assembled from the tiles' cores (kept for
    the stage: the content target, 8 floats per pixel at relu4_2, instead of a VGG pass per tile per
    evaluation)."""
    height, width = image.shape[-2:]
    d = layer_downsampling(layer)
    whole: torch.Tensor | None = None
    for rows, cols in plan.tiles(height, width):
        cancel.raise_if_cancelled()
        core = _core(model(image[..., rows.context, cols.context], [layer], settings.pooling)[layer], rows, cols, layer)
        if whole is None:
            whole = core.new_zeros((*core.shape[:2], height // d, width // d), dtype=torch.float32)
        _global_core(whole, rows, cols, layer).copy_(core)
    assert whole is not None
    return whole


def feature_positions(height: int, width: int, layer: str) -> int:
    d = layer_downsampling(layer)
    return (height // d) * (width // d)


@dataclass(frozen=True)
class StagePlan:
    """How one stage runs: whole (tiles None) or over tiles, and with how much L-BFGS history."""

    tiles: TilePlan | None
    lbfgs_history: int = LBFGS_HISTORY


# L-BFGS's history is image-sized; at sizes where even tiling does not fit, a shorter one is used.
_HISTORIES = (LBFGS_HISTORY, 20, 10, 5)


def _histories(optimizer: Optimizer) -> tuple[int, ...]:
    """L-BFGS histories a plan may use, longest first; Adam keeps none, so only its nominal one."""
    return _HISTORIES if optimizer is Optimizer.LBFGS else _HISTORIES[:1]


def whole_stage_bytes(height: int, width: int, settings: StyleSettings, arithmetic: Arithmetic,
                      style_sizes: Sequence[tuple[int, int]] = ()) -> int:
    """Peak memory of a stage run whole: its optimisation, or before it the VGG pass of its largest style
    image (``style_sizes``: each style's (height, width) at this stage), whichever is larger.  In tiles
    the style passes are tiled too, and never the peak."""
    stage = estimate_bytes(height, width, settings.layers, settings.style_layers, settings.optimizer, arithmetic)
    passes = [estimate_style_pass_bytes(style_h, style_w, settings.style_layers, arithmetic)
              for style_h, style_w in style_sizes]
    return max([stage, *passes])


def plan_stage(height: int, width: int, settings: StyleSettings, budget: int,
               style_sizes: Sequence[tuple[int, int]] = (), *, arithmetic: Arithmetic) -> StagePlan:
    """The whole stage at once if it fits ``budget`` (see :func:`whole_stage_bytes`; and no tile size is
    forced), else the largest tiles (and longest L-BFGS history) that fit; InsufficientMemoryError when
    nothing fits.  ``arithmetic``: the one the stage runs in (memory.arithmetic_for)."""
    if not settings.tile_size and whole_stage_bytes(height, width, settings, arithmetic, style_sizes) <= budget:
        return StagePlan(None)
    histories = _histories(settings.optimizer)
    longest_tile = max(MIN_TILE, -(-max(height, width) // TILE_ALIGN) * TILE_ALIGN)
    tiles = [settings.tile_size] if settings.tile_size else range(longest_tile, MIN_TILE - 1, -TILE_ALIGN)
    # The largest tiles, since each tile's context margin is work done again; for L-BFGS a shorter
    # history when it buys larger tiles (ties keep the longer history).
    fitting = [StagePlan(TilePlan(tile), history) for history in histories
               for tile in tiles if tiled_bytes(height, width, tile, settings, arithmetic, history) <= budget]
    if fitting:
        return max(fitting, key=lambda plan: (plan.tiles.tile, plan.lbfgs_history))
    required = tiled_bytes(height, width, settings.tile_size or MIN_TILE, settings, arithmetic, histories[-1])
    longest = max(height, width)
    largest = largest_runnable_side(budget, settings, min(height, width) / longest, limit=longest,
                                    arithmetic=arithmetic)
    raise InsufficientMemoryError(
        f"A {width}×{height} run needs at least {required / 2**30:.1f} GiB even in tiles, but only "
        f"{budget / 2**30:.1f} GiB is available; the largest size that fits is {largest} pixels "
        "on the longest side. Lower the size, or free memory.",
        required_bytes=required, available_bytes=budget, largest_size=largest,
    )


def runs(height: int, width: int, settings: StyleSettings, budget: int, arithmetic: Arithmetic) -> bool:
    """Whether :func:`plan_stage` finds a plan for the stage (without its search for the best one): whole,
    unless tiles are forced, or else in the smallest tiles (the forced size, if any) with the shortest
    history.  Style passes are left out: in tiles they are tiled too."""
    whole = estimate_bytes(height, width, settings.layers, settings.style_layers, settings.optimizer, arithmetic)
    if not settings.tile_size and whole <= budget:
        return True
    tile = settings.tile_size or MIN_TILE
    return tiled_bytes(height, width, tile, settings, arithmetic, _histories(settings.optimizer)[-1]) <= budget


def largest_runnable_side(budget: int, settings: StyleSettings, aspect: float = 1.0, limit: int = 1 << 16, *,
                          arithmetic: Arithmetic) -> int:
    """Largest longest side (up to ``limit``) of an image with this short/long ``aspect`` whose stage
    :func:`plan_stage` can run within ``budget`` (see :func:`runs`)."""
    return largest_side(lambda long, short: runs(long, short, settings, budget, arithmetic), aspect, limit)


_LARGEST_CHECKS = 16


def largest_runnable_size(height: int, width: int, settings: StyleSettings, budget: int,
                          arithmetic: Arithmetic) -> int:
    """The largest longest side of an output of this shape that runs, checked at the sizes a job of it
    would have (the search works from the aspect ratio, whose rounding can in rare cases differ by a
    pixel from fit_longest_side's from the two sides)."""
    largest = largest_runnable_side(budget, settings, min(height, width) / max(height, width), arithmetic=arithmetic)
    for candidate in range(largest, max(0, largest - _LARGEST_CHECKS), -1):
        if runs(*fit_longest_side(height, width, candidate), settings, budget, arithmetic):
            return candidate
    return max(0, largest - _LARGEST_CHECKS)


def tiled_bytes(height: int, width: int, tile: int, settings: StyleSettings, arithmetic: Arithmetic,
                history: int) -> int:
    """Peak memory of a stage run in ``tile``-px tiles (with DEFAULT_MARGIN of context) and ``history``."""
    context = min(height, tile + 2 * DEFAULT_MARGIN) * min(width, tile + 2 * DEFAULT_MARGIN)
    return estimate_tiled_bytes(height, width, context, settings.layers, settings.style_layers, settings.optimizer,
                                arithmetic, history)


class TiledObjective:
    """α·content + β·style + tv_weight·TV of the whole image, evaluated over tiles (see the module); a
    transfer.StageObjective, like transfer.Objective, and like it computing the VGG passes in the
    ``model``'s dtype and everything else in float32."""

    def __init__(
        self,
        model: VGGFeatures,
        settings: StyleSettings,
        content: torch.Tensor,
        style_terms: Sequence[StyleTerm],
        plan: TilePlan,
        cancel: CancelToken | None = None,
    ) -> None:
        self.model, self.settings, self.plan = model, settings, plan
        self.style_terms = [term.in_dtype(model.dtype) for term in style_terms]
        self.layer_weights = settings.layer_weights()
        self.layers: Collection[str] = settings.layers
        self.cancel = cancel or CancelToken()
        self.iteration = 0
        self.content_target = _whole_feature_map(model, content, plan, settings.content_layer, settings, self.cancel)

    def set_iteration(self, iteration: int) -> None:
        """Move the tile grid; called once per optimiser iteration, so that evaluations within one
        iteration (L-BFGS's line search) see the same objective."""
        self.iteration = iteration

    def loss_and_grad(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, weighted terms [content, style, tv]) of ``image``, with ∂total/∂image added to image.grad."""
        s = self.settings
        height, width = image.shape[-2:]
        tiles = self.plan.tiles(height, width, self.iteration)
        terms = self.style_terms
        means = sum_grams(self.model, image.detach(), tiles, s, self.cancel, [term.guides for term in terms])
        style = image.new_zeros((), dtype=torch.float32)
        # Each tile's surrogates weight ⟨(Ĝ − Â)H, H⟩ so that their gradient is β·λ·w_l·∂E_l/∂F_core.
        pulls: list[tuple[StyleTerm, str, float, torch.Tensor]] = []
        for term, term_means in zip(terms, means):
            for layer, weight in self.layer_weights.items():
                total_weight = _total_weight(term.guides, layer, height, width)
                if total_weight == 0:
                    continue  # the region vanished at this layer's resolution
                channels = layer_channels(layer)
                difference = term_means[layer] - term.targets[layer]
                style += term.weight * weight * gram_error(difference, channels)
                coefficient = (s.effective_style_weight * term.weight * weight * style_normaliser(channels)
                               / total_weight)
                pulls.append((term, layer, coefficient, difference.to(self.model.dtype)))
        content_positions = layer_channels(s.content_layer) * feature_positions(height, width, s.content_layer)
        content = image.new_zeros((), dtype=torch.float32)
        for rows, cols in tiles:
            self.cancel.raise_if_cancelled()
            target = _global_core(self.content_target, rows, cols, s.content_layer)
            features = self.model(image[..., rows.context, cols.context], self.layers, s.pooling)
            surrogate = image.new_zeros((), dtype=torch.float32)
            for term, layer, coefficient, difference in pulls:
                core_features = _core(features[layer], rows, cols, layer)
                core_guide = None if term.guides is None else _global_core(term.guides[layer], rows, cols, layer)
                surrogate = surrogate + coefficient * gram_gradient_surrogate(core_features, difference, core_guide)
            core = _core(features[s.content_layer], rows, cols, s.content_layer)
            tile_content = content_loss(core, target, count=content_positions)
            (surrogate + s.content_weight * tile_content).backward()
            content += tile_content.detach()
        tv = image.new_zeros((), dtype=torch.float32)
        if s.tv_weight:
            tv_term = s.tv_weight * total_variation_loss(image)
            tv_term.backward()
            tv = tv_term.detach()
        terms = torch.stack([s.content_weight * content, s.effective_style_weight * style.detach(), tv])
        return terms.sum(), terms
