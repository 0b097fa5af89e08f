"""The plug-in's dialog: the procedure's arguments grouped in frames (Style, with More styles and regions
inside it; Quality) and the Advanced expander, the line that says which device the daemon runs on, and
the quality preset that fills in the size, iterations and stages.  Needs GIMP's UI; neural_style.py opens
it for interactive runs."""

from __future__ import annotations

from collections.abc import Callable

import gi

gi.require_version("GimpUi", "3.0")
from gi.repository import GimpUi, GLib, GObject  # noqa: E402

from arguments import BLEND_WEIGHTS, BY_NAME, REGIONS, STYLE_LAYERS  # noqa: E402
from presets import DeviceKind, Preset, describe, opening_preset, quality  # noqa: E402

_QUALITY_VALUES = ("max-size", "iterations", "scales", "coarse-iterations")
_MORE_STYLES = (BLEND_WEIGHTS[0], REGIONS[0],
                *(name for names in zip(STYLE_LAYERS[1:], BLEND_WEIGHTS[1:], REGIONS[1:]) for name in names))
# (group, title, its values, shown as an expander: closed until opened, so that the dialog fits a
# 1366×768 laptop screen; "more-styles" lies inside "style").
_GROUPS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("more-styles", "More styles and regions", _MORE_STYLES, True),
    ("style", "Style", ("style-line", "style-layer", "strength", "style-scale", "colors", "more-styles-frame"), False),
    ("quality", "Quality", ("preset", "device-line", "max-size", "iterations", "estimate-line", "toggles"), False),
    ("advanced", "Advanced", ("style-weight", "content-weight", "tv-weight", "init", "seed", "optimizer", "precision",
                              "memory-budget-mib", "scales", "coarse-iterations"), True),
)
_TOP_GROUPS = ("style", "quality", "advanced")


def run_dialog(procedure, config, kind: DeviceKind | None, *, re_editing: bool,
               estimate: Callable[[], str] | None = None) -> bool:
    """Show the dialog; True when the user pressed OK."""
    GimpUi.init("neural_style")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, "Neural Style")
    dialog.get_label("device-line", describe(kind), False, False)
    style_label = dialog.get_label("style-line", "", False, False)
    estimate_label = dialog.get_label("estimate-line", "", False, False)
    dialog.get_scale_entry("strength", 1.0)  # a slider: 0–100 reads at a glance
    # Side by side, so that the Animation choice costs the dialog no height.
    dialog.fill_flowbox("toggles", ["live-preview", "animation"])
    containers = {}
    for group, title, names, expander in _GROUPS:
        dialog.get_label(f"{group}-title", f"<b>{title}</b>", True, False)
        dialog.fill_box(f"{group}-box", list(names))
        fill = dialog.fill_expander if expander else dialog.fill_frame
        containers[group] = fill(f"{group}-frame", f"{group}-title", False, f"{group}-box")
    if more_styles_in_use(config):
        containers["more-styles"].set_expanded(True)
    for name in (*STYLE_LAYERS, *REGIONS):
        _redraw_thumbnail_once_sized(dialog.get_widget(name, GObject.TYPE_NONE))
    frames = [f"{group}-frame" for group in _TOP_GROUPS]
    dialog.fill([*frames, "keep-previous"] if re_editing else frames)
    _PresetBinding(config, kind)
    values = {name: config.get_property(name) for name in _QUALITY_VALUES}
    defaults = {name: BY_NAME[name].default for name in _QUALITY_VALUES}
    config.set_property("preset", opening_preset(Preset(config.get_property("preset")), values, defaults).value)

    # GIMP 3.0's layer chooser shows a thumbnail and no name: the names, in words.
    def refresh_styles(*_: object) -> None:
        style_label.set_text(styles_text(config))

    for name in STYLE_LAYERS:
        config.connect(f"notify::{name}", refresh_styles)
    refresh_styles()

    def refresh_estimate(*_: object) -> None:
        if estimate is not None:
            estimate_label.set_text(estimate())

    if estimate is not None:
        for name in (*_QUALITY_VALUES, "preset", "style-scale", "optimizer", "precision", "memory-budget-mib"):
            config.connect(f"notify::{name}", refresh_estimate)
        refresh_estimate()
    else:
        estimate_label.set_visible(False)
    accepted = dialog.run()
    dialog.destroy()
    return bool(accepted)


def _redraw_thumbnail_once_sized(chooser) -> None:
    """GIMP 3.0's drawable chooser fetches its thumbnail when its drawable is set, at its preview's size
    then; a drawable given before the dialog is shown (remembered, or the caller's) is drawn at no size and
    never again, leaving the chooser empty.  Setting the same drawable again once the chooser has its
    size draws it."""
    drawn_at: list[tuple[int, int]] = []

    def redraw() -> bool:
        drawable = chooser.get_drawable()
        if drawable is not None:  # an empty chooser has nothing to draw (and set_drawable refuses None)
            chooser.set_drawable(drawable)
        return GLib.SOURCE_REMOVE

    def sized(_widget, allocation) -> None:
        size = (allocation.width, allocation.height)
        if size not in drawn_at:
            drawn_at.append(size)
            GLib.idle_add(redraw)

    chooser.connect("size-allocate", sized)


def more_styles_in_use(config) -> bool:
    """Whether the values behind "More styles and regions" differ from their defaults (a re-edited
    result's, say), so that the dialog opens with them shown."""
    return any(config.get_property(name) is not None for name in (*STYLE_LAYERS[1:], *REGIONS)) or any(
        config.get_property(name) != BY_NAME[name].default for name in BLEND_WEIGHTS)


def styles_text(config) -> str:
    chosen = []
    for number, name in enumerate(STYLE_LAYERS, start=1):
        layer = config.get_property(name)
        if layer is not None:
            chosen.append(f"{number}: “{layer.get_name()}” ({layer.get_width()}×{layer.get_height()})")
    return "Style layers — " + ", ".join(chosen) if chosen else "Choose a style layer."


class _PresetBinding:
    """Choosing a preset writes its values; editing one of them by hand makes the preset Custom."""

    def __init__(self, config, kind: DeviceKind | None) -> None:
        self.config, self.kind, self.writing = config, kind, False
        config.connect("notify::preset", self.preset_changed)
        for name in _QUALITY_VALUES:
            config.connect(f"notify::{name}", self.value_changed)

    def preset_changed(self, *_: object) -> None:
        chosen = quality(Preset(self.config.get_property("preset")), self.kind)
        if chosen is None:
            return
        self.writing = True
        try:
            for name, value in chosen.arguments().items():
                self.config.set_property(name, value)
        finally:
            self.writing = False

    def value_changed(self, *_: object) -> None:
        if self.writing:
            return
        chosen = quality(Preset(self.config.get_property("preset")), self.kind)
        if chosen is not None and any(self.config.get_property(name) != value
                                      for name, value in chosen.arguments().items()):
            self.config.set_property("preset", Preset.CUSTOM.value)
