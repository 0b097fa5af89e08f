"""The optimisation of Gatys et al. (2016): an image is optimised, not the network."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from . import colour
from .device import (
    compute_dtype,
    fp32_arithmetic,
    memory_format,
    prepare_device,
    resolve_precision,
    select_device,
)
from .errors import InvalidSettingsError
from .geometry import style_size_at
from .guides import LayerGuides, check_masks, guides_at_layers, resize_mask
from .image_ops import resize
from .layers import layer_downsampling
from .losses import (
    StyleTerm,
    blend_grams,
    box_penalty,
    content_loss,
    mean_gram,
    style_loss,
    total_variation_loss,
)
from .memory import LBFGS_HISTORY, arithmetic_for, available_bytes
from .planning import JobPlan, Stage, plan_job
from .progress import CancelToken, LossTerms, Progress, ProgressCallback
from .settings import Colors, Init, Optimizer, Precision, StyleSettings
from .tiling import StagePlan, TiledObjective, TilePlan, sum_grams
from .vgg import VGGFeatures
from .weights import load_vgg19_state_dict

log = logging.getLogger(__name__)

# The box penalty's weight is set from the first gradient of each stage: a pixel 1/255 out of range is
# pushed back about 1.6× as hard as the mean pull of the style and content terms.  Much stiffer
# penalties slow L-BFGS badly (×12 the weight: 9 % higher loss after 200 iterations in our tests);
# the stray pixels this allows are at most a few levels out and are clamped at the end.
_BOX_PENALTY_STRENGTH = 200.0

_DEFAULT_SETTINGS = StyleSettings()
_WHOLE_STAGE = StagePlan(None)  # a stage run whole, with the full L-BFGS history


# Called once per iteration with (stage iteration, weighted loss terms, current image).
_Report = Callable[[int, torch.Tensor, torch.Tensor], None]


@runtime_checkable
class StageObjective(Protocol):
    """What the optimisers need of a stage's objective: :class:`Objective` (the whole image at once) or
    :class:`nst_engine.tiling.TiledObjective` (over tiles)."""

    def set_iteration(self, iteration: int) -> None:
        """Called once per optimiser iteration, before its evaluations."""

    def loss_and_grad(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, weighted terms [content, style, tv]) of ``image``, with ∂total/∂image added to image.grad."""


class Objective:
    """α·content + β·style + tv_weight·TV of an image at one stage, against fixed targets.

    The VGG passes run in the ``model``'s dtype (see :meth:`StyleTransfer.model_for`); the image, the
    targets, the Gram matrices and the losses are float32 whatever it is.
    """

    def __init__(
        self,
        model: VGGFeatures,
        settings: StyleSettings,
        content_target: torch.Tensor,
        style_terms: Sequence[StyleTerm],
    ) -> None:
        self.model = model
        self.settings = settings
        self.content_target = content_target.float()
        self.style_terms = [term.in_dtype(model.dtype) for term in style_terms]
        self.layer_weights = settings.layer_weights()
        self.layers = settings.layers
        self.device = content_target.device

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, stacked weighted terms [content, style, tv]) for ``image``."""
        s = self.settings
        features = self.model(image, self.layers, s.pooling)
        content = s.content_weight * content_loss(features[s.content_layer], self.content_target)
        style = s.effective_style_weight * style_loss(features, self.style_terms, self.layer_weights)
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


@dataclass(frozen=True)
class _StyleInputs:
    """What a run's objectives compare the image with, the content aside."""

    styles: list[torch.Tensor]  # 1×3×H×W on the device, in the colours the optimisation sees
    masks: list[torch.Tensor | None]  # per style image: where its statistics are taken
    regions: list[torch.Tensor | None] | None  # per style image: where in the output it applies
    keys: Sequence[Hashable] | None  # with ``cache``: each style's identity in the Gram-target cache
    cache: MutableMapping[Hashable, dict[str, torch.Tensor]] | None


@dataclass(frozen=True)
class _Reporting:
    """Where a run's progress goes and what its records say about the frame."""

    on_progress: ProgressCallback | None
    preview_every: int
    started: float  # perf_counter at the start of the run (of this frame, in a sequence)
    frame: int = 1
    frames: int = 1


def _finish(image: torch.Tensor, content_rgb: torch.Tensor, settings: StyleSettings) -> torch.Tensor:
    """The result as a 3×H×W float32 CPU tensor: clamped, and with the content's colours back where
    only the luminance was stylised."""
    result = image.clamp(0.0, 1.0)
    if settings.colors is Colors.LUMINANCE:
        result = colour.recombine(result, resize(content_rgb, *result.shape[-2:]))
    return result[0].float().cpu().contiguous()


