"""Spatial control on the command line: mask images for the style images (nst_engine.guides)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from ..colour import rgb_to_yiq
from ..guides import resize_mask
from .image_files import ImageFileError, LoadedImage, read_image

NO_MASK = "-"  # in a list of masks: none for this style image


def add_mask_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--style-masks", nargs="+", metavar="MASK",
        help="spatial control: one greyscale image per style image, white where that style applies in the output "
             f"(resized to the content); {NO_MASK} for a style that applies everywhere")
    parser.add_argument(
        "--style-image-masks", nargs="+", metavar="MASK",
        help="one greyscale image per style image, white where its style is taken from (resized to it); "
             f"{NO_MASK}, and the default, is the style image's own alpha channel, if it has one")


def read_masks(
    args: argparse.Namespace, content: LoadedImage, styles: Sequence[LoadedImage]
) -> tuple[list[torch.Tensor | None] | None, list[torch.Tensor | None] | None]:
    """(regions over the output, masks over the style images), each one per style image or None."""
    regions = None
    if args.style_masks is not None:
        height, width = content.rgb.shape[-2:]
        regions = [_read_mask(path, height, width)
                   for path in _one_per_style(args.style_masks, styles, "--style-masks")]
    given = _one_per_style(args.style_image_masks, styles, "--style-image-masks") if args.style_image_masks else None
    style_masks = [
        _read_mask(given[index], *style.rgb.shape[-2:]) if given and given[index] != NO_MASK else _alpha_mask(style)
        for index, style in enumerate(styles)
    ]
    return regions, None if all(mask is None for mask in style_masks) else style_masks


def _one_per_style(paths: list[str], styles: Sequence[LoadedImage], option: str) -> list[str]:
    if len(paths) != len(styles):
        raise ImageFileError(f"{option} needs one mask (or {NO_MASK}) per style image: {len(styles)}, got {len(paths)}")
    return paths


def _read_mask(path: str, height: int, width: int) -> torch.Tensor | None:
    """A mask file's grey levels (its luminance) at height×width, or None for ``-``."""
    if path == NO_MASK:
        return None
    grey = rgb_to_yiq(read_image(path).rgb)[0].clamp(0.0, 1.0)
    return resize_mask(grey, height, width)[0, 0]


def _alpha_mask(style: LoadedImage) -> torch.Tensor | None:
    """The style image's alpha as its mask, where it has some transparency."""
    if style.alpha is None or bool((style.alpha >= 1.0).all()):
        return None
    return style.alpha[0]
