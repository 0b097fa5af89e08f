#!/usr/bin/env python3
"""Neural Style for GIMP 3: Filters → Neural Style….

Thin GIMP glue: reads each selected layer (or the selection's bounds within it) and the style layers at
full precision, sends them to the local daemon one after another, and inserts each result directly
above its source, all in one undo step; with Animation, several layers (or a layer group's) are an
animation's frames, stylised as one sequence into a new image of frames.  Run on a result layer, it re-runs
that result from its source with the result's remembered settings and replaces it in place.
Nothing of the user's image is changed on any failure.
"""

from __future__ import annotations

import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[0:0] = [os.path.join(_HERE, "lib"), _HERE]  # bundled pyzmq/msgpack, and the torch-free client

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, GLib, GObject  # noqa: E402

from animation import stylise_animation  # noqa: E402
from arguments import ARGUMENTS, BY_NAME, STYLE_LAYERS, ArgumentKind  # noqa: E402
from cost_text import estimate_line  # noqa: E402
from daemon.client.contract import DaemonError  # noqa: E402
from frames import names_carry_timings  # noqa: E402
from items import all_layers, item_by_tattoo  # noqa: E402
from plan import STYLE_LAYER_PARASITE, Target, plan_animation, plan_targets  # noqa: E402
from presets import Preset, device_kind, quality  # noqa: E402
from stylise import follow_launch_plan, stylise  # noqa: E402
from user_error import UserError  # noqa: E402

PROCEDURE = "plug-in-neural-style"
STATUS_TIMEOUT_S = 1.0  # how long the dialog waits for the daemon's status


class NeuralStyle(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE
                                       | Gimp.ProcedureSensitivityMask.DRAWABLES)
        procedure.set_menu_label("Neural Style…")
        procedure.add_menu_path("<Image>/Filters")
        procedure.set_documentation(
            "Paint the selected layers in the style of other layers",
            "Gatys-style neural style transfer through the local Neural Style daemon. Each selected layer "
            "gets its result as a new layer directly above it; the selection's bounds limit the region. "
            "Run on a result, it re-runs it from its source with its settings and replaces it.",
            name,
        )
        procedure.set_attribution("Neural Style for GIMP", "Neural Style for GIMP", "2026")

        for argument in ARGUMENTS:
            _add_argument(procedure, argument)
        procedure.add_image_return_value("result-image", "Result image",
                                         "With Animation: the new image of result frames (none otherwise)", True,
                                         GObject.ParamFlags.READWRITE)
        return procedure

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        try:
            follow_launch_plan()  # before any connection: which connection file (remote, Flatpak)
            if image.get_base_type() == Gimp.ImageBaseType.INDEXED:
                raise UserError("Neural Style does not work on indexed images: use Image → Mode → RGB first.")
            animation = plan_animation(image, drawables)
            if animation is not None and animation.record is None and run_mode == Gimp.RunMode.INTERACTIVE \
                    and names_carry_timings([layer.get_name() for layer in all_layers(image)]):
                config.set_property("animation", True)  # the image is an animation: on by default
            if animation is not None and (animation.record is not None or config.get_property("animation")
                                          or run_mode == Gimp.RunMode.INTERACTIVE):
                targets = [Target(frame) for frame in animation.frames]  # for the dialog's estimate
                re_edit, source_image = animation.record, animation.image
            else:
                animation = None
                targets = plan_targets(image, drawables)
                re_edit = next((target.record for target in targets if target.record is not None), None)
                source_image = image
            if re_edit is not None and run_mode != Gimp.RunMode.NONINTERACTIVE:
                _load_record(source_image, config, re_edit)
            elif run_mode != Gimp.RunMode.NONINTERACTIVE:
                _load_remembered_style_layers(source_image, config)
            if re_edit is not None and config.get_property("style-layer") is None:
                _load_record(source_image, config, re_edit, only_layers=True)
            if run_mode == Gimp.RunMode.INTERACTIVE:
                from dialog import run_dialog  # loads GimpUi, which only an interactive run needs

                with _DialogDaemon(image, targets, config) as daemon:
                    accepted = run_dialog(procedure, config, device_kind(daemon.status), re_editing=re_edit is not None,
                                          estimate=daemon.estimate_text if daemon.client is not None else None)
                if not accepted:
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            elif config.get_property("preset") != "custom":
                _apply_preset(config)
            result_image = None
            if animation is not None and (animation.record is not None or config.get_property("animation")):
                result_image = stylise_animation(animation, config, show=run_mode != Gimp.RunMode.NONINTERACTIVE)
            else:
                stylise(image, plan_targets(image, drawables) if animation is not None else targets, config)
        except UserError as error:
            return _error(procedure, str(error))
        except Exception as error:  # any failure: a readable line in GIMP, never a traceback
            return _error(procedure, _message(error))
        values = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
        values.remove(1)
        values.insert(1, GObject.Value(Gimp.Image, result_image))
        return values


