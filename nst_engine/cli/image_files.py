"""Reading and writing image files for the command line: 8/16-bit PNG, JPEG, TIFF, converted to sRGB.

Pillow holds 16-bit colour images only as 8-bit, so 16-bit PNGs are decoded with torchvision.io and
written with the small PNG encoder below.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_png


class ImageFileError(Exception):
    """An image file cannot be read or written; the message names the file and says why."""


@dataclass(frozen=True)
class LoadedImage:
    rgb: torch.Tensor  # 3×H×W float32, sRGB in [0, 1]
    alpha: torch.Tensor | None  # 1×H×W float32 in [0, 1], or None
    bits: int  # 8 or 16: the precision of the file's samples


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SRGB_PROFILE = ImageCms.createProfile("sRGB")


def read_image(path: str | Path) -> LoadedImage:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageFileError(f"{path}: no such file") from None
    except OSError as error:
        raise ImageFileError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        if data.startswith(_PNG_SIGNATURE) and len(data) > 24 and data[24] == 16:
            return _read_png16(data, path)
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return from_pillow(image, path)
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, RuntimeError, SyntaxError) as error:
        raise ImageFileError(f"{path}: not a readable image ({error})") from None


def _read_png16(data: bytes, path: Path) -> LoadedImage:
    with Image.open(io.BytesIO(data)) as header:  # Pillow reads the chunks; its pixels would be 8-bit
        icc = header.info.get("icc_profile")
        if icc and not _is_srgb(icc):
            raise ImageFileError(
                f"{path}: 16-bit PNGs with a colour profile other than sRGB are not supported yet; "
                "convert it to sRGB or export it as 8-bit"
            )
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        pixels = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    samples = pixels.to(torch.float32) / 65535.0
    channels = samples.shape[0]
    colour = samples[:3] if channels >= 3 else samples[:1].expand(3, -1, -1)
    alpha = samples[-1:] if channels in (2, 4) else None
    return LoadedImage(colour.contiguous(), alpha, bits=16)


def from_pillow(image: Image.Image, path: Path) -> LoadedImage:
    if image.mode.startswith("I;16"):
        gray = torch.from_numpy(np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0)
        return LoadedImage(gray[None].expand(3, -1, -1).contiguous(), None, bits=16)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    icc = image.info.get("icc_profile")
    if icc and not _is_srgb(icc):
        image = _to_srgb(image, icc, has_alpha, path)
    image = image.convert("RGBA" if has_alpha else "RGB")
    array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).to(torch.float32) / 255.0
    return LoadedImage(array[:3].contiguous(), array[3:].contiguous() if has_alpha else None, bits=8)


def _is_srgb(icc: bytes) -> bool:
    """Whether a profile is an sRGB profile (GIMP embeds its built-in one in every export)."""
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
    except (ImageCms.PyCMSError, OSError):
        return False
    return "srgb" in description.lower()


def _to_srgb(image: Image.Image, icc: bytes, has_alpha: bool, path: Path) -> Image.Image:
    if image.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        image = image.convert("RGBA" if has_alpha else "RGB")
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    if alpha is not None:
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(image, source, _SRGB_PROFILE, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError) as error:
        raise ImageFileError(f"{path}: its embedded colour profile cannot be used ({error})") from None
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def check_writable(path: str | Path, bits: int = 8) -> None:
    """Refuse, before a long job, an output that cannot be written: an unknown format, 16 bits in other than
    PNG, a folder, a missing or read-only folder."""
    path = Path(path)
    if path.is_dir():
        raise ImageFileError(f"{path}: is a folder; give a file name for the output")
    format_for(path, bits)
    folder = path.absolute().parent
    if not folder.is_dir():
        raise ImageFileError(f"{path}: the folder {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ImageFileError(f"{path}: cannot be written in {folder} ({error.strerror})") from None


def write_image(path: str | Path, rgb: torch.Tensor, alpha: torch.Tensor | None = None, bits: int = 8) -> None:
    """Write a 3×H×W float image in [0, 1] (with optional 1×H×W alpha) as 8- or 16-bit sRGB.  The file is
    replaced whole or not at all: a full disk or a crash leaves the previous file as it was."""
    path = Path(path)
    image_format = format_for(path, bits)
    pixels = rgb if alpha is None else torch.cat([rgb, alpha])
    pixels = pixels.detach().float().clamp(0.0, 1.0).permute(1, 2, 0).contiguous()
    try:
        if bits == 16:
            replace_file(path, _encode_png16(pixels))
            return
        array = (pixels * 255.0).round().to(torch.uint8).numpy()
        image = Image.fromarray(array, "RGBA" if alpha is not None else "RGB")
        if alpha is not None and image_format == "JPEG":
            image = image.convert("RGB")  # JPEG has no alpha channel
        encoded = io.BytesIO()
        image.save(encoded, format=image_format)
        replace_file(path, encoded.getbuffer())
    except (OSError, ValueError, KeyError) as error:
        raise ImageFileError(f"{path}: cannot be written ({error})") from None


def format_for(path: Path, bits: int) -> str:
    """Pillow's format for the file name's extension, as ``Image.save`` would choose it."""
    if bits not in (8, 16):
        raise ImageFileError(f"{path}: bits must be 8 or 16, got {bits}")
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ImageFileError(f"{path}: unknown image format {path.suffix or '(no extension)'}; use .png, .jpg or .tif")
    if bits == 16 and image_format != "PNG":
        raise ImageFileError(f"{path}: 16-bit output is written as PNG only; use a .png name or --bits 8")
    return image_format


def replace_file(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to a new file beside ``path`` and rename it over ``path`` (through a link to its target),
    keeping an existing file's mode; the new file is removed on any failure."""
    target = path.resolve() if path.is_symlink() else path
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _encode_png16(pixels: torch.Tensor) -> bytes:
    """A 16-bit RGB(A) PNG, filter type 0 on every row, tagged sRGB."""
    height, width, channels = pixels.shape
    samples = (pixels * 65535.0).round().to(torch.int32).numpy().astype(">u2")
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), samples.reshape(height, -1).view(np.uint8)], axis=1)
    colour_type = 6 if channels == 4 else 2

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"".join([
        _PNG_SIGNATURE,
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)),
        chunk(b"sRGB", b"\x00"),
        chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
        chunk(b"IEND", b""),
    ])
