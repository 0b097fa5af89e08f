"""Choosing and preparing the compute device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import InvalidSettingsError
from .settings import Precision


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU does bfloat16 arithmetic in hardware (AVX512-BF16, or AMX on Xeons since
    Sapphire Rapids).  Without it, PyTorch emulates bf16 in float32, slower than plain fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence looked up with care
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: Precision, device: torch.device) -> Precision:
    """What ``auto`` means on ``device``: fp32 on the CPU and MPS; TF32 on CUDA, which keeps fp32's
    picture while using the tensor cores.  bf16 is faster still on CUDA but stays opt-in until its
    quality check (benchmarks/gpu.sh) has been run on a GPU."""
    if precision is not Precision.AUTO:
        return precision
    return Precision.TF32 if device.type == "cuda" else Precision.FP32


@contextmanager
def fp32_arithmetic(device: torch.device, precision: Precision) -> Iterator[None]:
    """cuDNN's and cuBLAS's float32 mode for the duration of a run: TF32 only in ``tf32`` mode, so that
    ``fp32`` means IEEE float32 and ``bf16`` keeps its Gram products in true float32.  These are
    process-wide settings; the previous ones are restored afterwards."""
    if device.type != "cuda":
        yield
        return
    mode = "tf32" if precision is Precision.TF32 else "ieee"
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = (conv.fp32_precision, matmul.fp32_precision)
    conv.fp32_precision, matmul.fp32_precision = mode, mode
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved
