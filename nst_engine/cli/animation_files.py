"""Animations for the command line: a folder of frame files, or an animated PNG, GIF or WebP.

A folder's frames are its image files in name order (numbers compared by value, so frame9 comes before
frame10), hidden files left out; results go into another folder under the same names.  An animated
file's frames are read whole (Pillow composes each one from the file's partial frames) with their
durations and loop count, and the result is written as one animated file with the same timing.
"""

from __future__ import annotations

import io
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .image_files import ImageFileError, LoadedImage, format_for, from_pillow, read_image, replace_file

# Pillow's formats that hold an animation, and the extensions an animation is written under.
ANIMATION_FORMATS = frozenset({"PNG", "GIF", "WEBP"})
_ANIMATION_EXTENSIONS = {".png": "PNG", ".apng": "PNG", ".gif": "GIF", ".webp": "WEBP"}


@dataclass(frozen=True)
class FrameFolder:
    """The frame files of a folder, in order, all of one size."""

    folder: Path
    paths: list[Path]

    @property
    def names(self) -> list[str]:
        return [path.name for path in self.paths]

    def frames(self) -> Iterator[LoadedImage]:
        """Each frame read when it is needed, so that a long sequence is never in memory at once."""
        return (read_image(path) for path in self.paths)


@dataclass(frozen=True)
class Animation:
    """An animated file's frames (composed whole) and timing."""

    frames: list[LoadedImage]
    durations: list[float]  # milliseconds, one per frame
    loop: int | None  # plays: 0 forever; None: the file said nothing (a GIF without a loop count plays once)


def _name_order(path: Path) -> list[object]:
    """Sort key: the name's digit runs by value, the rest by text (case-insensitive)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
            for part in re.split(r"(\d+)", path.name) if part]


def frame_folder(folder: Path) -> FrameFolder:
    """The image files of ``folder`` (by extension), in name order; refused when there are none or when
    their sizes differ (read from the files' headers, before any long job)."""
    extensions = Image.registered_extensions()
    paths = sorted((path for path in folder.iterdir()
                    if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in extensions),
                   key=_name_order)
    if not paths:
        raise ImageFileError(f"{folder}: holds no image files to use as frames")
    sizes = {path: _header_size(path) for path in paths}
    first = sizes[paths[0]]
    for path in paths[1:]:
        if sizes[path] != first:
            raise ImageFileError(f"{path}: is {sizes[path][0]}×{sizes[path][1]} pixels, but {paths[0].name} is "
                                 f"{first[0]}×{first[1]}: every frame must have one size")
    return FrameFolder(folder, paths)


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageFileError(f"{path}: not a readable image ({error})") from None


def check_output_folder(output: Path, frames: FrameFolder, bits: int | None) -> None:
    """Refuse, before the long job, an output folder that cannot take the frames: the frames' own
    folder (the results would replace them), a file, a missing parent, no write permission, a frame
    name whose format cannot be written at ``bits``.  Creates the folder when it is missing."""
    if output.exists() and not output.is_dir():
        raise ImageFileError(f"{output}: is a file; give a folder for the frames of a folder of frames")
    if output.exists() and output.resolve() == frames.folder.resolve():
        raise ImageFileError(f"{output}: is the frames' own folder; give another one for the results")
    for path in frames.paths:
        format_for(path, bits or 8)
    try:
        output.mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=output):
            pass
    except OSError as error:
        raise ImageFileError(f"{output}: cannot be written ({error.strerror or error})") from None


def is_animation(path: Path) -> bool:
    """Whether ``path`` is a PNG, GIF or WebP file with more than one frame."""
    try:
        with Image.open(path) as image:
            return image.format in ANIMATION_FORMATS and getattr(image, "n_frames", 1) > 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False  # read_image names the problem


def read_animation(path: Path) -> Animation:
    try:
        with Image.open(path) as image:
            frames, durations = [], []
            for index in range(image.n_frames):
                image.seek(index)
                image.load()  # WebP sets a frame's duration when it is decoded
                durations.append(float(image.info.get("duration") or 0.0))
                frames.append(from_pillow(image, path))
            loop = image.info.get("loop")
    except ImageFileError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as error:
        raise ImageFileError(f"{path}: not a readable animation ({error})") from None
    return Animation(frames, durations, None if loop is None else int(loop))


def animation_format(path: Path) -> str:
    """Pillow's format for an animation written under ``path``'s extension."""
    image_format = _ANIMATION_EXTENSIONS.get(path.suffix.lower())
    if image_format is None:
        raise ImageFileError(f"{path}: an animation is written as .png (APNG), .gif or .webp, "
                             f"not {path.suffix or '(no extension)'}")
    return image_format


def check_animation_output(path: Path, bits: int | None) -> None:
    """Refuse an output that cannot hold an animation, before the long job (see also check_writable)."""
    animation_format(path)
    if bits == 16:
        raise ImageFileError(f"{path}: animations are written with 8 bits per sample; leave out --bits 16")


def write_animation(path: Path, frames: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
                    durations: Sequence[float], loop: int | None) -> None:
    """Write (rgb, alpha or None) frames (3×H×W, 1×H×W, in [0, 1]) as one 8-bit animation with these
    durations and loop count, replaced whole or not at all (see write_image).  Pillow merges frames
    identical to the one before, adding up their durations."""
    image_format = animation_format(path)
    images = [_to_pillow(rgb, alpha) for rgb, alpha in frames]
    extra = {} if loop is None else {"loop": loop}
    encoded = io.BytesIO()
    try:
        images[0].save(encoded, format=image_format, save_all=True, append_images=images[1:],
                       duration=[round(duration) for duration in durations], **extra)
        replace_file(path, encoded.getbuffer())
    except (OSError, ValueError, KeyError) as error:
        raise ImageFileError(f"{path}: cannot be written ({error})") from None


def _to_pillow(rgb: torch.Tensor, alpha: torch.Tensor | None) -> Image.Image:
    pixels = rgb if alpha is None else torch.cat([rgb, alpha])
    array = (pixels.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGBA" if alpha is not None else "RGB")

