"""Conversion between protocol image frames and the engine's float tensors (daemon side, uses torch)."""

from __future__ import annotations

import hashlib
import warnings

import torch

from .protocol import Buffer, DType, ImageSpec

_TORCH_DTYPES = {DType.U8: torch.uint8, DType.U16: torch.uint16, DType.F32: torch.float32}
_SCALE = {DType.U8: 255.0, DType.U16: 65535.0, DType.F32: 1.0}


def frame_to_rgb(spec: ImageSpec, frame: Buffer) -> torch.Tensor:
    """3×H×W float32 sRGB from a frame; gray is repeated into RGB, alpha is dropped (callers keep it)."""
    with warnings.catch_warnings():  # zmq frames are read-only; the data is copied right below
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(frame, dtype=_TORCH_DTYPES[spec.dtype])
    pixels = flat.view(spec.height, spec.width, spec.channels).to(torch.float32)
    if spec.dtype is not DType.F32:
        pixels = pixels / _SCALE[spec.dtype]
    colour = pixels[..., :3] if spec.channels >= 3 else pixels[..., :1].expand(-1, -1, 3)
    return colour.permute(2, 0, 1).contiguous()


def rgb_to_frame(image: torch.Tensor) -> tuple[ImageSpec, memoryview]:
    """A 3×H×W float tensor as an f32 RGB frame (H×W×3), without a further copy."""
    pixels = image.detach().to("cpu", torch.float32).permute(1, 2, 0).contiguous()
    spec = ImageSpec(width=pixels.shape[1], height=pixels.shape[0], channels=3, dtype=DType.F32)
    return spec, memoryview(pixels.numpy()).cast("B")


def fingerprint(spec: ImageSpec, frame: Buffer) -> str:
    """Identity of an image's pixels, for the style cache."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(spec.to_wire()).encode())
    digest.update(frame)
    return digest.hexdigest()