def _check_styles(styles: Sequence[torch.Tensor], style_image_masks: Sequence[torch.Tensor | None] | None) -> None:
    for number, style in enumerate(styles, start=1):
        _check_image(style, f"style image {number}")
    check_masks(style_image_masks, styles, "style image mask")


class StyleTransfer:
    """VGG19 resident on one device, ready to stylise any number of images."""

    def __init__(self, model: VGGFeatures, device: torch.device) -> None:
        self.device = device
        prepare_device(device)
        self.model = model.to(device, memory_format=memory_format(device))
        self._models: dict[torch.dtype, VGGFeatures] = {self.model.dtype: self.model}

    def model_for(self, precision: Precision) -> VGGFeatures:
        """VGG19 in the dtype that ``precision`` computes in on this device: the float32 model, or a
        copy converted once per engine (bf16, in the same channels_last layout) and kept."""
        dtype = compute_dtype(resolve_precision(precision, self.device))
        if dtype not in self._models:
            self._models[dtype] = self.model.converted(dtype)
        return self._models[dtype]

    @classmethod
    def from_weights(
        cls,
        weights_file: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        *,
        progress: bool = False,
    ) -> StyleTransfer:
        """Load VGG19 (see :func:`nst_engine.weights.load_vgg19_state_dict`) onto ``device`` (default: best
        available)."""
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
    def style_grams(self, style: torch.Tensor, settings: StyleSettings,
                    guides: LayerGuides | None = None) -> dict[str, torch.Tensor]:
        """Per-position Gram matrices Â_l of one style image (1×3×H×W on this device) at the style
        layers, over the region its ``guides`` give (see nst_engine.guides), or all of it, from VGG
        passes in ``settings.precision``."""
        model = self.model_for(settings.precision)
        guides = None if guides is None else {layer: guide.to(model.dtype) for layer, guide in guides.items()}
        features = model(style, settings.style_layers, settings.pooling)
        return {layer: mean_gram(features[layer], None if guides is None else guides[layer])
                for layer in settings.style_layers}

    def stylize(
        self,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        settings: StyleSettings = _DEFAULT_SETTINGS,
        *,
        init_image: torch.Tensor | None = None,
        on_progress: ProgressCallback | None = None,
        preview_every: int = 0,
        cancel: CancelToken | None = None,
        memory_budget: int | None = None,
        style_keys: Sequence[Hashable] | None = None,
        gram_cache: MutableMapping[Hashable, dict[str, torch.Tensor]] | None = None,
        style_image_masks: Sequence[torch.Tensor | None] | None = None,
        regions: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Stylise ``content`` with ``styles``; all images are 3×H×W float32 sRGB in [0, 1].

        Returns a 3×H×W float32 CPU tensor whose longest side is ``settings.size`` (or the content's own
        size when that is 0).  ``on_progress`` is called once per iteration; every ``preview_every``
        iterations (and at each stage's end) its record carries the current image.  Raises
        CancelledError within one objective evaluation of ``cancel`` being set, InsufficientMemoryError
        before allocating when the estimate exceeds ``memory_budget`` (default: what the device has free)
        or ``settings.memory_budget_mib``, whichever is smaller.

        With ``style_keys`` (one hashable identity per style image, e.g. a hash of its pixels) and a
        ``gram_cache`` mapping, each style's Gram targets are looked up before its VGG pass and stored
        after it, keyed by the style, its resized size and the settings that shape the targets.

        Spatial control (Gatys et al. 2017): ``style_image_masks`` gives, per style image, an H×W map in [0, 1]
        of where its statistics are taken (e.g. its alpha; None: everywhere), and ``regions``, per style
        image, a map at the content's size of where in the output that style applies (None: everywhere).
        With regions, each style is matched within its own region instead of blending all styles'
        statistics (nst_engine.guides).
        """
        started = time.perf_counter()
        settings.validate(len(styles))
        _check_image(content, "content")
        _check_styles(styles, style_image_masks)
        check_masks(regions, [content] * len(styles), "region")
        if regions is not None and settings.style_layer_sources is not None:
            raise InvalidSettingsError("style_layer_sources and regions cannot be combined: choose one kind of control")
        if init_image is not None:
            _check_image(init_image, "init_image")
        elif settings.init is Init.IMAGE:
            raise InvalidSettingsError("init is 'image' but no init_image was given")
        cancel = cancel or CancelToken()

        job = self._plan(content, styles, settings, memory_budget)
        content_rgb, content_work = self._content_inputs(content, settings)
        # With the content's colours, the style targets depend on the content too: no shared cache then.
        shared = settings.colors is Colors.STYLE
        inputs = self._style_inputs(styles, style_image_masks, regions, content_rgb, content_work, settings,
                                    style_keys if shared else None, gram_cache if shared else None)
        image = self._initial_image(content_work, init_image, settings, job.stages[0].height, job.stages[0].width)
        image = self._run_stages(image, job.stages, content_rgb, content_work, inputs, settings, cancel,
                                 _Reporting(on_progress, preview_every, started))
        return _finish(image, content_rgb, settings)

    def _plan(self, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StyleSettings,
              memory_budget: int | None) -> JobPlan:
        """The job's plan, checked before anything is allocated: each stage whole, or in tiles, or a clear
        refusal."""
        budget = settings.memory_budget(memory_budget if memory_budget is not None else available_bytes(self.device))
        job = plan_job(*content.shape[-2:], [tuple(style.shape[-2:]) for style in styles], settings, budget,
                       arithmetic_for(settings.precision, self.device))
        self._check_sizes(job, settings)
        job.require_runnable()
        return job

    def _content_inputs(self, content: torch.Tensor, settings: StyleSettings) -> tuple[torch.Tensor, torch.Tensor]:
        """(the content as 1×3×H×W on the device, what the optimisation works on: it or its luminance)."""
        content_rgb = self.to_device(content[None])
        return content_rgb, colour.luminance(content_rgb) if settings.colors is Colors.LUMINANCE else content_rgb

    def _style_inputs(
        self, styles: Sequence[torch.Tensor], style_image_masks: Sequence[torch.Tensor | None] | None,
        regions: Sequence[torch.Tensor | None] | None, content_rgb: torch.Tensor, content_work: torch.Tensor,
        settings: StyleSettings, keys: Sequence[Hashable] | None,
        cache: MutableMapping[Hashable, dict[str, torch.Tensor]] | None,
    ) -> _StyleInputs:
        """The style images as the optimisation sees them (in the content's colours where ``colors`` asks),
        their masks and regions on the device, and where their targets are cached."""
        style_work = [self.to_device(style[None]) for style in styles]
        masks = list(style_image_masks) if style_image_masks is not None else [None] * len(styles)
        masks = [None if mask is None else self.to_device(mask) for mask in masks]
        if settings.colors is Colors.LUMINANCE:
            style_work = [colour.match_luminance(colour.luminance(s), content_work) for s in style_work]
        elif settings.colors is Colors.HISTOGRAM:
            style_work = [colour.match_colours(s, content_rgb, mask) for s, mask in zip(style_work, masks)]
        content_regions = None if regions is None else [None if r is None else self.to_device(r) for r in regions]
        return _StyleInputs(style_work, masks, content_regions, keys, cache)

    def _run_stages(
        self, image: torch.Tensor, stages: Sequence[Stage], content_rgb: torch.Tensor, content_work: torch.Tensor,
        inputs: _StyleInputs, settings: StyleSettings, cancel: CancelToken, reporting: _Reporting,
        final_term: Callable[[StageObjective], StageObjective] | None = None,
    ) -> torch.Tensor:
        """Optimise ``image`` through ``stages`` (the last stage's objective wrapped by ``final_term``, if
        given: an animation's temporal term); returns the working image, not yet clamped or recoloured
        (see :func:`_finish`)."""
        with fp32_arithmetic(self.device, resolve_precision(settings.precision, self.device), cancel):
            for stage in stages:
                cancel.raise_if_cancelled()
                height, width, plan = stage.height, stage.width, stage.plan
                assert plan is not None  # require_runnable
                image = self._warm_start(image, content_work, height, width)
                objective: StageObjective = self._stage_objective(
                    content_work, inputs.styles, settings, height, width, inputs.keys, inputs.cache, plan, cancel,
                    inputs.masks, inputs.regions,
                )
                if final_term is not None and stage is stages[-1]:
                    objective = final_term(objective)
                to_rgb = self._preview_converter(content_rgb, settings, height, width)
                report = _reporter(stage, reporting, to_rgb)
                log.debug("Stage %d/%d at %d×%d%s", stage.index, stage.count, width, height,
                          f" in {plan.tiles.tile}-px tiles" if plan.tiles else "")
                if settings.optimizer is Optimizer.LBFGS:
                    image = _run_lbfgs(image, objective, stage.iterations, report, cancel, plan.lbfgs_history)
                else:
                    image = _run_adam(image, objective, stage.iterations, settings.learning_rate, report, cancel)
        return image

    @staticmethod
    def _check_sizes(job: JobPlan, settings: StyleSettings) -> None:
        minimum = max(layer_downsampling(layer) for layer in settings.layers)
        first = job.stages[0]
        if min(first.height, first.width) < minimum:
            raise InvalidSettingsError(
                f"size: the first stage would be {first.width}×{first.height} pixels, but the layers in use need "
                f"at least {minimum} pixels on each side; use fewer scales or a larger size"
            )
        for stage in job.stages:
            for number, (style_h, style_w) in enumerate(stage.style_sizes, start=1):
                if min(style_h, style_w) < minimum:
                    raise InvalidSettingsError(
                        f"style_scale: style image {number} would be {style_w}×{style_h} pixels at a "
                        f"{stage.width}×{stage.height} stage, but needs at least {minimum} on each side; "
                        "raise style_scale"
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
        luminance_only = settings.colors is Colors.LUMINANCE
        if init_image is not None and settings.init is not Init.NOISE:
            start = self.to_device(init_image[None])
            if luminance_only:
                start = colour.luminance(start)
            return resize(start, height, width)
        if settings.init is Init.NOISE:
            # Drawn on the CPU so that a seed gives the same start on every device.
            generator = torch.Generator().manual_seed(settings.seed)
            noise = torch.rand((1, 3, height, width), generator=generator)
            if luminance_only:
                noise = noise[:, :1].expand(1, 3, height, width)
            return self.to_device(noise)
        return resize(content, height, width)

    def objective(
        self, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StyleSettings, height: int, width: int,
        *, style_image_masks: Sequence[torch.Tensor | None] | None = None,
        regions: Sequence[torch.Tensor | None] | None = None,
    ) -> Objective:
        """The objective a run optimises at a height×width stage (images and masks as for :meth:`stylize`).

        Useful to judge any image by the same loss, e.g. in benchmarks; ignores ``colors``.
        """
        whole = self._public_objective(content, styles, settings, height, width, style_image_masks, regions, None)
        assert isinstance(whole, Objective)  # no tile plan was given
        return whole

    def tiled_objective(
        self, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StyleSettings, height: int, width: int,
        tiles: TilePlan, *, style_image_masks: Sequence[torch.Tensor | None] | None = None,
        regions: Sequence[torch.Tensor | None] | None = None,
    ) -> TiledObjective:
        """The same objective as :meth:`objective`, evaluated over ``tiles`` as a run that does not fit
        in memory evaluates it."""
        tiled = self._public_objective(content, styles, settings, height, width, style_image_masks, regions, tiles)
        assert isinstance(tiled, TiledObjective)
        return tiled

    def _public_objective(
        self, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StyleSettings, height: int, width: int,
        style_image_masks: Sequence[torch.Tensor | None] | None, regions: Sequence[torch.Tensor | None] | None,
        tiles: TilePlan | None,
    ) -> Objective | TiledObjective:
        def on_device(masks: Sequence[torch.Tensor | None] | None) -> list[torch.Tensor | None] | None:
            return None if masks is None else [None if mask is None else self.to_device(mask) for mask in masks]

        return self._stage_objective(
            self.to_device(content[None]), [self.to_device(style[None]) for style in styles], settings, height, width,
            plan=StagePlan(tiles), style_image_masks=on_device(style_image_masks), regions=on_device(regions),
        )

    @torch.no_grad()
    def _stage_objective(
        self, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StyleSettings, height: int, width: int,
        style_keys: Sequence[Hashable] | None = None,
        gram_cache: MutableMapping[Hashable, dict[str, torch.Tensor]] | None = None,
        plan: StagePlan = _WHOLE_STAGE,
        cancel: CancelToken | None = None,
        style_image_masks: Sequence[torch.Tensor | None] | None = None,
        regions: Sequence[torch.Tensor | None] | None = None,
    ) -> Objective | TiledObjective:
        stage_content = resize(content, height, width)
        masks = list(style_image_masks) if style_image_masks is not None else [None] * len(styles)
        grams = [self._style_targets(style, mask, settings, height, width, plan, cancel,
                                     None if style_keys is None else style_keys[index], gram_cache)
                 for index, (style, mask) in enumerate(zip(styles, masks))]
        terms = _style_terms(grams, settings, regions, height, width)
        # The targets come from the same arithmetic as the image's features, so that the content
        # image's content loss is zero in every precision and a bf16 bias cancels in the style term.
        model = self.model_for(settings.precision)
        if plan.tiles is not None:
            return TiledObjective(model, settings, stage_content, terms, plan.tiles, cancel)
        content_target = model(stage_content, [settings.content_layer], settings.pooling)[settings.content_layer]
        return Objective(model, settings, content_target.to(torch.float32, copy=True), terms)

    def _style_targets(
        self, style: torch.Tensor, mask: torch.Tensor | None, settings: StyleSettings, height: int, width: int,
        plan: StagePlan, cancel: CancelToken | None, style_key: Hashable | None,
        gram_cache: MutableMapping[Hashable, dict[str, torch.Tensor]] | None,
    ) -> dict[str, torch.Tensor]:
        """One style image's per-position Gram targets at a height×width stage, from the cache if there."""
        style_size = style_size_at(*style.shape[-2:], settings.style_scale, height, width)
        style_mask = None if mask is None else resize_mask(mask, *style_size)
        key = None
        if style_key is not None and gram_cache is not None:
            precision = resolve_precision(settings.precision, self.device).value
            key = (style_key, _digest(style_mask), style_size, settings.pooling.value, settings.style_layers,
                   str(self.device), precision, plan.tiles)
            if key in gram_cache:
                return gram_cache[key]
        style_image = resize(style, *style_size)
        guides = None
        if style_mask is not None:
            # Masked-out pixels become the colour VGG's zero padding stands for (the ImageNet mean), so
            # that near a mask's edge the network sees what it sees at the edge of a cropped image.
            style_image = style_mask * style_image + (1.0 - style_mask) * self.model.mean
            guides = guides_at_layers(style_mask, settings.style_layers)
        if plan.tiles is None:
            targets = self.style_grams(style_image, settings, guides)
        else:
            targets = sum_grams(self.model_for(settings.precision), style_image, plan.tiles.tiles(*style_size),
                                settings, cancel, [guides])[0]
        if key is not None:
            gram_cache[key] = targets
        return targets

    def _preview_converter(
        self, content_rgb: torch.Tensor, settings: StyleSettings, height: int, width: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        if settings.colors is not Colors.LUMINANCE:
            return lambda image: image.detach().clamp(0.0, 1.0)
        stage_content = resize(content_rgb, height, width)
        return lambda image: colour.recombine(image.detach(), stage_content)


def _style_terms(
    grams: Sequence[Mapping[str, torch.Tensor]], settings: StyleSettings,
    regions: Sequence[torch.Tensor | None] | None, height: int, width: int,
) -> list[StyleTerm]:
    """What the output's Gram statistics are compared with at a height×width stage: the blend of all
    styles over the whole image; with scale control, each layer's from its chosen style; with regions,
    each style within its own region, weighted by its blend weight."""
    blend = settings.blend_weights(len(grams))
    if regions is None:
        if settings.style_layer_sources is None:
            return [StyleTerm(blend_grams(grams, blend))]
        sources = dict(zip(settings.style_layers, settings.style_layer_sources))
        return [StyleTerm({layer: grams[sources[layer] - 1][layer] for layer in settings.style_layers})]
    total = float(sum(blend))
    return [StyleTerm(targets, weight / total,
                      None if region is None
                      else guides_at_layers(resize_mask(region, height, width), settings.style_layers))
            for targets, weight, region in zip(grams, blend, regions) if weight > 0]


def _digest(mask: torch.Tensor | None) -> str | None:
    """Identity of a mask's values, for the style cache's key."""
    if mask is None:
        return None
    return hashlib.blake2b(mask.detach().float().cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()


def _reporter(stage: Stage, reporting: _Reporting, to_rgb: Callable[[torch.Tensor], torch.Tensor]) -> _Report:
    """The per-iteration report of one stage: a Progress record, with the image when one is due."""
    on_progress, preview_every = reporting.on_progress, reporting.preview_every

    def report(iteration: int, terms: torch.Tensor, current: torch.Tensor) -> None:
        if on_progress is None:
            return
        values = terms.tolist()
        temporal = values[3] if len(values) > 3 else 0.0
        want_image = iteration == stage.iterations or (preview_every and iteration % preview_every == 0)
        on_progress(Progress(
            stage=stage.index, stages=stage.count, width=stage.width, height=stage.height,
            stage_iteration=iteration, stage_iterations=stage.iterations,
            iteration=stage.first_iteration + iteration - 1, total_iterations=stage.total_iterations,
            losses=LossTerms(*values[:3], sum(values), temporal),
            elapsed_s=time.perf_counter() - reporting.started,
            image=to_rgb(current)[0].float().cpu() if want_image else None,
            frame=reporting.frame, frames=reporting.frames,
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
