"""Animations: the frames of a sequence stylised in order and consistently (Ruder, Dosovitskiy, Brox,
"Artistic style transfer for videos", GCPR 2016).  The first frame runs as a still image would; each later
frame starts from the previous result moved along the optical flow, runs the final stage alone, and its
objective gains a temporal term (nst_engine.temporal): to the previous result, or with long-term
consistency to the results of several earlier frames, each pixel to the nearest one where it is reliable.
The engine's own steps (plan, style inputs, stages) are StyleTransfer's; this module only chains them
frame to frame."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, MutableMapping, Sequence, Sized
from dataclasses import dataclass

import torch

from .device import fp32_arithmetic, resolve_precision
from .errors import InvalidSettingsError
from .image_ops import resize
from .planning import JobPlan, Stage
from .progress import CancelToken, ProgressCallback
from .settings import (
    DEFAULT_FRAME_SHARE,
    DEFAULT_TEMPORAL_WEIGHT,
    MAX_ITERATIONS,
    MAX_WEIGHT,
    Colors,
    Init,
    StyleSettings,
)
from .temporal import long_term_weights, motion_between, temporal_loss, warp
from .transfer import (  # the engine's own steps, which this module chains
    _DEFAULT_SETTINGS,
    StageObjective,
    StyleTransfer,
    _check_image,
    _check_styles,
    _finish,
    _Reporting,
    _StyleInputs,
)

__all__ = ["DEFAULT_FRAME_SHARE", "DEFAULT_TEMPORAL_FRAMES", "DEFAULT_TEMPORAL_WEIGHT", "TemporalObjective",
           "TemporalTarget", "stylize_sequence"]

# The earlier frames t−j whose results a frame is tied to.  Ruder et al.'s long-term consistency uses
# (1, 2, 4); the previous frame alone is the default because with DIS flow the long-term terms did not pay
# in benchmarks/temporal_consistency.py: a region uncovered again differed less from its look before the
# occlusion, but the frame-to-frame error rose, since the flow check misses occlusions by a fast occluder
# over several frames (docs/animation.md).
DEFAULT_TEMPORAL_FRAMES: tuple[int, ...] = (1,)
MAX_TEMPORAL_GAP = 16


@dataclass(frozen=True)
class TemporalTarget:
    """An earlier frame's result moved into this frame (ω, 1×3×H×W) and its weight per pixel (c, H×W)."""

    warped: torch.Tensor
    reliable: torch.Tensor


