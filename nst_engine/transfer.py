"""The optimisation of Gatys et al. (2016): an image is optimised, not the network."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from . import colour
from .device import (
    fp32_arithmetic,
    memory_format,
    prepare_device,
    resolve_precision,
    select_device,
)
from .errors import InvalidSettingsError
from .geometry import fit_longest_side
from .image_ops import resize
from .layers import layer_downsampling
from .losses import (
    blend_grams,
    box_penalty,
    content_loss,
    gram_matrix,
    style_loss,
    total_variation_loss,
)
from .memory import LBFGS_HISTORY, available_bytes
from .progress import CancelToken, LossTerms, Progress, ProgressCallback
from .settings import Init, Optimizer, Precision, StyleSettings
from .tiling import StagePlan, TiledObjective, plan_stage, sum_grams
from .vgg import VGGFeatures
from .weights import load_vgg19_state_dict

log = logging.getLogger(__name__)

# The box penalty's weight is set from the first gradient of each stage: a pixel 1/255 out of range is
# pushed back about 1.6× as hard as the mean pull of the style and content terms.  Much stiffer
# penalties slow L-BFGS badly (×12 the weight: 9 % higher loss after 200 iterations in our tests);
# the stray pixels this allows are at most a few levels out and are clamped at the end.
_BOX_PENALTY_STRENGTH = 200.0


# Called once per iteration with (stage iteration, weighted loss terms, current image).
_Report = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class _Stage:
    index: int  # 1-based
    count: int
    height: int
    width: int
    iterations: int
    first_iteration: int  # overall index of this stage's first iteration, 1-based
    total_iterations: int


@runtime_checkable
class StageObjective(Protocol):
    """What the optimisers need of a stage's objective: :class:`Objective` (the whole image at once) or
    :class:`nst_engine.tiling.TiledObjective` (over tiles)."""

    def set_iteration(self, iteration: int) -> None:
        """Called once per optimiser iteration, before its evaluations."""

    def loss_and_grad(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, weighted terms [content, style, tv]) of ``image``, with ∂total/∂image added to image.grad."""


class Objective:
    """α·content + β·style + tv_weight·TV of an image at one stage, against fixed targets."""

    def __init__(
        self,
        model: VGGFeatures,
        settings: StyleSettings,
        content_target: torch.Tensor,
        target_grams: Mapping[str, torch.Tensor],
    ) -> None:
        self.model = model
        self.settings = settings
        self.content_target = content_target
        self.target_grams = target_grams
        self.layer_weights = settings.layer_weights()
        self.layers = settings.layers
        self.device = content_target.device
        self.bf16 = resolve_precision(settings.precision, self.device) is Precision.BF16

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, stacked weighted terms [content, style, tv]) for ``image``."""
        s = self.settings
        # bf16 covers the VGG passes only; the loss functions take the features up to float32.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            features = self.model(image, self.layers, s.pooling)
        content = s.content_weight * content_loss(features[s.content_layer], self.content_target)
        style = s.style_weight * style_loss(features, self.target_grams, self.layer_weights)
        tv = s.tv_weight * total_variation_loss(image) if s.tv_weight else torch.zeros_like(content)
        terms = torch.stack([content, style, tv])
        return terms.sum(), terms

    def set_iteration(self, iteration: int) -> None:
        """The whole image needs no per-iteration change."""

    def loss_and_grad(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, terms) like calling the objective, with ∂total/∂image added to image.grad."""
        total, terms = self(image)
        total.backward()
        return total.detach(), terms.detach()


