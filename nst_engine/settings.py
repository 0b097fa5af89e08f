"""Every parameter of a style transfer run, with defaults and validation."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import InvalidSettingsError
from .vgg import Pooling, validate_layer_names

DEFAULT_CONTENT_LAYER = "relu4_2"
DEFAULT_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

# Coarse-to-fine stages halve the size down to about this longest side (see StyleSettings.stage_sizes).
MIN_AUTO_STAGE_SIZE = 256
MAX_ITERATIONS = 100_000
MAX_SCALES = 8


class Optimizer(str, enum.Enum):
    LBFGS = "lbfgs"
    ADAM = "adam"


class Init(str, enum.Enum):
    CONTENT = "content"
    NOISE = "noise"  # white noise, as in the paper
    IMAGE = "image"  # a caller-supplied image


class Precision(str, enum.Enum):
    """Arithmetic of the VGG passes.  Gram matrices and losses are always accumulated in float32."""

    AUTO = "auto"  # the device's default: see nst_engine.device.resolve_precision
    FP32 = "fp32"  # IEEE float32 throughout
    TF32 = "tf32"  # CUDA only: convolutions and matrix products on TF32 tensor cores; elsewhere fp32
    BF16 = "bf16"  # VGG forward and backward under bfloat16 autocast


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
    """

    content_weight: float = 1.0  # α
    style_weight: float = 1000.0  # β
    tv_weight: float = 0.0
    content_layer: str = DEFAULT_CONTENT_LAYER
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None  # w_l; None = equal, 1/len(style_layers) each
    style_blend_weights: tuple[float, ...] | None = None  # one per style image; None = equal
    style_scale: float = 1.0  # style image's longest side relative to the content's at each stage
    size: int = 512  # longest side of the output; 0 = the content image's own size
    scales: int = 0  # number of coarse-to-fine stages; 0 = automatic
    iterations: int = 500  # at the final stage
    coarse_iterations: int = 0  # at each coarser stage; 0 = as many as ``iterations``
    optimizer: Optimizer = Optimizer.LBFGS
    learning_rate: float = 0.02  # Adam's step size, in units of the [0, 1] pixel range
    init: Init = Init.CONTENT
    seed: int = 0
    preserve_colors: bool = False
    pooling: Pooling = Pooling.MAX
    precision: Precision = Precision.AUTO
    # Side of the tiles a stage runs over when it does not fit in memory at once; 0 = chosen from the
    # memory budget, and only when needed.  Set, every stage runs in tiles of this size.
    tile_size: int = 0

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> StyleSettings:
        """Settings from plain values (strings for the enums, lists for the weights), as sent over a
        wire or given on a command line; unknown names raise InvalidSettingsError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidSettingsError(f"{unknown[0]} is not a setting")
        converted: dict[str, Any] = {}
        for name, value in values.items():
            try:
                if name in _ENUMS:
                    value = _ENUMS[name](value)
                elif name in ("style_layer_weights", "style_blend_weights", "style_layers") and value is not None:
                    value = tuple(value)
                elif name in _FLOATS and isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
            except (TypeError, ValueError):
                raise InvalidSettingsError(f"{name}: {value!r} is not a valid value") from None
            converted[name] = value
        return cls(**converted)

    def validate(self, style_count: int) -> None:
        """Raise InvalidSettingsError naming the first bad field."""
        for field in ("content_weight", "style_weight", "tv_weight", "style_scale", "learning_rate"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise InvalidSettingsError(f"{field} must be a finite number ≥ 0, got {value!r}")
        if self.style_scale <= 0 or self.learning_rate <= 0:
            raise InvalidSettingsError("style_scale and learning_rate must be greater than 0")
        validate_layer_names([self.content_layer], "content_layer")
        if not self.style_layers:
            raise InvalidSettingsError("style_layers must name at least one layer")
        validate_layer_names(self.style_layers, "style_layers")
        if self.style_layer_weights is not None:
            _check_weights(self.style_layer_weights, len(self.style_layers), "style_layer_weights", "style layer")
        if style_count < 1:
            raise InvalidSettingsError("at least one style image is needed")
        if self.style_blend_weights is not None:
            _check_weights(self.style_blend_weights, style_count, "style_blend_weights", "style image")
        if not isinstance(self.size, int) or self.size < 0:
            raise InvalidSettingsError(f"size must be an integer ≥ 0 (0 = the content's size), got {self.size!r}")
        if not isinstance(self.iterations, int) or not 1 <= self.iterations <= MAX_ITERATIONS:
            raise InvalidSettingsError(f"iterations must be an integer from 1 to {MAX_ITERATIONS}, got {self.iterations!r}")
        if not isinstance(self.coarse_iterations, int) or not 0 <= self.coarse_iterations <= MAX_ITERATIONS:
            raise InvalidSettingsError(
                f"coarse_iterations must be an integer from 0 (as many as iterations) to {MAX_ITERATIONS}, "
                f"got {self.coarse_iterations!r}"
            )
        if not isinstance(self.scales, int) or not 0 <= self.scales <= MAX_SCALES:
            raise InvalidSettingsError(f"scales must be an integer from 0 (automatic) to {MAX_SCALES}, got {self.scales!r}")
        if not isinstance(self.tile_size, int) or not (self.tile_size == 0 or (self.tile_size >= 64 and self.tile_size % 16 == 0)):
            raise InvalidSettingsError(f"tile_size must be 0 (automatic) or a multiple of 16 from 64, got {self.tile_size!r}")
        if not isinstance(self.seed, int):
            raise InvalidSettingsError(f"seed must be an integer, got {self.seed!r}")

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


_ENUMS: dict[str, type[enum.Enum]] = {"optimizer": Optimizer, "init": Init, "pooling": Pooling, "precision": Precision}
_FLOATS = ("content_weight", "style_weight", "tv_weight", "style_scale", "learning_rate")


def _check_weights(weights: tuple[float, ...], expected: int, field: str, what: str) -> None:
    if len(weights) != expected:
        raise InvalidSettingsError(f"{field} needs one weight per {what}: {expected}, got {len(weights)}")
    if any(not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0 for w in weights):
        raise InvalidSettingsError(f"{field} must be finite numbers ≥ 0, got {weights!r}")
    if sum(weights) <= 0:
        raise InvalidSettingsError(f"{field} must not all be zero")
