"""The plug-in procedure's arguments: the settings the schema offers in GIMP (their defaults, ranges,
choices and help from nst_engine.settings), the schema's settings the plug-in offers besides, and the
plug-in's own.  Needs neither GIMP nor torch, so that it can be tested anywhere; neural_style.py
registers them with GIMP and dialog.py lays them out."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nst_engine.schema import Choice, FrontEnd, Kind, Setting
from nst_engine.settings import MAX_WEIGHT, SETTINGS, settings_for
from presets import PRESET_CHOICES, Preset


class ArgumentKind(enum.Enum):
    LAYER = "layer"
    CHANNEL = "channel"
    DOUBLE = "double"
    INT = "int"
    BOOLEAN = "boolean"
    CHOICE = "choice"


_KIND_OF = {Kind.NUMBER: ArgumentKind.DOUBLE, Kind.INTEGER: ArgumentKind.INT, Kind.FLAG: ArgumentKind.BOOLEAN,
            Kind.CHOICE: ArgumentKind.CHOICE}

EXTRA_STYLES = 2  # style layers beside the first one that the dialog offers
STYLE_LAYERS = tuple(["style-layer"] + [f"style-layer-{n}" for n in range(2, EXTRA_STYLES + 2)])
BLEND_WEIGHTS = tuple(["style-blend-weight"] + [f"style-blend-weight-{n}" for n in range(2, EXTRA_STYLES + 2)])
REGIONS = tuple(["style-region"] + [f"style-region-{n}" for n in range(2, EXTRA_STYLES + 2)])


@dataclass(frozen=True)
class Argument:
    """One argument of the procedure; ``label`` marks its access key with ``_`` (or has none)."""

    name: str
    kind: ArgumentKind
    label: str
    help: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Choice, ...] = ()
    setting: str | None = None  # the engine setting it gives, if any


def _from_setting(item: Setting, label: str | None = None, excluded: tuple[str, ...] = ()) -> Argument:
    label = label or item.spec.label
    if item.kind not in _KIND_OF or not label:
        raise TypeError(f"the setting {item.name} cannot be a GIMP argument: it needs a label and a plain type")
    minimum = 0 if item.spec.zero_means else item.spec.minimum
    help_text = _sentence(item.spec.help)
    if item.spec.zero_means:
        help_text += f"; 0: {item.spec.zero_means}"
    if item.spec.unit:
        help_text += f" ({item.spec.unit})"
    return Argument(item.argument, _KIND_OF[item.kind], label, help_text,
                    item.plain_default(), minimum, item.spec.maximum,
                    tuple(Choice(c.value, c.label, _sentence(c.help)) for c in item.spec.choices
                          if c.value not in excluded), item.name)


def _sentence(text: str) -> str:
    """``text`` with a capital first letter, as GIMP's help texts are written (α and the like stay)."""
    return text[:1].upper() + text[1:] if text[:1].isascii() else text


# Init "image" needs an image the plug-in has no way to pass, so it is left out.
_EXCLUDED_CHOICES = {"init": ("image",)}
DIALOG_BUTTON_KEYS = "lsrco"

# Every label needs an access key of its own, and none may be a key of the dialog's buttons: l (Load
# Saved Settings), s (Save Settings), r (Reset), c (Cancel), o (OK); GIMP warns of a missing or a
# duplicate one.  27 labels leave few letters, hence the scattered keys and the digits.
_LABELS = {
    "style layer": ("Style layer _2", "Style layer _3"),
    "blend weight": ("Blen_d weight", "Blend weig_ht 2", "_Blend weight 3"),
    "region": ("Region _1", "Re_gion 2", "Regio_n 3"),
}
_SIZE = SETTINGS["size"]
_BLEND = SETTINGS["style_blend_weights"]
_OWN = (
    Argument("style-layer", ArgumentKind.LAYER, "Style l_ayer", "Layer whose style is applied"),
    Argument("max-size", ArgumentKind.INT, "Ma_x size",
             "Longest side to optimise at, in pixels; 0 = the layer's own size (the result is scaled to the layer)",
             _SIZE.default, 0, _SIZE.spec.maximum),
    Argument("live-preview", ArgumentKind.BOOLEAN, "Live _preview", "Update the result layer while it runs", False),
    *(Argument(name, ArgumentKind.LAYER, label,
               "A further style layer, blended with the first by the blend weights (none: not used)")
      for name, label in zip(STYLE_LAYERS[1:], _LABELS["style layer"])),
    *(Argument(name, ArgumentKind.DOUBLE, label,
               f"Style layer {n}'s share of the style: {_BLEND.spec.help}", 1.0, 0.0, MAX_WEIGHT)
      for n, (name, label) in enumerate(zip(BLEND_WEIGHTS, _LABELS["blend weight"]), start=1)),
    *(Argument(name, ArgumentKind.CHANNEL, label,
               f"Where style layer {n} applies: a channel (a saved selection) or a layer mask, white where it "
               "applies (none: everywhere)")
      for n, (name, label) in enumerate(zip(REGIONS, _LABELS["region"]), start=1)),
    Argument("preset", ArgumentKind.CHOICE, "_Quality",
             "A preset that sets the size, iterations and stages below; Custom keeps them as they are",
             Preset.CUSTOM.value, choices=PRESET_CHOICES),
    Argument("keep-previous", ArgumentKind.BOOLEAN, "_Keep the previous result",
             "When run on a result: hide the previous result instead of replacing it, to compare variants", False),
    Argument("animation", ArgumentKind.BOOLEAN, "Animation (frames styled _jointly)",
             "With several layers selected or a layer group: the layers are an animation's frames, bottom one "
             "first, stylised consistently frame to frame into a new image of frames (it plays and exports at "
             "once); on by default when layer names carry frame timings such as (100ms)", False),
)
# The arguments' positions so far, which scripts that call the procedure by position rely on; a setting
# newly offered in GIMP comes after them.
_POSITIONS = ("style-layer", "style-weight", "content-weight", "iterations", "max-size", "optimizer",
              "colors", "seed", "live-preview")


def _arguments() -> tuple[Argument, ...]:
    from_schema = [_from_setting(item, excluded=_EXCLUDED_CHOICES.get(item.name, ()))
                   for item in settings_for(FrontEnd.GIMP)]
    by_name = {argument.name: argument for argument in (*_OWN, *from_schema)}
    unplaced = [name for name in by_name if name not in _POSITIONS]
    return tuple(by_name[name] for name in (*_POSITIONS, *unplaced))


ARGUMENTS: tuple[Argument, ...] = _arguments()
BY_NAME: dict[str, Argument] = {argument.name: argument for argument in ARGUMENTS}


def settings_from_arguments(value_of: Callable[[str], Any], width: int, height: int,
                            style_count: int = 1) -> dict[str, Any]:
    """The job's settings from the arguments' values (``value_of(name)``) for a width × height region
    and ``style_count`` style layers: the settings offered in GIMP as given, blend weights for several
    styles, and ``size`` from max-size, which never enlarges."""
    settings = {argument.setting: value_of(argument.name) for argument in ARGUMENTS if argument.setting}
    longest, max_size = max(width, height), value_of("max-size")
    settings["size"] = min(max_size, longest) if max_size > 0 else longest
    if style_count > 1:
        weights = [float(value_of(name)) for name in BLEND_WEIGHTS[:style_count]]
        if sum(weights) <= 0:
            raise ValueError("the blend weights of the style layers are all 0: give at least one a weight")
        settings["style_blend_weights"] = weights
    return settings