class StyleTransfer:
    """VGG19 resident on one device, ready to stylise any number of images."""

    def __init__(self, model: VGGFeatures, device: torch.device) -> None:
        self.device = device
        prepare_device(device)
        self.model = model.to(device, memory_format=memory_format(device))

    @classmethod
    def from_weights(
        cls,
        weights_file: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        *,
        progress: bool = False,
    ) -> StyleTransfer:
        """Load VGG19 (see :func:`nst_engine.weights.load_vgg19_state_dict`) onto ``device`` (default: best available)."""
        chosen = select_device(device)
        return cls(VGGFeatures(load_vgg19_state_dict(weights_file, progress=progress)), chosen)

    def to_device(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` as float32 on this engine's device.

        Images stay in the standard layout (L-BFGS needs a flat view of its variable); the model's
        weights are channels_last, which makes every feature map from the first convolution on
        channels_last too.
        """
        return image.to(self.device, torch.float32).contiguous()

    @torch.no_grad()
    def style_grams(self, style: torch.Tensor, settings: StyleSettings) -> dict[str, torch.Tensor]:
        """Gram matrices A_l of one style image (1×3×H×W on this device) at the style layers."""
        features = self.model(style, settings.style_layers, settings.pooling)
        return {layer: gram_matrix(features[layer]) for layer in settings.style_layers}

    def stylize(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        settings: StyleSettings = StyleSettings(),
        *,
        init_image: torch.Tensor | None = None,
        on_progress: ProgressCallback | None = None,
        preview_every: int = 0,
        cancel: CancelToken | None = None,
        memory_budget: int | None = None,
        style_keys: Sequence[Hashable] | None = None,
        gram_cache: MutableMapping[Hashable, dict[str, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """Stylise ``content`` with ``styles``; all images are 3×H×W float32 sRGB in [0, 1].

        Returns a 3×H×W float32 CPU tensor whose longest side is ``settings.size`` (or the content's own
        size when that is 0).  ``on_progress`` is called once per iteration; every ``preview_every``
        iterations (and at each stage's end) its record carries the current image.  Raises
        CancelledError within one objective evaluation of ``cancel`` being set, InsufficientMemoryError
        before allocating when the estimate exceeds ``memory_budget`` (default: what the device has free).

        With ``style_keys`` (one hashable identity per style image, e.g. a hash of its pixels) and a
        ``gram_cache`` mapping, each style's Gram targets are looked up before its VGG pass and stored
        after it, keyed by the style, its resized size and the settings that shape the targets.
        """
        started = time.perf_counter()
        settings.validate(len(styles))
        _check_image(content, "content")
        for number, style in enumerate(styles, start=1):
            _check_image(style, f"style image {number}")
        if init_image is not None:
            _check_image(init_image, "init_image")
        elif settings.init is Init.IMAGE:
            raise InvalidSettingsError("init is 'image' but no init_image was given")
        cancel = cancel or CancelToken()

        content_h, content_w = content.shape[-2:]
        final_longest = settings.size or max(content_h, content_w)
        stage_dims = [fit_longest_side(content_h, content_w, s) for s in settings.stage_sizes(final_longest)]
        self._check_sizes(stage_dims, styles, settings)
        final_h, final_w = stage_dims[-1]
        budget = memory_budget if memory_budget is not None else available_bytes(self.device)
        # Before allocating anything: each stage whole, or in tiles, or a clear refusal.
        plans = [plan_stage(height, width, settings, budget) for height, width in stage_dims]

        content_rgb = self.to_device(content[None])
        content_work = colour.luminance(content_rgb) if settings.preserve_colors else content_rgb
        style_work = [self.to_device(style[None]) for style in styles]
        if settings.preserve_colors:
            style_work = [colour.match_luminance(colour.luminance(s), content_work) for s in style_work]

        image = self._initial_image(content_work, init_image, settings, *stage_dims[0])
        with fp32_arithmetic(self.device, resolve_precision(settings.precision, self.device)):
            for stage in _plan_stages(stage_dims, settings):
                cancel.raise_if_cancelled()
                height, width = stage.height, stage.width
                image = self._warm_start(image, content_work, height, width)
                plan = plans[stage.index - 1]
                objective = self._stage_objective(
                    content_work, style_work, settings, height, width,
                    None if settings.preserve_colors else style_keys,  # luminance targets depend on the content
                    gram_cache, plan, cancel,
                )
                to_rgb = self._preview_converter(content_rgb, settings, height, width)
                report = _reporter(stage, on_progress, preview_every, to_rgb, started)
                log.debug("Stage %d/%d at %d×%d%s", stage.index, stage.count, width, height,
                          f" in {plan.tiles.tile}-px tiles" if plan.tiles else "")
                if settings.optimizer is Optimizer.LBFGS:
                    image = _run_lbfgs(image, objective, stage.iterations, report, cancel, plan.lbfgs_history)
                else:
                    image = _run_adam(image, objective, stage.iterations, settings.learning_rate, report, cancel)

        result = image.clamp(0.0, 1.0)
        if settings.preserve_colors:
            result = colour.recombine(result, resize(content_rgb, final_h, final_w))
        return result[0].float().cpu().contiguous()

    def _check_sizes(self, stage_dims: list[tuple[int, int]], styles: Sequence[torch.Tensor], settings: StyleSettings) -> None:
        minimum = max(layer_downsampling(layer) for layer in settings.layers)
        smallest_h, smallest_w = stage_dims[0]
        if min(smallest_h, smallest_w) < minimum:
            raise InvalidSettingsError(
                f"size: the first stage would be {smallest_w}×{smallest_h} pixels, but the layers in use need "
                f"at least {minimum} pixels on each side; use fewer scales or a larger size"
            )
        for number, style in enumerate(styles, start=1):
            for height, width in stage_dims:
                style_h, style_w = fit_longest_side(style.shape[-2], style.shape[-1],
                                                    round(settings.style_scale * max(height, width)))
                if min(style_h, style_w) < minimum:
                    raise InvalidSettingsError(
                        f"style_scale: style image {number} would be {style_w}×{style_h} pixels at a "
                        f"{width}×{height} stage, but needs at least {minimum} on each side; raise style_scale"
                    )

    @staticmethod
    def _warm_start(previous: torch.Tensor, content: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The previous stage's result at this stage's size, with the content's detail band added back.

        Plain upsampling leaves a blurred image whose fine-scale Gram statistics are far from any
        target (on our test images its style loss was 27× that of the content image itself); adding the
        band that the coarse stage could not hold, content − up(down(content)), restores the fine
        structure for this stage to stylise.
        """
        if previous.shape[-2:] == (height, width):
            return previous
        stage_content = resize(content, height, width)
        coarse_content = resize(resize(stage_content, *previous.shape[-2:]), height, width)
        return (resize(previous, height, width) + stage_content - coarse_content).clamp(0.0, 1.0)

    def _initial_image(
        self, content: torch.Tensor, init_image: torch.Tensor | None, settings: StyleSettings, height: int, width: int
    ) -> torch.Tensor:
        if init_image is not None and settings.init is not Init.NOISE:
            start = self.to_device(init_image[None])
            if settings.preserve_colors:
                start = colour.luminance(start)
            return resize(start, height, width)
        if settings.init is Init.NOISE:
            # Drawn on the CPU so that a seed gives the same start on every device.
            generator = torch.Generator().manual_seed(settings.seed)
            noise = torch.rand((1, 3, height, width), generator=generator)
            if settings.preserve_colors:
                noise = noise[:, :1].expand(1, 3, height, width)
            return self.to_device(noise)
        return resize(content, height, width)

    def objective(
        self, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StyleSettings, height: int, width: int
    ) -> Objective:
        """The objective a run optimises at a height×width stage (images 3×H×W, as for :meth:`stylize`).

        Useful to judge any image by the same loss, e.g. in benchmarks; ignores ``preserve_colors``.
        """
        whole = self._stage_objective(
            self.to_device(content[None]), [self.to_device(style[None]) for style in styles], settings, height, width
        )
        assert isinstance(whole, Objective)  # no tile plan was given
        return whole

    @torch.no_grad()
    def _stage_objective(
        self, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StyleSettings, height: int, width: int,
        style_keys: Sequence[Hashable] | None = None,
        gram_cache: MutableMapping[Hashable, dict[str, torch.Tensor]] | None = None,
        plan: StagePlan = StagePlan(None),
        cancel: CancelToken | None = None,
    ) -> Objective | TiledObjective:
        stage_content = resize(content, height, width)
        tiles = plan.tiles
        style_longest = round(settings.style_scale * max(height, width))
        grams = []
        for index, style in enumerate(styles):
            style_size = fit_longest_side(style.shape[-2], style.shape[-1], style_longest)
            key = None
            if style_keys is not None and gram_cache is not None:
                precision = resolve_precision(settings.precision, self.device).value
                key = (style_keys[index], style_size, settings.pooling.value, settings.style_layers, str(self.device),
                       precision, tiles)
                if key in gram_cache:
                    grams.append(gram_cache[key])
                    continue
            style_image = resize(style, *style_size)
            if tiles is None:
                style_grams = self.style_grams(style_image, settings)
            else:
                style_grams = sum_grams(self.model, style_image, tiles.tiles(*style_size), settings, cancel)
            if key is not None:
                gram_cache[key] = style_grams
            grams.append(style_grams)
        target_grams = blend_grams(grams, settings.blend_weights(len(styles)))
        if tiles is not None:
            return TiledObjective(self.model, settings, stage_content, target_grams, tiles, cancel)
        content_target = self.model(stage_content, [settings.content_layer], settings.pooling)[settings.content_layer]
        return Objective(self.model, settings, content_target.detach().clone(), target_grams)

    def _preview_converter(
        self, content_rgb: torch.Tensor, settings: StyleSettings, height: int, width: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        if not settings.preserve_colors:
            return lambda image: image.detach().clamp(0.0, 1.0)
        stage_content = resize(content_rgb, height, width)
        return lambda image: colour.recombine(image.detach(), stage_content)


def _plan_stages(stage_dims: list[tuple[int, int]], settings: StyleSettings) -> list[_Stage]:
    iterations = settings.stage_iterations(len(stage_dims))
    return [
        _Stage(index, len(stage_dims), height, width, iterations[index - 1],
               first_iteration=sum(iterations[: index - 1]) + 1, total_iterations=sum(iterations))
        for index, (height, width) in enumerate(stage_dims, start=1)
    ]


def _reporter(
    stage: _Stage, on_progress: ProgressCallback | None, preview_every: int,
    to_rgb: Callable[[torch.Tensor], torch.Tensor], started: float,
) -> _Report:
    """The per-iteration report of one stage: a Progress record, with the image when one is due."""

    def report(iteration: int, terms: torch.Tensor, current: torch.Tensor) -> None:
        if on_progress is None:
            return
        content_term, style_term, tv_term = terms.tolist()
        want_image = iteration == stage.iterations or (preview_every and iteration % preview_every == 0)
        on_progress(Progress(
            stage=stage.index, stages=stage.count, width=stage.width, height=stage.height,
            stage_iteration=iteration, stage_iterations=stage.iterations,
            iteration=stage.first_iteration + iteration - 1, total_iterations=stage.total_iterations,
            losses=LossTerms(content_term, style_term, tv_term, content_term + style_term + tv_term),
            elapsed_s=time.perf_counter() - started,
            image=to_rgb(current)[0].float().cpu() if want_image else None,
        ))

    return report


def _check_image(image: object, name: str) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InvalidSettingsError(f"{name} must be a 3×H×W RGB tensor, got {shape}")
    if not image.is_floating_point():
        raise InvalidSettingsError(f"{name} must hold floating-point values in [0, 1], got {image.dtype}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise InvalidSettingsError(f"{name} is empty")
    if not torch.isfinite(image).all():
        raise InvalidSettingsError(f"{name} holds NaN or infinite values")


def _run_lbfgs(
    start: torch.Tensor, objective: StageObjective, iterations: int, report: _Report, cancel: CancelToken,
    history: int = LBFGS_HISTORY,
) -> torch.Tensor:
    image = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [image], lr=1.0, max_iter=iterations, max_eval=2 * iterations, history_size=history,
        tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
    )
    box_weight: float | None = None
    reported = 0
    last_terms = torch.zeros(3)

    def closure() -> torch.Tensor:
        nonlocal box_weight, reported, last_terms
        cancel.raise_if_cancelled()
        iteration = optimizer.state[image].get("n_iter", 0)
        objective.set_iteration(iteration)
        image.grad = None
        loss, terms = objective.loss_and_grad(image)
        if box_weight is None:
            # The start lies inside [0, 1], so the penalty and its gradient are zero here: setting its
            # weight now leaves the objective the optimiser sees unchanged.
            box_weight = _BOX_PENALTY_STRENGTH * image.grad.abs().mean().item()
        else:
            penalty = box_weight * box_penalty(image)
            penalty.backward()
            loss = loss + penalty.detach()
        last_terms = terms
        if iteration > reported:
            reported = iteration
            report(iteration, last_terms, image)
        return loss

    optimizer.step(closure)
    if reported < iterations:  # stopped early (evaluation budget or convergence): the stage is done
        report(iterations, last_terms, image)
    return image.detach().clamp_(0.0, 1.0)


def _run_adam(
    start: torch.Tensor, objective: StageObjective, iterations: int, learning_rate: float,
    report: _Report, cancel: CancelToken,
) -> torch.Tensor:
    image = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=learning_rate)
    for iteration in range(1, iterations + 1):
        cancel.raise_if_cancelled()
        objective.set_iteration(iteration)
        optimizer.zero_grad(set_to_none=True)
        _total, terms = objective.loss_and_grad(image)
        optimizer.step()
        with torch.no_grad():
            image.clamp_(0.0, 1.0)  # projected gradient descent: harmless for Adam, unlike L-BFGS
        report(iteration, terms, image)
    return image.detach()
