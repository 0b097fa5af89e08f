#!/usr/bin/env python3
"""Neural Style for GIMP 3: Filters → Neural Style….

Thin GIMP glue: reads the active layer (or the selection's bounds within it) and a style layer at full
precision, sends them to the local daemon, and inserts the result as a new layer directly above the
active one, as one undo step.  Nothing of the user's image is changed on any failure.
"""

from __future__ import annotations

import json
import os
import sys
import threading

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[0:0] = [os.path.join(_HERE, "lib"), _HERE]  # bundled pyzmq/msgpack/blake3, and the torch-free client

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import GLib, GObject, Gegl, Gimp  # noqa: E402

PROCEDURE = "plug-in-neural-style"
PARASITE = "neural-style-settings"
STYLE_LAYER_PARASITE = "neural-style-style-layer"
FLOAT_FORMAT = {False: "R'G'B'A float", True: "Y'A float"}  # by "is grayscale"
LIVE_PREVIEW_EVERY = 10  # iterations between updates of the result layer while it runs


def _install_record() -> dict:
    try:
        with open(os.path.join(_HERE, "install.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


class NeuralStyle(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label("Neural Style…")
        procedure.add_menu_path("<Image>/Filters")
        procedure.set_documentation(
            "Paint the active layer in the style of another layer",
            "Gatys-style neural style transfer through the local Neural Style daemon. The result is a "
            "new layer above the active one; the selection's bounds limit the region.",
            name,
        )
        procedure.set_attribution("Neural Style for GIMP", "Neural Style for GIMP", "2026")
        from arguments import ARGUMENTS

        for argument in ARGUMENTS:
            _add_argument(procedure, argument)
        return procedure

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        if len(drawables) != 1 or not isinstance(drawables[0], Gimp.Layer):
            return _error(procedure, "Neural Style works on exactly one layer: select one layer.")
        layer = drawables[0]
        if image.get_base_type() == Gimp.ImageBaseType.INDEXED:
            return _error(procedure, "Neural Style does not work on indexed images: use Image → Mode → RGB first.")
        if run_mode != Gimp.RunMode.NONINTERACTIVE and config.get_property("style-layer") is None:
            config.set_property("style-layer", _remembered_style_layer(image))
        if run_mode == Gimp.RunMode.INTERACTIVE:
            gi.require_version("GimpUi", "3.0")
            from gi.repository import GimpUi

            GimpUi.init("neural_style")
            dialog = GimpUi.ProcedureDialog.new(procedure, config, "Neural Style")
            dialog.fill(None)
            if not dialog.run():
                dialog.destroy()
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
            dialog.destroy()
        style_layer = config.get_property("style-layer")
        if style_layer is None:
            return _error(procedure, "Choose a style layer.")
        try:
            _stylise(image, layer, style_layer, config)
        except Exception as error:  # any failure: a readable line in GIMP, never a traceback
            return _error(procedure, _message(error))
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def _add_argument(procedure, argument) -> None:
    from arguments import ArgumentKind

    flags = GObject.ParamFlags.READWRITE
    name, label, help_text = argument.name, argument.label, argument.help
    if argument.kind is ArgumentKind.LAYER:
        procedure.add_layer_argument(name, label, help_text, True, flags)
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


def _remembered_style_layer(image):
    """The style layer of this image's last run.  GIMP 3.0 cannot store a layer among a procedure's
    last values, so the plug-in keeps the layer's tattoo in an image parasite of its own."""
    parasite = image.get_parasite(STYLE_LAYER_PARASITE)
    if parasite is None:
        return None
    try:
        return image.get_layer_by_tattoo(int(bytes(parasite.get_data()).decode()))
    except ValueError:
        return None


def _remember_style_layer(image, style_layer) -> None:
    # Not persistent: a remembered choice is not worth a change to the saved file.
    image.attach_parasite(Gimp.Parasite.new(STYLE_LAYER_PARASITE, 0, str(style_layer.get_tattoo()).encode()))


def _error(procedure, message):
    error = GLib.Error.new_literal(GLib.quark_from_string("neural-style"), message, 0)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, error)


def _message(error: BaseException) -> str:
    from daemon.records import DaemonError

    if isinstance(error, DaemonError):
        return f"Neural Style: {error}"
    return f"Neural Style failed: {type(error).__name__}: {error}"


def _read(drawable, region, grayscale: bool) -> bytes:
    rectangle = Gegl.Rectangle.new(region.x, region.y, region.width, region.height)
    return bytes(drawable.get_buffer().get(rectangle, 1.0, FLOAT_FORMAT[grayscale], Gegl.AbyssPolicy.CLAMP))


def _stylise(image, layer, style_layer, config) -> None:
    from arguments import settings_from_arguments
    from pixels import Region
    from progress_text import progress_status

    from daemon.bridge import connect_any
    from daemon.records import DType, Image, ImageSpec

    grayscale = image.get_base_type() == Gimp.ImageBaseType.GRAY
    channels = 2 if grayscale else 4
    found, x, y, width, height = layer.mask_intersect()
    if not found or width == 0 or height == 0:
        raise ValueError("the selection does not overlap the layer")
    region = Region(x, y, width, height)
    style_region = Region(0, 0, style_layer.get_width(), style_layer.get_height())
    source = _read(layer, region, grayscale)
    style = _read(style_layer, style_region, grayscale)

    settings = settings_from_arguments(config.get_property, width, height)
    Gimp.progress_init("Neural Style: connecting to the daemon…")
    record = _install_record()
    client = connect_any(start_command=record.get("start_command"), bridge_command=record.get("bridge_command"),
                         on_wait=lambda text: Gimp.progress_set_text(text))
    live = config.get_property("live-preview")
    target = _ResultLayer(image, layer, region, grayscale, source, channels)
    previews_shown = 0

    def on_progress(progress) -> None:
        nonlocal previews_shown
        text, fraction = progress_status(progress)
        Gimp.progress_set_text(text)
        Gimp.progress_update(fraction)
        if live and progress.preview is not None:
            target.show(progress.preview.data)
            previews_shown += 1

    # Everything that changes the image happens inside one undo group; on any failure the layer made
    # for the result is taken out again, so the image is left as it was.
    image.undo_group_start()
    try:
        if live:
            target.insert()
        with client:
            result = client.stylize(
                Image(ImageSpec(width, height, channels, DType.F32), source),
                [Image(ImageSpec(style_region.width, style_region.height, channels, DType.F32), style)],
                settings, on_progress=on_progress, cancel=threading.Event(), output_size=(width, height),
                preview_every=LIVE_PREVIEW_EVERY if live else 0,
            )
        target.insert()
        target.show(result.image.data)
        record = {**settings, "style_layer": style_layer.get_name(), "job_id": result.job_id,
                  "live_preview_updates": previews_shown, "transport": client.transport}
        target.finish(json.dumps(record))
        _remember_style_layer(image, style_layer)
    except BaseException:
        target.remove()
        raise
    finally:
        image.undo_group_end()
    Gimp.displays_flush()


class _ResultLayer:
    """The new layer directly above the source, sized and placed like the processed region."""

    def __init__(self, image, source_layer, region, grayscale: bool, source_pixels: bytes, channels: int) -> None:
        self.image, self.source_layer, self.region = image, source_layer, region
        self.grayscale, self.source_pixels, self.channels = grayscale, source_pixels, channels
        self.layer = None

    def insert(self) -> None:
        if self.layer is not None:
            return
        region = self.region
        layer_type = Gimp.ImageType.GRAYA_IMAGE if self.grayscale else Gimp.ImageType.RGBA_IMAGE
        self.layer = Gimp.Layer.new(self.image, f"{self.source_layer.get_name()} (Neural Style)", region.width,
                                    region.height, layer_type, 100.0, Gimp.LayerMode.NORMAL)
        self.image.insert_layer(self.layer, self.source_layer.get_parent(),
                                self.image.get_item_position(self.source_layer))
        offset_x, offset_y = self.source_layer.get_offsets()[1:]
        self.layer.set_offsets(offset_x + region.x, offset_y + region.y)

    def show(self, rgb) -> None:
        from pixels import rgb_with_alpha

        pixels = rgb_with_alpha(rgb, self.source_pixels, self.channels)
        buffer = self.layer.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, self.region.width, self.region.height), "R'G'B'A float", pixels)
        buffer.flush()
        self.layer.update(0, 0, self.region.width, self.region.height)
        Gimp.displays_flush()

    def finish(self, settings_json: str) -> None:
        if not Gimp.Selection.is_empty(self.image):
            self.layer.add_mask(self.layer.create_mask(Gimp.AddMaskType.SELECTION))
        self.layer.attach_parasite(Gimp.Parasite.new(PARASITE, Gimp.PARASITE_PERSISTENT, settings_json.encode()))

    def remove(self) -> None:
        if self.layer is not None and self.layer.is_valid():
            self.image.remove_layer(self.layer)
        self.layer = None


if __name__ == "__main__":
    Gimp.main(NeuralStyle.__gtype__, sys.argv)
