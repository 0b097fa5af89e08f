"""Where an objective evaluation's time goes, from PyTorch's profiler: convolutions, Gram products, casts
and the rest (engine_speed.py --profile).

Each operator's *self* time is counted once, in the first category whose name pattern it matches, so
the parts add up to the profiled total: a convolution's time is that of the kernels it calls
(``aten::mkldnn_convolution``, ``aten::convolution_backward``…), not of its wrapper; on CUDA, the GPU
time of the kernels each operator launched itself.  In this engine
every matrix product is a Gram product or its gradient, and every ``_to_copy`` a dtype cast.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile


class Part(str, enum.Enum):
    CONVOLUTIONS = "convolutions"
    GRAM_PRODUCTS = "Gram products"
    CASTS = "casts and copies"
    REST = "the rest"


_PATTERNS: tuple[tuple[Part, tuple[str, ...]], ...] = (
    (Part.CONVOLUTIONS, ("conv",)),
    (Part.GRAM_PRODUCTS, ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul")),
    (Part.CASTS, ("aten::_to_copy", "aten::copy_", "aten::to")),
)
_CAST = "aten::_to_copy"


def part_of(name: str) -> Part:
    for part, patterns in _PATTERNS:
        if any(pattern in name for pattern in patterns):
            return part
    return Part.REST


@dataclass(frozen=True)
class EvaluationProfile:
    """Milliseconds per evaluation in each part, and the dtype casts per evaluation."""

    ms: dict[Part, float]
    casts: float

    @property
    def total_ms(self) -> float:
        return sum(self.ms.values())

    def to_dict(self) -> dict[str, float]:
        """Milliseconds per evaluation by part name and in total, and the number of dtype casts."""
        return {**{part.value: ms for part, ms in self.ms.items()}, "total": self.total_ms,
                "cast_count": self.casts}

    def summary(self) -> str:
        shares = ", ".join(f"{part.value} {ms:.1f} ms ({100 * ms / self.total_ms:.0f} %)"
                           for part, ms in self.ms.items())
        return f"{shares}; {self.casts:.0f} casts"


def profile_evaluations(evaluate: Callable[[], object], evaluations: int, device: torch.device) -> EvaluationProfile:
    """Profile ``evaluations`` calls of ``evaluate`` (warmed up by the caller) on ``device``."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as profiler:
        for _ in range(evaluations):
            evaluate()
        if cuda:
            torch.cuda.synchronize(device)
    ms = dict.fromkeys(Part, 0.0)
    casts = 0
    for event in profiler.key_averages():
        if event.device_type != DeviceType.CPU:
            continue  # a kernel's row: its time is counted in the operator that launched it
        # On CUDA the time that matters is the GPU's; the host only queues the kernels.
        micros = event.self_device_time_total if cuda else event.self_cpu_time_total
        ms[part_of(event.key)] += micros / 1000 / evaluations
        if event.key == _CAST:
            casts += event.count
    return EvaluationProfile(ms, casts / evaluations)
