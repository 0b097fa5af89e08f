"""The plug-in procedure's arguments: the settings the schema offers in GIMP (their defaults, ranges,
choices and help from nst_engine.settings) and the plug-in's own.  Needs neither GIMP nor torch, so
that it can be tested anywhere; neural_style.py registers them with GIMP."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nst_engine.schema import Choice, FrontEnd, Kind, Setting
from nst_engine.settings import SETTINGS, settings_for


class ArgumentKind(enum.Enum):
    LAYER = "layer"
    DOUBLE = "double"
    INT = "int"
    BOOLEAN = "boolean"
    CHOICE = "choice"


_KIND_OF = {Kind.NUMBER: ArgumentKind.DOUBLE, Kind.INTEGER: ArgumentKind.INT, Kind.FLAG: ArgumentKind.BOOLEAN,
            Kind.CHOICE: ArgumentKind.CHOICE}


@dataclass(frozen=True)
class Argument:
    """One argument of the procedure; ``label`` marks its access key with ``_``."""

    name: str
    kind: ArgumentKind
    label: str
    help: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Choice, ...] = ()
    setting: str | None = None  # the engine setting it gives, if any


def _from_setting(item: Setting) -> Argument:
    if item.kind not in _KIND_OF or not item.spec.label:
        raise TypeError(f"the setting {item.name} cannot be a GIMP argument: it needs a label and a plain type")
    minimum = 0 if item.spec.zero_means else item.spec.minimum
    return Argument(item.argument, _KIND_OF[item.kind], item.spec.label, _sentence(item.spec.help),
                    item.plain_default(), minimum, item.spec.maximum,
                    tuple(Choice(c.value, c.label, _sentence(c.help)) for c in item.spec.choices), item.name)


def _sentence(text: str) -> str:
    """``text`` with a capital first letter, as GIMP's help texts are written (α and the like stay)."""
    return text[:1].upper() + text[1:] if text[:1].isascii() else text


_SIZE = SETTINGS["size"]
_OWN = (
    Argument("style-layer", ArgumentKind.LAYER, "_Style layer", "Layer whose style is applied"),
    Argument("max-size", ArgumentKind.INT, "_Max size",
             "Longest side to optimise at, in pixels; 0 = the layer's own size (the result is scaled to the layer)",
             _SIZE.default, 0, _SIZE.spec.maximum),
    Argument("live-preview", ArgumentKind.BOOLEAN, "_Live preview", "Update the result layer while it runs", False),
)
# The arguments' positions so far, which scripts that call the procedure by position rely on; a setting
# newly offered in GIMP comes after them.
_POSITIONS = ("style-layer", "style-weight", "content-weight", "iterations", "max-size", "optimizer",
              "colors", "seed", "live-preview")


def _arguments() -> tuple[Argument, ...]:
    by_name = {argument.name: argument for argument in (*_OWN, *map(_from_setting, settings_for(FrontEnd.GIMP)))}
    unplaced = [name for name in by_name if name not in _POSITIONS]
    return tuple(by_name[name] for name in (*_POSITIONS, *unplaced))


ARGUMENTS: tuple[Argument, ...] = _arguments()


def settings_from_arguments(value_of: Callable[[str], Any], width: int, height: int) -> dict[str, Any]:
    """The job's settings from the arguments' values (``value_of(name)``) for a width × height region:
    the settings offered in GIMP as given, and ``size`` from max-size, which never enlarges."""
    settings = {argument.setting: value_of(argument.name) for argument in ARGUMENTS if argument.setting}
    longest, max_size = max(width, height), value_of("max-size")
    settings["size"] = min(max_size, longest) if max_size > 0 else longest
    return settings
