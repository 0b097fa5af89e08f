"""Is a reduced-precision run as good as fp32?  The check behind the bf16 tests and benchmarks.

Two runs that differ only in rounding do not end at the same image.  L-BFGS amplifies any difference:
fp32 started from the content perturbed at bf16's rounding size (each pixel × (1 ± 2⁻⁸)) ended at
about 29 dB PSNR from the unperturbed fp32 run, with a final loss up to 1.3 % away either side (64 px,
30 iterations, seeded random weights).  bf16 lands in that same cloud, on some CPUs a little further
out (3 % above fp32 with native bf16 arithmetic).  So neither "loss within x % of fp32's" nor a PSNR
floor judges bf16: both measure how chaotic the trajectory is, which fp32 shows as much.

What the check asks instead, in the units a user pays in:

- **used**: the candidate's image differs from fp32's (PSNR below 80 dB).  Identical images mean the
  reduced precision was silently not used.
- **as good**: the candidate's final loss, judged by one fp32 objective, is at most the loss fp32
  reaches with four fifths of the iterations.  A precision passes if it costs at most a fifth of the
  iterations; at 64 px and 30 iterations that bound lies 8 % above fp32's final loss.
- **discriminating**: every fp32 run from a perturbed start passes the same bound.  If one does not,
  the bound lies inside fp32's own spread at these settings, and a verdict would be a coin toss.

Gram matrices rounded to bf16, or even accumulated in bf16, measured within 0.4 % of fp32 at 64 px:
at these sizes they are not a degradation, and the check rightly passes them.  What does degrade a
run, such as the loss value or the image itself held in bf16 (L-BFGS's line search then stalls at
the start, 20× fp32's loss), fails it by far.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .device import fp32_arithmetic
from .settings import Init, Precision, StyleSettings
from .transfer import StyleTransfer

# A reduced precision may cost at most this share of the iterations (see the module docstring).
ITERATION_SLACK = 0.2
# Images closer than this to fp32's come from the same arithmetic: the reduced precision was not used.
SAME_ARITHMETIC_PSNR_DB = 80.0
# Relative size of the start perturbations of the fp32 spread runs: bf16's rounding step.
BF16_ROUNDING = 2.0**-8


@dataclass(frozen=True)
class PrecisionQuality:
    """A reduced-precision run against fp32 on the same inputs, settings and start."""

    precision: str
    iterations: int
    loss: float  # the candidate's final loss, judged in fp32
    fp32_loss: float
    early_iterations: int
    fp32_early_loss: float  # fp32's loss after ``early_iterations``: the bound on ``loss``
    psnr_db: float  # candidate against the fp32 image
    fp32_spread_losses: tuple[float, ...]  # fp32 from starts perturbed at bf16's rounding size
    fp32_spread_psnr_db: tuple[float, ...]

    @property
    def loss_ratio(self) -> float:
        return self.loss / self.fp32_loss

    @property
    def bound_ratio(self) -> float:
        return self.fp32_early_loss / self.fp32_loss

    def failures(self) -> list[str]:
        """Why the candidate fails the check; empty when it passes."""
        problems = []
        if self.psnr_db >= SAME_ARITHMETIC_PSNR_DB:
            problems.append(f"{self.precision} was not used: its image matches fp32's ({self.psnr_db:.1f} dB)")
        if not self.loss <= self.fp32_early_loss:
            problems.append(
                f"{self.precision} ended at {self.loss_ratio:.3f}× fp32's loss, above fp32's after "
                f"{self.early_iterations} of {self.iterations} iterations ({self.bound_ratio:.3f}×)"
            )
        worst_spread = max(self.fp32_spread_losses, default=0.0)
        if worst_spread > self.fp32_early_loss:
            problems.append(
                f"inconclusive: fp32 from a perturbed start ended at {worst_spread / self.fp32_loss:.3f}× its loss, "
                f"beyond the bound ({self.bound_ratio:.3f}×); use more iterations"
            )
        return problems

    def to_dict(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "loss_ratio": self.loss_ratio, "bound_ratio": self.bound_ratio}

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> PrecisionQuality:
        """The inverse of :meth:`to_dict` (derived figures are ignored)."""
        fields = {field.name: values[field.name] for field in dataclasses.fields(cls)}
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in fields.items()})


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two images in [0, 1]; infinite when they are identical."""
    mse = (a.float() - b.float()).square().mean().item()
    return 10 * math.log10(1.0 / mse) if mse > 0 else math.inf


def judge_precision(
    engine: StyleTransfer,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    settings: StyleSettings,
    candidate: torch.Tensor,
    *,
    spread_runs: int = 3,
) -> PrecisionQuality:
    """Judge ``candidate``, the result of ``engine.stylize(content, styles, settings)`` in a reduced
    precision, against fp32 runs of the same single-stage settings (see the module docstring)."""
    if len(settings.stage_sizes(settings.size or max(content.shape[-2:]))) != 1:
        raise ValueError("the precision check compares single-stage runs: set scales=1")
    fp32 = dataclasses.replace(settings, precision=Precision.FP32)
    early_iterations = max(1, math.floor(settings.iterations * (1 - ITERATION_SLACK)))
    reference = engine.stylize(content, styles, fp32)
    early = engine.stylize(content, styles, dataclasses.replace(fp32, iterations=early_iterations))
    spread = [engine.stylize(content, styles, dataclasses.replace(fp32, init=Init.IMAGE),
                             init_image=_perturbed(content, seed)) for seed in range(spread_runs)]
    height, width = reference.shape[-2:]
    judge = engine.objective(content, styles, fp32, height, width)

    def loss(image: torch.Tensor) -> float:
        with torch.no_grad(), fp32_arithmetic(engine.device, Precision.FP32):
            return judge(engine.to_device(image[None]))[0].item()

    return PrecisionQuality(
        precision=settings.precision.value,
        iterations=settings.iterations,
        loss=loss(candidate),
        fp32_loss=loss(reference),
        early_iterations=early_iterations,
        fp32_early_loss=loss(early),
        psnr_db=psnr_db(candidate, reference),
        fp32_spread_losses=tuple(loss(image) for image in spread),
        fp32_spread_psnr_db=tuple(psnr_db(image, reference) for image in spread),
    )


def measure_precision(
    engine: StyleTransfer, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: StyleSettings
) -> PrecisionQuality:
    """Run ``settings`` (in its reduced precision) and judge the result against fp32."""
    return judge_precision(engine, content, styles, settings, engine.stylize(content, styles, settings))


def _perturbed(image: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    factor = 1 + BF16_ROUNDING * (2 * torch.rand(image.shape, generator=generator) - 1)
    return (image * factor).clamp(0.0, 1.0)
