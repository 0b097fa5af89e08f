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
from ..schema import FrontEnd, Kind, Setting
from ..settings import Init, StyleSettings, settings_for
from ..transfer import StyleTransfer
from ..weights import WEIGHTS_ENV_VAR, load_vgg19_state_dict
from .image_files import ImageFileError, read_image, write_image
from .progress_bar import TerminalProgressBar

# The starting image on a command line: one of these, or an image file (then the setting is "image").
_INIT_NAMES = (Init.CONTENT.value, Init.NOISE.value)
_METAVARS = {Kind.NUMBER: "X", Kind.INTEGER: "N", Kind.NUMBERS: "W"}


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """An option for every setting the schema offers on a command line (shared with ``python -m daemon run``)."""
    for item in settings_for(FrontEnd.CLI):
        if item.name == "init":
            parser.add_argument(item.option, default=item.plain_default(), metavar="|".join((*_INIT_NAMES, "FILE")),
                                help=f"{item.spec.help}: {_choices_text(item, _INIT_NAMES, 'an image file')} "
                                     "(default: %(default)s)")
        elif item.kind is Kind.FLAG:
            parser.add_argument(item.option, action="store_true" if not item.default else argparse.BooleanOptionalAction,
                                help=item.spec.help)
        elif item.kind is Kind.CHOICE:
            parser.add_argument(item.option, choices=item.choice_values, default=item.plain_default(),
                                help=f"{item.spec.help}: {_choices_text(item, item.choice_values)} (default: %(default)s)")
        elif item.kind is Kind.NUMBERS:
            parser.add_argument(item.option, type=float, nargs="+", metavar=_METAVARS[item.kind],
                                help=f"{item.spec.help} (default: {item.spec.none_means})")
        else:
            parser.add_argument(item.option, type=float if item.kind is Kind.NUMBER else int, default=item.default,
                                metavar=_METAVARS[item.kind], help=f"{_describe(item)} (default: %(default)s)")


def _describe(item: Setting) -> str:
    unit = f", in {item.spec.unit}" if item.spec.unit else ""
    return f"{item.spec.help}{unit}; {item.requirement()}"


def _choices_text(item: Setting, values: tuple[str, ...], other: str = "") -> str:
    described = [f"{choice.value} ({choice.help})" for choice in item.spec.choices if choice.value in values]
    described += [other] if other else []
    return ", ".join(described[:-1]) + " or " + described[-1]


def settings_values(args: argparse.Namespace) -> dict[str, object]:
    """The settings given by :func:`add_settings_arguments`' options, as plain values."""
    values = {item.name: getattr(args, item.name) for item in settings_for(FrontEnd.CLI)}
    if values["init"] not in _INIT_NAMES:
        values["init"] = Init.IMAGE.value
    return values


def init_image_path(args: argparse.Namespace) -> Path | None:
    return None if args.init in _INIT_NAMES else Path(args.init)


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
    parser.add_argument("content", nargs="?", type=Path, help="content image (PNG, JPEG or TIFF; 8 or 16 bit)")
    parser.add_argument("styles", nargs="*", type=Path, metavar="style", help="one or more style images")
    parser.add_argument("-o", "--output", type=Path, help="output image (.png for 16-bit)")
    add_settings_arguments(parser)
    parser.add_argument("--weights", type=Path, help=f"local VGG19 state dict (default: ${WEIGHTS_ENV_VAR}, else torchvision's cached download)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: %(default)s)")
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