def _add_argument(procedure, argument) -> None:
    flags = GObject.ParamFlags.READWRITE
    name, label, help_text = argument.name, argument.label, argument.help
    if argument.kind is ArgumentKind.LAYER:
        procedure.add_layer_argument(name, label, help_text, True, flags)
    elif argument.kind is ArgumentKind.CHANNEL:
        procedure.add_channel_argument(name, label, help_text, True, flags)
    elif argument.kind is ArgumentKind.DOUBLE:
        procedure.add_double_argument(name, label, help_text, argument.minimum, argument.maximum, argument.default,
                                      flags)
    elif argument.kind is ArgumentKind.INT:
        procedure.add_int_argument(name, label, help_text, argument.minimum, argument.maximum, argument.default, flags)
    elif argument.kind is ArgumentKind.BOOLEAN:
        procedure.add_boolean_argument(name, label, help_text, argument.default, flags)
    else:
        choice = Gimp.Choice.new()
        for index, option in enumerate(argument.choices):
            choice.add(option.value, index, option.label, option.help)
        procedure.add_choice_argument(name, label, help_text, choice, argument.default, flags)


class _DialogDaemon:
    """The running daemon while the dialog is open, for its device and its cost estimates; without one
    (none running, or only the bridge works) the dialog says the device is unknown and shows no
    estimate.  The dialog never starts a daemon."""

    def __init__(self, image, targets, config) -> None:
        self.image, self.targets, self.config = image, targets, config
        self.client, self.status = None, None

    def __enter__(self):
        try:
            from daemon.client.zeromq import connect  # pyzmq, which GIMP's Python may lack (then: no estimates)

            self.client = connect(timeout_s=STATUS_TIMEOUT_S)
            self.client.retries = 0
            self.status = self.client.status()
        except Exception:  # no daemon, no pyzmq: no device, no estimate
            self.__exit__()
        return self

    def __exit__(self, *_: object) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def estimate_text(self) -> str:
        target = self.targets[0]
        if target.record is not None:
            width, height = target.record.region.width, target.record.region.height
        else:
            found, _, _, width, height = target.source.mask_intersect()
            if not found:
                return ""
        styles = [self.config.get_property(name) for name in STYLE_LAYERS]
        sizes = [(layer.get_width(), layer.get_height()) for layer in styles if layer is not None]
        return estimate_line(self.client, self.config.get_property, width, height, sizes, len(self.targets))


def _apply_preset(config) -> None:
    """A script's (or Repeat's) preset other than Custom sets the size, iterations and stages for the
    daemon's device, as choosing it in the dialog does."""
    with _DialogDaemon(None, [], config) as daemon:
        chosen = quality(Preset(config.get_property("preset")), device_kind(daemon.status))
    if chosen is not None:
        for name, value in chosen.arguments().items():
            config.set_property(name, value)


def _load_record(image, config, record, only_layers: bool = False) -> None:
    """Set the procedure's values to those a result remembers; UserError when one of its layers is gone."""
    for name, tattoo in record.tattoos.items():
        if name not in BY_NAME:
            continue
        item = item_by_tattoo(image, tattoo) if tattoo is not None else None
        if tattoo is not None and item is None:
            what = "style layer" if BY_NAME[name].kind is ArgumentKind.LAYER else "region"
            raise UserError(f"Neural Style: the {what} this result was made with "
                            f"({BY_NAME[name].label.replace('_', '')}) "
                            "is no longer in the image; choose another with the filter on the source layer.")
        config.set_property(name, item)
    if only_layers:
        return
    for name, value in record.arguments.items():
        if name in BY_NAME and BY_NAME[name].kind not in (ArgumentKind.LAYER, ArgumentKind.CHANNEL):
            config.set_property(name, value)


def _load_remembered_style_layers(image, config) -> None:
    """The style layers of this image's last run.  GIMP 3.0 cannot store a layer among a procedure's
    last values, so the plug-in keeps the layers' tattoos in an image parasite of its own."""
    parasite = image.get_parasite(STYLE_LAYER_PARASITE)
    if parasite is None:
        return
    try:
        remembered = json.loads(bytes(parasite.get_data()).decode())
    except ValueError:
        return
    if not isinstance(remembered, dict):
        return
    for name, tattoo in remembered.items():
        if isinstance(tattoo, int) and config.get_property(name) is None:
            item = item_by_tattoo(image, tattoo)
            if item is not None:
                config.set_property(name, item)


def _error(procedure, message):
    error = GLib.Error.new_literal(GLib.quark_from_string("neural-style"), message, 0)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


def _message(error: BaseException) -> str:
    if isinstance(error, DaemonError):
        return f"Neural Style: {error}"
    return f"Neural Style failed: {type(error).__name__}: {error}"


if __name__ == "__main__":
    Gimp.main(NeuralStyle.__gtype__, sys.argv)
