"""``python -m nst_engine CONTENT STYLE [STYLE ...] -o OUT``: stylise image files from a shell; CONTENT may
be a folder of frames or an animated PNG, GIF or WebP, stylised consistently frame to frame."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from ..device import choose_precision
from ..errors import StyleTransferError
from ..image_ops import resize
from ..memory import parse_byte_size
from ..progress import CancelToken
from ..sequence import stylize_sequence
from ..settings import StyleSettings
from ..transfer import StyleTransfer
from ..weights import WEIGHTS_ENV_VAR, load_vgg19_state_dict
from .animation_files import (
    FrameFolder,
    check_animation_output,
    check_output_folder,
    frame_folder,
    is_animation,
    read_animation,
    write_animation,
)
from .image_files import ImageFileError, LoadedImage, check_writable, read_image, write_image
from .masks import add_mask_arguments, read_masks
from .progress_bar import TerminalProgressBar
from .setting_options import add_animation_arguments, add_settings_arguments, init_image_path, settings_values

__all__ = ["add_animation_arguments", "add_mask_arguments", "add_settings_arguments", "build_parser",
           "byte_size_argument", "init_image_path", "main", "read_masks", "sequence_inputs", "settings_values"]


def byte_size_argument(text: str) -> int:
    """argparse type for memory sizes such as 1GiB (shared with the daemon's command line)."""
    try:
        return parse_byte_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nst_engine",
        description="Neural style transfer (Gatys et al. 2016) of image files.",
    )
    parser.add_argument("content", nargs="?", type=Path,
                        help="content image (PNG, JPEG or TIFF; 8 or 16 bit), or an animation: a folder of frames "
                             "or an animated PNG, GIF or WebP")
    parser.add_argument("styles", nargs="*", type=Path, metavar="style", help="one or more style images")
    parser.add_argument("-o", "--output", type=Path,
                        help="output image (.png for 16-bit); for a folder of frames, a folder (results under the "
                             "frames' names); for an animated file, an animated .png, .gif or .webp")
    add_settings_arguments(parser)
    add_animation_arguments(parser)
    add_mask_arguments(parser)
    parser.add_argument("--weights", type=Path,
                        help=f"local VGG19 state dict (default: ${WEIGHTS_ENV_VAR}, "
                             "else torchvision's cached download)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--memory-budget", type=byte_size_argument, metavar="SIZE",
                        help="memory the run may use, e.g. 1GiB (default: what the device has free); stages that do "
                             "not fit run in tiles")
    parser.add_argument("--bits", type=int, choices=(8, 16), help="output bit depth (default: the content's)")
    parser.add_argument("--fetch-weights", action="store_true",
                        help="only make sure the weights are available, then exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.fetch_weights:
            load_vgg19_state_dict(args.weights, progress=not args.quiet)
            print("VGG19 weights are available.")
            return 0
        if args.content is None or not args.styles or args.output is None:
            parser.error("CONTENT, at least one STYLE and -o OUTPUT are required")
        if args.content.is_dir():
            return _stylize_folder(args)
        if is_animation(args.content):
            return _stylize_animation(args)
        return _stylize_files(args)
    except (StyleTransferError, ImageFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _stylize_files(args: argparse.Namespace) -> int:
    content = read_image(args.content)
    loaded_styles = [read_image(path) for path in args.styles]
    styles = [style.rgb for style in loaded_styles]
    regions, style_image_masks = read_masks(args, content, loaded_styles)
    init_path = init_image_path(args)
    init_image = read_image(init_path).rgb if init_path is not None else None
    settings = StyleSettings.from_values(settings_values(args))
    settings.validate(len(styles))  # before the slow model load
    check_writable(args.output, args.bits or content.bits)
    engine = StyleTransfer.from_weights(args.weights, args.device, progress=not args.quiet)
    if not args.quiet:
        print(choose_precision(settings.precision, engine.device).describe(engine.device), flush=True)
    bar = TerminalProgressBar(force=False) if not args.quiet else None
    try:
        result = engine.stylize(content.rgb, styles, settings, init_image=init_image, on_progress=bar,
                                cancel=CancelToken(), memory_budget=args.memory_budget, regions=regions,
                                style_image_masks=style_image_masks)
    finally:
        if bar is not None:
            bar.close()
    alpha = None if content.alpha is None else resize(content.alpha[None], *result.shape[-2:])[0]
    write_image(args.output, result, alpha, bits=args.bits or content.bits)
    if not args.quiet:
        print(f"Wrote {args.output} ({result.shape[-1]}×{result.shape[-2]}).")
    return 0


def sequence_inputs(args: argparse.Namespace, first_frame: LoadedImage) -> tuple[list[torch.Tensor],
                                                                                 list[torch.Tensor | None] | None,
                                                                                 StyleSettings]:
    """(styles, their masks, the settings) of an animation, checked before the model is loaded (or the job sent)."""
    if args.style_masks is not None:
        raise ImageFileError("--style-masks (regions) cannot be used with an animation yet")
    if init_image_path(args) is not None:
        raise ImageFileError("--init FILE cannot be used with an animation: its frames start from the content "
                             "(the first) and from the previous result (the others)")
    loaded_styles = [read_image(path) for path in args.styles]
    _, style_image_masks = read_masks(args, first_frame, loaded_styles)
    settings = StyleSettings.from_values(settings_values(args))
    settings.validate(len(loaded_styles))
    return [style.rgb for style in loaded_styles], style_image_masks, settings


def _run_sequence(args: argparse.Namespace, frames: Iterator[torch.Tensor], count: int, styles: list[torch.Tensor],
                  style_image_masks: list[torch.Tensor | None] | None,
                  settings: StyleSettings) -> Iterator[torch.Tensor]:
    """The engine's results, frame by frame, with the progress bar drawn meanwhile."""
    engine = StyleTransfer.from_weights(args.weights, args.device, progress=not args.quiet)
    if not args.quiet:
        print(choose_precision(settings.precision, engine.device).describe(engine.device), flush=True)
    bar = TerminalProgressBar(force=False) if not args.quiet else None
    try:
        yield from stylize_sequence(
            engine, frames, styles, settings, temporal_weight=args.temporal_weight,
            frame_iterations=args.frame_iterations,
            frame_count=count, on_progress=bar, cancel=CancelToken(), memory_budget=args.memory_budget,
            style_image_masks=style_image_masks)
    finally:
        if bar is not None:
            bar.close()


def _result_alpha(frame: LoadedImage, result: torch.Tensor) -> torch.Tensor | None:
    return None if frame.alpha is None else resize(frame.alpha[None], *result.shape[-2:])[0]


def _stylize_folder(args: argparse.Namespace) -> int:
    """A folder of frames in, a folder of results under the same names out, each written when it is done."""
    frames: FrameFolder = frame_folder(args.content)
    styles, style_image_masks, settings = sequence_inputs(args, read_image(frames.paths[0]))
    check_output_folder(args.output, frames, args.bits)
    current: list[LoadedImage] = []  # the frame the engine is working on

    def colours() -> Iterator[torch.Tensor]:
        for frame in frames.frames():
            current[:] = [frame]
            yield frame.rgb

    results = _run_sequence(args, colours(), len(frames.paths), styles, style_image_masks, settings)
    for path, result in zip(frames.paths, results):
        frame = current[0]
        write_image(args.output / path.name, result, _result_alpha(frame, result), bits=args.bits or frame.bits)
    if not args.quiet:
        print(f"Wrote {len(frames.paths)} frames to {args.output}.")
    return 0


def _stylize_animation(args: argparse.Namespace) -> int:
    """An animated file in, the same kind out: the frames with their durations and loop count."""
    check_animation_output(args.output, args.bits)
    animation = read_animation(args.content)
    styles, style_image_masks, settings = sequence_inputs(args, animation.frames[0])
    check_writable(args.output)
    results = _run_sequence(args, (frame.rgb for frame in animation.frames), len(animation.frames), styles,
                            style_image_masks, settings)
    written = [(result, _result_alpha(frame, result)) for frame, result in zip(animation.frames, results)]
    write_animation(args.output, written, animation.durations, animation.loop)
    if not args.quiet:
        print(f"Wrote {args.output} ({len(written)} frames, {written[0][0].shape[-1]}×{written[0][0].shape[-2]}).")
    return 0
