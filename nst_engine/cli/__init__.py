"""``python -m nst_engine CONTENT STYLE [STYLE ...] -o OUT``: stylise image files from a shell."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import StyleTransferError
from ..image_ops import resize
from ..memory import parse_byte_size
from ..progress import CancelToken
from ..settings import Init, Optimizer, Precision, StyleSettings
from ..transfer import StyleTransfer
from ..vgg import Pooling
from ..weights import WEIGHTS_ENV_VAR, load_vgg19_state_dict
from .image_files import ImageFileError, read_image, write_image
from .progress_bar import TerminalProgressBar

DEFAULTS = StyleSettings()


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The style settings' options, shared with ``python -m daemon run``."""
    parser.add_argument("--style-blend-weights", type=float, nargs="+", metavar="W", help="one weight per style image (default: equal)")
    parser.add_argument("--size", type=int, default=DEFAULTS.size, help="longest side of the output in pixels; 0 = the content's size")
    parser.add_argument("--iterations", type=int, default=DEFAULTS.iterations, help="iterations at the final size")
    parser.add_argument("--coarse-iterations", type=int, default=DEFAULTS.coarse_iterations, help="iterations at each coarser stage; 0 = as many as --iterations")
    parser.add_argument("--scales", type=int, default=DEFAULTS.scales, help="coarse-to-fine stages, each twice the size of the last; 0 = automatic")
    parser.add_argument("--optimizer", choices=[o.value for o in Optimizer], default=DEFAULTS.optimizer.value)
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate, help="Adam's step size")
    parser.add_argument("--content-weight", type=float, default=DEFAULTS.content_weight, help="α")
    parser.add_argument("--style-weight", type=float, default=DEFAULTS.style_weight, help="β")
    parser.add_argument("--tv-weight", type=float, default=DEFAULTS.tv_weight, help="total-variation smoothing")
    parser.add_argument("--style-layer-weights", type=float, nargs="+", metavar="W", help="w_l for relu1_1 … relu5_1 (default: equal)")
    parser.add_argument("--init", default=DEFAULTS.init.value, metavar="content|noise|FILE", help="starting image")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--preserve-colors", action="store_true", help="keep the content's colours (luminance-only transfer)")
    parser.add_argument("--style-scale", type=float, default=DEFAULTS.style_scale, help="style image size relative to the content")
    parser.add_argument("--pooling", choices=[p.value for p in Pooling], default=DEFAULTS.pooling.value)
    parser.add_argument("--tile-size", type=int, default=DEFAULTS.tile_size,
                        help="run every stage in tiles of this many pixels (a multiple of 16 from 64); 0 = only when a "
                             "stage does not fit in memory, with tiles sized to fit")
    parser.add_argument("--precision", choices=[p.value for p in Precision], default=DEFAULTS.precision.value,
                        help="arithmetic of the VGG passes; auto = tf32 on CUDA, fp32 elsewhere")


def settings_values(args: argparse.Namespace) -> dict[str, object]:
    """The settings given by :func:`add_settings_arguments`' options, as plain values."""
    return {
        "content_weight": args.content_weight,
        "style_weight": args.style_weight,
        "tv_weight": args.tv_weight,
        "style_layer_weights": args.style_layer_weights,
        "style_blend_weights": args.style_blend_weights,
        "style_scale": args.style_scale,
        "size": args.size,
        "scales": args.scales,
        "iterations": args.iterations,
        "coarse_iterations": args.coarse_iterations,
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "init": args.init if args.init in (Init.CONTENT.value, Init.NOISE.value) else Init.IMAGE.value,
        "seed": args.seed,
        "preserve_colors": args.preserve_colors,
        "pooling": args.pooling,
        "precision": args.precision,
        "tile_size": args.tile_size,
    }


def init_image_path(args: argparse.Namespace) -> Path | None:
    return None if args.init in (Init.CONTENT.value, Init.NOISE.value) else Path(args.init)


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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("content", nargs="?", type=Path, help="content image (PNG, JPEG or TIFF; 8 or 16 bit)")
    parser.add_argument("styles", nargs="*", type=Path, metavar="style", help="one or more style images")
    parser.add_argument("-o", "--output", type=Path, help="output image (.png for 16-bit)")
    add_settings_arguments(parser)
    parser.add_argument("--weights", type=Path, help=f"local VGG19 state dict (default: ${WEIGHTS_ENV_VAR}, else torchvision's cached download)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--memory-budget", type=byte_size_argument, metavar="SIZE",
                        help="memory the run may use, e.g. 1GiB (default: what the device has free); stages that do "
                             "not fit run in tiles")
    parser.add_argument("--bits", type=int, choices=(8, 16), help="output bit depth (default: the content's)")
    parser.add_argument("--fetch-weights", action="store_true", help="only make sure the weights are available, then exit")
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
        return _stylize_files(args)
    except (StyleTransferError, ImageFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _stylize_files(args: argparse.Namespace) -> int:
    content = read_image(args.content)
    styles = [read_image(path).rgb for path in args.styles]
    init_path = init_image_path(args)
    init_image = read_image(init_path).rgb if init_path is not None else None
    settings = StyleSettings.from_values(settings_values(args))
    settings.validate(len(styles))  # before the slow model load
    engine = StyleTransfer.from_weights(args.weights, args.device, progress=not args.quiet)
    bar = TerminalProgressBar(force=False) if not args.quiet else None
    try:
        result = engine.stylize(content.rgb, styles, settings, init_image=init_image, on_progress=bar, cancel=CancelToken(),
                                memory_budget=args.memory_budget)
    finally:
        if bar is not None:
            bar.close()
    alpha = None if content.alpha is None else resize(content.alpha[None], *result.shape[-2:])[0]
    write_image(args.output, result, alpha, bits=args.bits or content.bits)
    if not args.quiet:
        print(f"Wrote {args.output} ({result.shape[-1]}×{result.shape[-2]}).")
    return 0