class TemporalObjective:
    """A stage's objective plus Ruder et al.'s temporal term, λ·Σ_j mean(c_j·(x − ω_j)²): ω_j is an earlier
    frame's result moved into this frame, c_j where that may be trusted (nst_engine.temporal; with
    long-term consistency the c_j do not overlap).  The term is per pixel, so it is added whole to either
    objective, the tiled one included; its weighted value is the fourth of the terms returned."""

    def __init__(self, inner: StageObjective, targets: Sequence[TemporalTarget], weight: float) -> None:
        self.inner = inner
        self.targets = [TemporalTarget(target.warped.detach(), target.reliable) for target in targets]
        self.weight = weight

    def set_iteration(self, iteration: int) -> None:
        self.inner.set_iteration(iteration)

    def loss_and_grad(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(total, weighted terms [content, style, tv, temporal]), with ∂total/∂image added to image.grad."""
        total, terms = self.inner.loss_and_grad(image)
        term = self.weight * sum((temporal_loss(image, target.warped, target.reliable) for target in self.targets),
                                 torch.zeros((), device=image.device))
        term.backward()
        term = term.detach()
        return total + term, torch.cat([terms, term[None]])


@dataclass(frozen=True)
class _Options:
    temporal_weight: float
    temporal_frames: tuple[int, ...]
    frame_iterations: int
    memory_budget: int | None
    style_keys: Sequence[Hashable]
    gram_cache: MutableMapping[Hashable, dict[str, torch.Tensor]]
    style_image_masks: Sequence[torch.Tensor | None] | None


@dataclass(frozen=True)
class _Start:
    """What the first frame of a sequence settles for all of them."""

    shape: tuple[int, ...]
    job: JobPlan
    inputs: _StyleInputs
    later_stage: Stage  # the final stage alone, with the later frames' iterations
    temporal_lambda: float


@dataclass(frozen=True)
class _Previous:
    content: torch.Tensor  # the frame at the output size, 1×3×H×W
    result: torch.Tensor  # its working result (before colours are recombined), 1×3×H×W on the device


def stylize_sequence(
    engine: StyleTransfer,
    frames: Iterable[torch.Tensor],
    styles: Sequence[torch.Tensor],
    settings: StyleSettings = _DEFAULT_SETTINGS,
    *,
    temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT,
    temporal_frames: Sequence[int] = DEFAULT_TEMPORAL_FRAMES,
    frame_iterations: int = 0,
    frame_count: int | None = None,
    on_progress: ProgressCallback | None = None,
    preview_every: int = 0,
    cancel: CancelToken | None = None,
    memory_budget: int | None = None,
    style_keys: Sequence[Hashable] | None = None,
    gram_cache: MutableMapping[Hashable, dict[str, torch.Tensor]] | None = None,
    style_image_masks: Sequence[torch.Tensor | None] | None = None,
) -> Iterator[torch.Tensor]:
    """Stylise the frames of an animation in order, consistently; yields each frame's result (as
    :meth:`StyleTransfer.stylize` returns it) as soon as it is done.

    ``frames``: 3×H×W float32 sRGB images in [0, 1], all of one size; any iterable, read one frame
    at a time (``frame_count``, default ``len(frames)`` where it has one, is only for progress).
    The style targets are computed once for the whole sequence; with ``colors`` other than
    ``style`` the styles' colours are matched to the *first* frame's and kept, so that they do not
    change from frame to frame.

    The first frame runs as ``stylize`` runs it.  With ``temporal_weight`` > 0 each later frame
    starts from the previous result moved along the optical flow between the two frames, runs the
    final stage alone for ``frame_iterations`` iterations (0: DEFAULT_FRAME_SHARE of
    ``settings.iterations``), and adds the temporal term λ·mean(c·(x − ω)²) to its objective: ω is
    the moved previous result, c Ruder et al.'s reliability mask (nst_engine.temporal).
    ``temporal_frames`` (distinct gaps j from 1 to MAX_TEMPORAL_GAP, 1 among them) adds Ruder et al.'s
    long-term consistency: the term is summed over the results of frames t−j, each moved by the flow
    computed directly between frames t and t−j, with the long-term weights c_long that tie each pixel to
    the nearest of those frames where it is reliable, and starts each pixel from that frame's result.
    The weight is relative: a pixel that has drifted by d from ω is pulled back with ``temporal_weight``·d
    times the mean pull of the style and content terms on the first frame's content image (λ is
    set from that mean, measured once), so that its meaning does not depend on the VGG weights,
    the image size or the style weight.  ``temporal_weight`` 0 stylises every frame independently
    (each from its own start, every stage, ``settings.iterations``).

    Progress records carry ``frame`` and ``frames``; their stage and iteration counts are the
    frame's own.  CancelledError (a frame cancelled while it ran yields nothing), InsufficientMemoryError
    and InvalidSettingsError (a frame of another size, say) end the sequence where they happen.  Settings
    and styles are checked when this is called, each frame when it is reached.
    """
    settings.validate(len(styles))
    _check_styles(styles, style_image_masks)
    if settings.init is Init.IMAGE:
        raise InvalidSettingsError("init 'image' is not available for a sequence: use 'content' or 'noise'")
    if not math.isfinite(temporal_weight) or not 0 <= temporal_weight <= MAX_WEIGHT:
        raise InvalidSettingsError(f"temporal_weight must be a finite number from 0 to {MAX_WEIGHT:g}, "
                                   f"got {temporal_weight}")
    if isinstance(frame_iterations, bool) or not 0 <= frame_iterations <= MAX_ITERATIONS:
        raise InvalidSettingsError(f"frame_iterations must be an integer from 0 to {MAX_ITERATIONS}, "
                                   f"got {frame_iterations}")
    gaps = _temporal_gaps(temporal_frames)
    count = frame_count if frame_count is not None else (len(frames) if isinstance(frames, Sized) else 0)
    # The targets are the same for every frame: through the caller's cache when they are only the
    # styles', else through one of the sequence's own.
    shared = settings.colors is Colors.STYLE and style_keys is not None and gram_cache is not None
    keys = style_keys if shared else [("sequence style", index) for index in range(len(styles))]
    cache: MutableMapping[Hashable, dict[str, torch.Tensor]] = gram_cache if shared else {}
    later = frame_iterations or max(1, round(settings.iterations * DEFAULT_FRAME_SHARE))
    options = _Options(temporal_weight, gaps, later, memory_budget, keys, cache, style_image_masks)
    return _frames(engine, iter(frames), styles, settings, options, count, on_progress, preview_every,
                   cancel or CancelToken())


def _temporal_gaps(temporal_frames: Sequence[int]) -> tuple[int, ...]:
    """The gaps j of ``temporal_frames``, nearest first, checked."""
    whole = all(isinstance(gap, int) and not isinstance(gap, bool) and 1 <= gap <= MAX_TEMPORAL_GAP
                for gap in temporal_frames)
    gaps = tuple(sorted(set(temporal_frames))) if whole else ()
    if len(gaps) != len(temporal_frames) or 1 not in gaps:
        raise InvalidSettingsError(f"temporal_frames must be distinct integers from 1 to {MAX_TEMPORAL_GAP}, 1 among "
                                   f"them, got {list(temporal_frames)}")
    return gaps


def _temporal_targets(history: Sequence[_Previous], frame: torch.Tensor, gaps: Sequence[int],
                      to_device: Callable[[torch.Tensor], torch.Tensor]) -> list[TemporalTarget]:
    """The results of frames t−j (``history``, oldest first, the previous frame last) moved into ``frame``
    (1×3×H×W) by the flow between the two frames, with Ruder et al.'s long-term weights; nearest first."""
    earlier = [history[-gap] for gap in gaps if gap <= len(history)]
    motions = [motion_between(previous.content, frame) for previous in earlier]
    weights = long_term_weights([motion.reliable for motion in motions])
    return [TemporalTarget(warp(previous.result, motion.flow), to_device(weight))
            for previous, motion, weight in zip(earlier, motions, weights)]


