"""Every parameter of a style transfer run, declared once: the engine, the daemon's wire format, the
command lines, the GIMP plug-in and the docs take each setting's default, range or choices and help
from here (see nst_engine.schema).  Torch-free: the daemon's client and the plug-in import it."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSettingsError
from .geometry import MIN_TILE, TILE_ALIGN
from .layers import Pooling
from .schema import Choice, FrontEnd, Setting, setting, settings_of

DEFAULT_CONTENT_LAYER = "relu4_2"
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

# Coarse-to-fine stages halve the size down to about this longest side (see StyleSettings.stage_sizes).
MIN_AUTO_STAGE_SIZE = 256
MAX_ITERATIONS = 100_000
MAX_SCALES = 8
MAX_SIZE = 16384  # longest side of an output or a tile
MAX_WEIGHT = 1e12
# Animations (nst_engine.sequence; measured with benchmarks/temporal_consistency.py, docs/animation.md): the
# temporal term's weight, relative to the style's mean pull on an unstylised frame, and the share of the first
# frame's iterations that each later frame runs, since it starts near its answer.
DEFAULT_TEMPORAL_WEIGHT = 0.5
DEFAULT_FRAME_SHARE = 0.25
MAX_STYLES = 15
MAX_SEED = 2**31 - 1  # the largest a GIMP integer argument holds
NEUTRAL_STRENGTH = 50.0  # the strength at which the style weight applies as given
STRENGTH_DOUBLING = 10.0  # strength points that double the effective style weight
MIN_MEMORY_BUDGET_MIB = 64
MAX_MEMORY_BUDGET_MIB = 1 << 21  # 2 TiB

_EVERYWHERE = (FrontEnd.CLI, FrontEnd.GIMP, FrontEnd.WIRE)
_CLI_AND_WIRE = (FrontEnd.CLI, FrontEnd.WIRE)


class Optimizer(str, enum.Enum):
    LBFGS = "lbfgs"
    ADAM = "adam"


class Init(str, enum.Enum):
    CONTENT = "content"
    NOISE = "noise"
    IMAGE = "image"


class Colors(str, enum.Enum):
    """Whose colours the result takes (colour control, Gatys et al. 2017, section 5)."""

    STYLE = "style"
    LUMINANCE = "luminance"  # stylise the luminance alone, keep the content's chrominance
    HISTOGRAM = "histogram"  # move each style image's colour distribution to the content's first


class Precision(str, enum.Enum):
    """Arithmetic of the VGG passes.  Gram matrices and losses are always accumulated in float32."""

    AUTO = "auto"  # the device's default: see nst_engine.device.resolve_precision
    FP32 = "fp32"
    TF32 = "tf32"
    BF16 = "bf16"


@dataclass(frozen=True)
class StyleSettings:
    """Parameters of one run.  Weights follow the paper's notation: α (content), β (style), w_l (layers).

    Default α and β.  The paper's α/β of 1e-3…1e-4 was tuned for its own VGG19, whose weights were
    rescaled so that every filter's mean activation is 1; torchvision's ImageNet weights are not
    rescaled, and the loss terms grow with the 2nd (content) and 4th (style) power of the activations,
    so that ratio does not carry over.  We map from the published implementations that use the same
    torchvision weights and ImageNet-normalised input, the PyTorch tutorial (content 1, style 1e6 on
    mean((F−P)²) and mean((G−A)²)/(N·M)²); jcjohnson/neural-style's defaults (content 5, style 100)
    use the same normalisation, but on Caffe's 0–255 weights.  In our terms their content term is
    2·(½·mean(F−P)²) and their style term per layer is (4/N_l²)·E_l, so at α = 1 they weight our
    five style layers by 1e6·2/N_l² ≈ 490, 120, 30, 7.6, 7.6 (geometric mean ≈ 40, i.e. β ≈ 200 with
    our equal w_l = 1/5).  We take β = 1000: equal w_l gives the low layers, which carry colour and
    fine texture, far less than those implementations do, and a result that barely changes is the
    worst default.  Both use 500–1000 L-BFGS iterations at 512 px; we use 500 per stage.

    Plain values (a choice's string, lists, integers for numbers) are turned into the fields' types on
    construction; :meth:`validate` names the first bad value.
    """

    content_weight: float = setting(
        1.0, "α, the weight of the content term", label="Content _weight",
        minimum=0.0, maximum=MAX_WEIGHT, front_ends=_EVERYWHERE)
    style_weight: float = setting(
        1000.0, "β, the weight of the style term at strength 50", label="Style weight at strength _50",
        minimum=0.0, maximum=MAX_WEIGHT, front_ends=_EVERYWHERE)
    strength: float = setting(
        NEUTRAL_STRENGTH, f"how strongly the style shows: {NEUTRAL_STRENGTH:g} is the balanced default; "
        f"each {STRENGTH_DOUBLING:g} more doubles the style's pull against the content, each {STRENGTH_DOUBLING:g} "
        "less halves it (it multiplies the style weight)", label="St_yle strength",
        minimum=0.0, maximum=100.0, front_ends=_EVERYWHERE)
    tv_weight: float = setting(
        0.0, "weight of total-variation smoothing", label="Total _variation",
        minimum=0.0, maximum=MAX_WEIGHT, front_ends=_EVERYWHERE)
    content_layer: str = setting(DEFAULT_CONTENT_LAYER, "the VGG19 layer whose features the content term compares")
    style_layers: tuple[str, ...] = setting(
        DEFAULT_STYLE_LAYERS, "the VGG19 layers whose Gram matrices the style term compares")
    style_layer_weights: tuple[float, ...] | None = setting(
        None, f"w_l, one weight per style layer, in the order of style_layers ({DEFAULT_STYLE_LAYERS[0]} … "
        f"{DEFAULT_STYLE_LAYERS[-1]})",
        minimum=0, maximum=MAX_WEIGHT, none_means="equal, 1/L each", front_ends=_CLI_AND_WIRE)
    style_blend_weights: tuple[float, ...] | None = setting(
        None, "one weight per style image, normalised to sum to 1", minimum=0, maximum=MAX_WEIGHT, none_means="equal",
        front_ends=_CLI_AND_WIRE)
    style_layer_sources: tuple[int, ...] | None = setting(
        None, "scale control: one style image number per style layer, whose statistics that layer takes "
        "(e.g. 1 1 1 2 2: fine texture from the first style, coarse structure from the second)",
        minimum=1, maximum=MAX_STYLES, none_means="every layer from the blend of all styles", front_ends=_CLI_AND_WIRE)
    style_scale: float = setting(
        1.0, "longest side of the style images relative to the content's, at each stage", label="S_tyle scale",
        minimum=0.01, maximum=100.0, front_ends=_EVERYWHERE)
    size: int = setting(
        512, "longest side of the output", unit="pixels", minimum=1, maximum=MAX_SIZE,
        zero_means="the content's own size", front_ends=_CLI_AND_WIRE)
    scales: int = setting(
        0, "coarse-to-fine stages, each twice the size of the one before", label="Nu_mber of stages",
        minimum=1, maximum=MAX_SCALES,
        zero_means=f"automatic: halve down to about {MIN_AUTO_STAGE_SIZE} px", front_ends=_EVERYWHERE)
    iterations: int = setting(
        500, "optimiser iterations at the final stage", label="_Iterations",
        minimum=1, maximum=MAX_ITERATIONS, front_ends=_EVERYWHERE)
    coarse_iterations: int = setting(
        0, "optimiser iterations at each coarser stage", label="Iterations, coarser stages (_0: same)",
        minimum=1, maximum=MAX_ITERATIONS, zero_means="as many as iterations", front_ends=_EVERYWHERE)
    optimizer: Optimizer = setting(
        Optimizer.LBFGS, "the optimiser", label="Optimi_zer", front_ends=_EVERYWHERE, choices=(
            Choice("lbfgs", "L-BFGS", "quasi-Newton, the paper's choice"),
            Choice("adam", "Adam", "first-order, steadier on huge images"),
        ))
    learning_rate: float = setting(
        0.02, "Adam's step size, in units of the [0, 1] pixel range", minimum=1e-6, maximum=10.0,
        front_ends=_CLI_AND_WIRE)
    init: Init = setting(
        Init.CONTENT, "the starting image", label="Start _from", front_ends=_EVERYWHERE, choices=(
            Choice("content", "Content", "the content image"),
            Choice("noise", "Noise", "white noise drawn from the seed, as in the paper"),
            Choice("image", "Image", "an image the caller supplies"),
        ))
    seed: int = setting(
        0, "seed of the noise start; the same inputs and seed on the CPU give identical output", label="S_eed",
        minimum=0, maximum=MAX_SEED, front_ends=_EVERYWHERE)
    colors: Colors = setting(
        Colors.STYLE, "whose colours the result takes", label="Colo_urs", front_ends=_EVERYWHERE, choices=(
            Choice("style", "The style's", "the style images' colours, as in the 2016 paper"),
            Choice("luminance", "The content's, by luminance",
                   "stylise the luminance alone and keep the content's colours"),
            Choice("histogram", "The content's, by colour matching",
                   "first move each style image's colours to the content's mean and covariance"),
        ))
    pooling: Pooling = setting(
        Pooling.MAX, "VGG19's pooling", front_ends=_CLI_AND_WIRE, choices=(
            Choice("max", "Max", "as VGG19 was trained"),
            Choice("avg", "Average", "Gatys et al. found it slightly more appealing"),
        ))
    precision: Precision = setting(
        Precision.AUTO, "arithmetic of the VGG passes (Gram matrices and losses are always float32)",
        label="Precision (fp32, tf32, bf1_6)", front_ends=_EVERYWHERE, choices=(
            Choice("auto", "Automatic", "tf32 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16 or AMX), "
                   "fp32 elsewhere"),
            Choice("fp32", "fp32", "IEEE float32 throughout"),
            Choice("tf32", "tf32", "convolutions and matrix products on TF32 tensor cores on CUDA; fp32 elsewhere"),
            Choice("bf16", "bf16", "VGG forward and backward passes in bfloat16, Gram matrices accumulated in float32; "
                   "slower than fp32 on CPUs without native bf16"),
        ))
    tile_size: int = setting(
        0, "run every stage in tiles of this side", unit="pixels", minimum=MIN_TILE, maximum=MAX_SIZE,
        multiple_of=TILE_ALIGN, zero_means="automatic: tiles only for a stage that does not fit in memory",
        front_ends=_CLI_AND_WIRE)
    memory_budget_mib: int = setting(
        0, "the most memory this run may use; stages that do not fit run in tiles", unit="MiB",
        label="Memory budget, MiB (_4096 = 4 GiB)", minimum=MIN_MEMORY_BUDGET_MIB, maximum=MAX_MEMORY_BUDGET_MIB,
        zero_means="what the device has free (within the daemon's or the command line's own budget)",
        front_ends=(FrontEnd.GIMP, FrontEnd.WIRE))

    def __post_init__(self) -> None:
        for item in SETTINGS.values():
            value = getattr(self, item.name)
            try:
                item.check(value)
            except InvalidSettingsError:
                continue  # left for validate() to name
            object.__setattr__(self, item.name, item.convert(value))

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> StyleSettings:
        """Settings from plain values (strings for the choices, lists for the weights), as sent over a
        wire or given on a command line; a bad name or value raises InvalidSettingsError naming it."""
        check_values(values)
        return cls(**values)

    def validate(self, style_count: int) -> None:
        """Raise InvalidSettingsError naming the first bad field."""
        for item in SETTINGS.values():
            item.check(getattr(self, item.name))
        if self.style_layer_weights is not None:
            _check_count(self.style_layer_weights, len(self.style_layers), "style_layer_weights", "style layer")
        if style_count < 1:
            raise InvalidSettingsError("at least one style image is needed")
        if self.style_blend_weights is not None:
            _check_count(self.style_blend_weights, style_count, "style_blend_weights", "style image")
        if self.style_layer_sources is not None:
            _check_count(self.style_layer_sources, len(self.style_layers), "style_layer_sources", "style layer")
            if max(self.style_layer_sources) > style_count:
                raise InvalidSettingsError(
                    f"style_layer_sources names style image {max(self.style_layer_sources)}, "
                    f"but there are {style_count}"
                )

    @property
    def effective_style_weight(self) -> float:
        """β as the losses use it: the style weight scaled by the strength."""
        return self.style_weight * 2.0 ** ((self.strength - NEUTRAL_STRENGTH) / STRENGTH_DOUBLING)

    def memory_budget(self, available: int) -> int:
        """Bytes the run may use when ``available`` are on offer: the smaller of that and its own budget."""
        if not self.memory_budget_mib:
            return available
        return min(available, self.memory_budget_mib * 2**20)

    @property
    def layers(self) -> frozenset[str]:
        """Every VGG layer the losses read: the content layer and the style layers."""
        return frozenset({self.content_layer, *self.style_layers})

    def layer_weights(self) -> dict[str, float]:
        """w_l per style layer; equal weights 1/L by default, as in the paper."""
        weights = self.style_layer_weights or (1.0,) * len(self.style_layers)
        if self.style_layer_weights is None:
            weights = tuple(weight / len(self.style_layers) for weight in weights)
        return dict(zip(self.style_layers, weights))

    def blend_weights(self, style_count: int) -> tuple[float, ...]:
        return self.style_blend_weights or (1.0,) * style_count

    def stage_iterations(self, stages: int) -> list[int]:
        """Iterations per stage, coarse to fine."""
        coarse = self.coarse_iterations or self.iterations
        return [coarse] * (stages - 1) + [self.iterations]

    def stage_sizes(self, final_size: int) -> list[int]:
        """Longest side per stage, coarse to fine, each stage twice the size of the one before."""
        if self.scales:
            sizes = [max(1, round(final_size / 2**k)) for k in range(self.scales)]
        else:
            sizes = [final_size]
            while sizes[-1] // 2 >= MIN_AUTO_STAGE_SIZE:
                sizes.append(sizes[-1] // 2)
        return sorted(set(sizes))



SETTINGS: dict[str, Setting] = settings_of(StyleSettings)


def settings_for(front_end: FrontEnd) -> tuple[Setting, ...]:
    """The settings ``front_end`` offers, in declaration order."""
    return tuple(item for item in SETTINGS.values() if item.shown_in(front_end))


def check_values(values: Mapping[str, Any], front_end: FrontEnd | None = None, prefix: str = "") -> None:
    """Raise InvalidSettingsError naming ``prefix`` + the first unknown setting (or one that ``front_end``
    does not offer) or bad plain value."""
    for name, value in values.items():
        item = SETTINGS.get(name)
        if item is None or (front_end is not None and not item.shown_in(front_end)):
            raise InvalidSettingsError(f"{prefix}{name} is not a known setting")
        item.check(value, prefix)


def _check_count(values: tuple[float, ...], expected: int, field: str, what: str) -> None:
    if len(values) != expected:
        raise InvalidSettingsError(f"{field} needs one value per {what}: {expected}, got {len(values)}")
