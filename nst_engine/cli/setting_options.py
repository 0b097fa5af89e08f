"""The style settings' command-line options: one per setting the schema offers on a command line, with
its help, default and range from the schema.  Shared by ``python -m nst_engine`` and ``python -m daemon
run``; the README's table of them is made from :func:`setting_options` too."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..schema import FrontEnd, Kind, Setting
from ..settings import DEFAULT_FRAME_SHARE, DEFAULT_TEMPORAL_WEIGHT, Init, settings_for

# The starting image on a command line: one of these, or an image file (then the setting is "image").
INIT_NAMES = (Init.CONTENT.value, Init.NOISE.value)
_INIT_METAVAR = "|".join((*INIT_NAMES, "FILE"))
_METAVARS = {Kind.NUMBER: "X", Kind.INTEGER: "N", Kind.NUMBERS: "W", Kind.INTEGERS: "N"}


@dataclass(frozen=True)
class SettingOption:
    """One setting's option as a user sees it."""

    setting: Setting
    usage: str  # e.g. "--size N", "--optimizer lbfgs|adam"
    help: str
    default: str | None  # in words; None for a flag that is off unless given

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        item = self.setting
        shown = self.help if self.default is None else f"{self.help} (default: {self.default})"
        rules: dict[str, Any] = {"help": shown.replace("%", "%%")}
        if item.name == "init":
            rules.update(default=item.plain_default(), metavar=_INIT_METAVAR)
        elif item.kind is Kind.FLAG:
            rules.update(action=argparse.BooleanOptionalAction if item.default else "store_true")
        elif item.kind is Kind.CHOICE:
            rules.update(choices=item.choice_values, default=item.plain_default())
        elif item.kind in (Kind.NUMBERS, Kind.INTEGERS):
            rules.update(type=float if item.kind is Kind.NUMBERS else int, nargs="+", metavar=_METAVARS[item.kind])
        else:
            rules.update(type=float if item.kind is Kind.NUMBER else int, default=item.default,
                         metavar=_METAVARS[item.kind])
        parser.add_argument(item.option, **rules)


def setting_options() -> tuple[SettingOption, ...]:
    return tuple(map(_option, settings_for(FrontEnd.CLI)))


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    for option in setting_options():
        option.add_to(parser)


def settings_values(args: argparse.Namespace) -> dict[str, object]:
    """The settings given by :func:`add_settings_arguments`' options, as plain values."""
    values = {item.name: getattr(args, item.name) for item in settings_for(FrontEnd.CLI)}
    if values["init"] not in INIT_NAMES:
        values["init"] = Init.IMAGE.value
    return values


def init_image_path(args: argparse.Namespace) -> Path | None:
    return None if args.init in INIT_NAMES else Path(args.init)


def _option(item: Setting) -> SettingOption:
    spec = item.spec
    if item.name == "init":
        return SettingOption(item, f"{item.option} {_INIT_METAVAR}",
                             f"{spec.help}: {_choices(item, INIT_NAMES, 'an image file')}", item.plain_default())
    if item.kind is Kind.FLAG:
        return SettingOption(item, item.option, spec.help, "on" if item.default else None)
    if item.kind is Kind.CHOICE:
        return SettingOption(item, f"{item.option} {'|'.join(item.choice_values)}",
                             f"{spec.help}: {_choices(item, item.choice_values)}", item.plain_default())
    if item.kind in (Kind.NUMBERS, Kind.INTEGERS):
        return SettingOption(item, f"{item.option} {_METAVARS[item.kind]}…", spec.help, spec.none_means)
    unit = f", in {spec.unit}" if spec.unit else ""
    default = f"{item.default:g}" if item.kind is Kind.NUMBER else str(item.default)
    return SettingOption(item, f"{item.option} {_METAVARS[item.kind]}", f"{spec.help}{unit}; {item.requirement()}",
                         default)


def _choices(item: Setting, values: tuple[str, ...], other: str = "") -> str:
    described = [f"{choice.value} ({choice.help})" for choice in item.spec.choices if choice.value in values]
    described += [other] if other else []
    return ", ".join(described[:-1]) + " or " + described[-1]


def add_animation_arguments(parser: argparse.ArgumentParser) -> None:
    """An animation's own options (nst_engine.sequence), for both command lines."""
    parser.add_argument("--temporal-weight", type=float, default=DEFAULT_TEMPORAL_WEIGHT, metavar="X",
                        help="animations: how strongly each frame keeps the previous result where the motion "
                             "carries it over, relative to the style's pull; 0 stylises the frames independently "
                             "(default: %(default)g)")
    parser.add_argument("--frame-iterations", type=int, default=0, metavar="N",
                        help="animations: iterations of each frame after the first, which starts from the previous "
                             "result and runs the final stage alone "
                             f"(default 0: {DEFAULT_FRAME_SHARE:g}× --iterations)")
