"""Choosing and preparing the compute device."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from .errors import InvalidSettingsError
from .progress import CancelToken
from .settings import Precision

T = TypeVar("T")


def select_device(preference: str | torch.device | None = None) -> torch.device:
    """CUDA if available, else Apple's MPS, else the CPU; ``preference`` ("cpu", "cuda:1"…) overrides."""
    if preference is not None and str(preference) != "auto":
        try:
            device = torch.device(preference)
        except RuntimeError as error:
            raise InvalidSettingsError(f"device: {error}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidSettingsError("device: CUDA was asked for but no CUDA GPU is available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise InvalidSettingsError("device: MPS was asked for but is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def prepare_device(device: torch.device) -> None:
    """Per-process settings that make the VGG passes fast on ``device``."""
    if device.type == "cuda":
        # Image sizes repeat across iterations, so autotuning pays for itself after the first pass.
        torch.backends.cudnn.benchmark = True


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last lets cuDNN use its tensor-core kernels directly, and oneDNN its NHWC kernels
    without reordering activations (about 10 % faster per evaluation on the CPU)."""
    return torch.channels_last if device.type in ("cuda", "cpu") else torch.contiguous_format


# oneDNN instruction-set caps (ONEDNN_MAX_CPU_ISA) below its first one with bf16 arithmetic.
_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16, or AMX on Xeons since
    Sapphire Rapids), and oneDNN is not held below it (ONEDNN_MAX_CPU_ISA=AVX2, say).  Without it,
    PyTorch emulates bf16 in float32, slower than plain fp32."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISAS_WITHOUT_BF16:
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence looked up with care
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses on a device, and why: what ``status`` and the command line report."""

    precision: Precision
    reason: str

    def describe(self, device: torch.device) -> str:
        """One line for a person, e.g. "Running on cpu in fp32 (this CPU has no native bf16)"."""
        return f"Running on {device} in {self.precision.value} ({self.reason})"


def choose_precision(requested: Precision, device: torch.device) -> PrecisionChoice:
    """What ``auto`` means on ``device``, with the reason.

    - CPU with native bf16: bf16, faster per evaluation there than fp32 (2.2× even through autocast,
      issue #19), and as good by the quality check (nst_engine.quality), which the suite runs natively
      on such CPUs.
    - Other CPUs and MPS: fp32.  PyTorch emulates bf16 on such CPUs, about 20× slower than fp32.
    - CUDA: TF32, which keeps fp32's picture while using the tensor cores.  bf16 is faster still but
      stays opt-in until its quality check (benchmarks/gpu.sh) has been run on a GPU.
    """
    if requested is not Precision.AUTO:
        if requested is Precision.BF16 and device.type == "cpu" and not cpu_has_native_bf16():
            return PrecisionChoice(requested,
                                   "as asked; this CPU has no native bf16, so it is emulated, slower than fp32")
        return PrecisionChoice(requested, "as asked")
    if device.type == "cuda":
        return PrecisionChoice(Precision.TF32, "the CUDA default: tensor cores with fp32's picture")
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return PrecisionChoice(Precision.BF16, "this CPU has native bf16")
        return PrecisionChoice(Precision.FP32, "this CPU has no native bf16")
    return PrecisionChoice(Precision.FP32, f"the {device.type} default")


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """The precision a run with ``precision`` uses on ``device`` (see :func:`choose_precision`)."""
    return choose_precision(precision, device).precision


def compute_dtype(precision: Precision) -> torch.dtype:
    """The dtype of the VGG weights and activations in a resolved ``precision``; Gram matrices, losses
    and the image stay float32 in every precision."""
    return torch.bfloat16 if precision is Precision.BF16 else torch.float32


_WAIT_CHECK_S = 0.1  # how often a run waiting for a shared setting looks at its cancel token


class SharedSetting(Generic[T]):
    """A process-wide setting that concurrent runs (a daemon runs one per device at once) each need at
    some value for their whole duration: runs wanting the same value share it, a run wanting another
    waits until they have all ended, and the value the process had comes back when the last one ends.
    Not re-entrant with a different value: a thread would wait for itself."""

    def __init__(self, read: Callable[[], T], write: Callable[[T], None]) -> None:
        self._read, self._write = read, write
        self._condition = threading.Condition()
        self._holders = 0
        self._value: T | None = None
        self._saved: T | None = None

    @contextmanager
    def held_at(self, value: T, check: Callable[[], None] = lambda: None) -> Iterator[None]:
        """``check`` is called while waiting; what it raises (a cancellation) ends the wait."""
        with self._condition:
            while not (self._holders == 0 or self._value == value):
                check()
                self._condition.wait(_WAIT_CHECK_S)
            if self._holders == 0:
                self._saved = self._read()
                self._write(value)
                self._value = value
            self._holders += 1
        try:
            yield
        finally:
            with self._condition:
                self._holders -= 1
                if self._holders == 0:
                    self._write(self._saved)
                    self._value = None
                    self._condition.notify_all()


def _read_fp32_modes() -> tuple[str, str]:
    return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision


def _write_fp32_modes(modes: tuple[str, str]) -> None:
    torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = modes


CUDA_FP32_MODES = SharedSetting(_read_fp32_modes, _write_fp32_modes)


@contextmanager
def fp32_arithmetic(device: torch.device, precision: Precision, cancel: CancelToken | None = None) -> Iterator[None]:
    """cuDNN's and cuBLAS's float32 mode for the duration of a run: TF32 only in ``tf32`` mode, so that
    ``fp32`` means IEEE float32 and ``bf16`` keeps its Gram products in true float32.  These settings
    are the process's, not the device's: concurrent runs on several GPUs share them through
    :data:`CUDA_FP32_MODES`, so that a run never changes the mode under another (``cancel`` ends a wait
    for it)."""
    if device.type != "cuda":
        yield
        return
    mode = "tf32" if precision is Precision.TF32 else "ieee"
    with CUDA_FP32_MODES.held_at((mode, mode), cancel.raise_if_cancelled if cancel is not None else lambda: None):
        yield