def _temporal_start(targets: Sequence[TemporalTarget]) -> torch.Tensor:
    """Where a later frame starts: each pixel from the earlier result its temporal term ties it to, the
    previous one where none does.  With the previous frame alone this is the paper's start.  With long-term
    consistency the paper starts from the previous result everywhere, with 1000 iterations a frame to pull a
    pixel uncovered again back from whatever the flow dragged over it; our later frames run a few, so they
    start where the term pulls (on the benchmark's reveal sequence the two starts measured alike)."""
    image = targets[0].warped
    for target in targets[1:]:
        image = image + target.reliable * (target.warped - image)
    return image


def _frames(
    engine: StyleTransfer, frames: Iterator[torch.Tensor], styles: Sequence[torch.Tensor], settings: StyleSettings,
    options: _Options, count: int, on_progress: ProgressCallback | None, preview_every: int, cancel: CancelToken,
) -> Iterator[torch.Tensor]:
    first: _Start | None = None
    history: deque[_Previous] = deque(maxlen=max(options.temporal_frames))
    for number, frame in enumerate(frames, start=1):
        started = time.perf_counter()
        cancel.raise_if_cancelled()
        _check_image(frame, f"frame {number}")
        content_rgb, content_work = engine._content_inputs(frame, settings)
        if first is None:
            first = _start(engine, frame, content_rgb, content_work, styles, settings, options, cancel)
        elif frame.shape != first.shape:
            raise InvalidSettingsError(
                f"frame {number} is {frame.shape[-1]}×{frame.shape[-2]} pixels, but the first frame is "
                f"{first.shape[-1]}×{first.shape[-2]}: every frame of a sequence must have one size")
        final = first.job.final
        frame_out = resize(content_rgb, final.height, final.width)
        reporting = _Reporting(on_progress, preview_every, started, number, count)
        if not history or not options.temporal_weight:
            stages = first.job.stages
            image = engine._initial_image(content_work, None, settings, stages[0].height, stages[0].width)
            final_term = None
        else:
            stages = (first.later_stage,)
            targets = _temporal_targets(history, frame_out, options.temporal_frames, engine.to_device)
            image = _temporal_start(targets)
            final_term = functools.partial(TemporalObjective, targets=targets, weight=first.temporal_lambda)
        image = engine._run_stages(image, stages, content_rgb, content_work, first.inputs, settings, cancel,
                                   reporting, final_term)
        # The optimiser may end a stage without another look at the token (its evaluation budget spent):
        # a cancel asked for during the frame still ends the sequence before its result.
        cancel.raise_if_cancelled()
        history.append(_Previous(frame_out, image))
        yield _finish(image, content_rgb, settings)


def _start(
    engine: StyleTransfer, frame: torch.Tensor, content_rgb: torch.Tensor, content_work: torch.Tensor,
    styles: Sequence[torch.Tensor], settings: StyleSettings, options: _Options, cancel: CancelToken,
) -> _Start:
    """What every frame of a sequence shares, from its first frame: the plan, the style inputs, the
    later frames' stage and the temporal term's λ."""
    job = engine._plan(frame, styles, settings, options.memory_budget)
    inputs = engine._style_inputs(styles, options.style_image_masks, None, content_rgb, content_work, settings,
                                  options.style_keys, options.gram_cache)
    final = job.final
    later = dataclasses.replace(final, index=1, count=1, iterations=options.frame_iterations, first_iteration=1,
                                total_iterations=options.frame_iterations)
    temporal_lambda = 0.0
    if options.temporal_weight:
        pull = _mean_pull(engine, content_work, inputs, settings, final, cancel)
        # ∂/∂x of λ·mean(c·(x − ω)²) is 2λ·c·(x − ω)/n over n values: λ = weight·pull·n/2 makes it
        # weight·pull·c·(x − ω).
        values = 3 * final.height * final.width
        temporal_lambda = options.temporal_weight * pull * values / 2.0
    return _Start(tuple(frame.shape), job, inputs, later, temporal_lambda)


def _mean_pull(engine: StyleTransfer, content_work: torch.Tensor, inputs: _StyleInputs, settings: StyleSettings,
               stage: Stage, cancel: CancelToken) -> float:
    """mean |∂(content + style + tv)/∂x| at the content image itself at ``stage``'s size: how hard the
    style pulls on a frame not yet stylised."""
    with fp32_arithmetic(engine.device, resolve_precision(settings.precision, engine.device), cancel):
        assert stage.plan is not None  # require_runnable
        objective = engine._stage_objective(
            content_work, inputs.styles, settings, stage.height, stage.width, inputs.keys, inputs.cache,
            stage.plan, cancel, inputs.masks, inputs.regions)
        image = resize(content_work, stage.height, stage.width).detach().clone().requires_grad_(True)
        objective.set_iteration(0)
        objective.loss_and_grad(image)
        assert image.grad is not None
        return image.grad.abs().mean().item()
