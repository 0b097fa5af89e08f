"""One run of the filter: a job per target, one after another, and their results put into the image
as one undo step.  Nothing of the image changes unless every job succeeds."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

from gi.repository import Gegl, Gimp

from arguments import ARGUMENTS, REGIONS, STYLE_LAYERS, ArgumentKind, settings_from_arguments
from daemon.client.bridge import connect_any
from daemon.client.contract import DaemonUnreachableError
from daemon.client.launch import CONNECTION_ENV_VAR, plan_launch
from daemon.wire.messages import Image, ImageSpec
from pixels import FULL_PRECISION, Region, WireFormat, wire_format, with_mask_in_alpha
from plan import STYLE_LAYER_PARASITE, Target
from preview_size import gdk_monitors, preview_max_side
from progress_text import progress_status
from result_layer import ResultLayer
from result_record import ResultRecord
from user_error import UserError

LIVE_PREVIEW_EVERY = 10  # iterations between updates of the result layer while it runs
_HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class _Style:
    layer: object
    region: object | None  # a channel or layer mask: where this style applies in the output


def _install_record() -> dict:
    try:
        with open(os.path.join(_HERE, "install.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def follow_launch_plan():
    """Where the daemon is and whether this plug-in may start it (a remote daemon: never; a Flatpak GIMP:
    through flatpak-spawn on the host, or not at all), from install.json; points the client at the plan's
    connection file."""
    plan = plan_launch(_install_record())
    if plan.connection_file is not None:
        os.environ[CONNECTION_ENV_VAR] = str(plan.connection_file)
    return plan


def _connect(plan, on_wait):
    try:
        return connect_any(start_command=plan.start_command, bridge_command=plan.bridge_command, on_wait=on_wait)
    except DaemonUnreachableError as error:
        if plan.start_command is None:  # nothing was started: say how to start it
            raise UserError(f"{error} {plan.advice}") from None
        raise


def _styles(config) -> list[_Style]:
    first = config.get_property(STYLE_LAYERS[0])
    if first is None:
        raise UserError("Choose a style layer.")
    styles = [_Style(first, config.get_property(REGIONS[0]))]
    for name, region in zip(STYLE_LAYERS[1:], REGIONS[1:]):
        layer = config.get_property(name)
        if layer is not None:
            styles.append(_Style(layer, config.get_property(region)))
    for style in styles:
        if not style.layer.is_valid():
            raise UserError("Neural Style: a chosen style layer is no longer in the image.")
    return styles


def _precision(image) -> str:
    return image.get_precision().value_name


def _linear(image) -> bool:
    precision = _precision(image)
    return "LINEAR" in precision and "NON_LINEAR" not in precision


def _wire_format(image) -> WireFormat:
    return wire_format(_precision(image), own_profile=image.get_color_profile() is not None)


def _read(drawable, region: Region, fmt: str) -> bytes:
    rectangle = Gegl.Rectangle.new(region.x, region.y, region.width, region.height)
    return bytes(drawable.get_buffer().get(rectangle, 1.0, fmt, Gegl.AbyssPolicy.CLAMP))


def _style_image(layer, grayscale: bool):
    """The style layer with its layer mask multiplied into its alpha: where either is 0, the style's
    statistics take nothing (the daemon weights the Gram matrices by the alpha).  It travels as its own
    image's precision allows (a style layer may be in another image than the content).  A style with a
    layer mask travels as float32 whatever the precision: the product of two 8- or 16-bit values is not
    on their grid, and rounding it would coarsen the weights the user painted; such styles are rare and
    usually small, so the bytes this costs hardly matter."""
    image = layer.get_image()
    wire = _wire_format(image)
    whole = Region(0, 0, layer.get_width(), layer.get_height())
    channels = 2 if grayscale else 4
    mask = layer.get_mask()
    sample = wire.source if mask is None else FULL_PRECISION.source
    pixels = _read(layer, whole, wire.colour(sample, grayscale))
    if mask is not None:
        pixels = with_mask_in_alpha(pixels, _read(mask, whole, FULL_PRECISION.mask(_linear(image))), channels)
    return Image(ImageSpec(whole.width, whole.height, channels, sample.dtype), pixels)


def _region_image(item, source, region: Region):
    """``item`` (a channel, or a layer mask) over the part of the image the source's ``region`` covers,
    in its image's compact sample type where it has one (channels are stored in the image's precision)."""
    image = item.get_image()
    wire = _wire_format(image)
    source_x, source_y = source.get_offsets()[1:]
    item_x, item_y = item.get_offsets()[1:]
    placed = Region(source_x + region.x - item_x, source_y + region.y - item_y, region.width, region.height)
    return Image(ImageSpec(region.width, region.height, 1, wire.source.dtype),
                 _read(item, placed, wire.mask(_linear(image))))


def _tattoo(item) -> int | None:
    return None if item is None else item.get_tattoo()


def _plain_arguments(config) -> tuple[dict, dict]:
    plain, tattoos = {}, {}
    for argument in ARGUMENTS:
        value = config.get_property(argument.name)
        if argument.kind in (ArgumentKind.LAYER, ArgumentKind.CHANNEL):
            tattoos[argument.name] = _tattoo(value)
        else:
            plain[argument.name] = value
    return plain, tattoos


def stylise(image, targets: list[Target], config) -> None:
    grayscale = image.get_base_type() == Gimp.ImageBaseType.GRAY
    channels = 2 if grayscale else 4
    wire = _wire_format(image)
    styles = _styles(config)
    style_images = [_style_image(style.layer, grayscale) for style in styles]
    uses_regions = any(style.region is not None for style in styles)
    plain, tattoos = _plain_arguments(config)
    live = config.get_property("live-preview")
    preview_side = preview_max_side(os.environ, gdk_monitors()) if live else 0
    keep_previous = config.get_property("keep-previous")
    plan = follow_launch_plan()

    Gimp.progress_init("Neural Style: connecting to the daemon…")
    made: list[ResultLayer] = []
    # Everything that changes the image happens inside one undo group; on any failure the layers made
    # for the results are taken out again, so the image is left as it was.
    image.undo_group_start()
    try:
        for number, target in enumerate(targets, start=1):
            source = target.source
            region = target.record.region if target.record is not None else _selected_region(source)
            source_pixels = _read(source, region, wire.colour(wire.source, grayscale))
            settings = settings_from_arguments(config.get_property, region.width, region.height, len(styles))
            result_layer = ResultLayer(image, target, region, grayscale, source_pixels, channels, wire)
            made.append(result_layer)

            def on_progress(progress, number=number, result_layer=result_layer) -> None:
                text, fraction = progress_status(progress, number, len(targets))
                Gimp.progress_set_text(text)
                Gimp.progress_update(fraction)
                if live and progress.preview is not None:
                    result_layer.show_preview(progress.preview)

            options = {}
            if uses_regions:
                options["regions"] = [None if style.region is None else
                                      _region_image(style.region, source, region) for style in styles]
            if live:
                result_layer.insert()
            client = _connect(plan, on_wait=lambda text: Gimp.progress_set_text(text))
            with client:
                result = client.stylize(
                    Image(ImageSpec(region.width, region.height, channels, wire.source.dtype), source_pixels),
                    style_images, settings, on_progress=on_progress, cancel=threading.Event(),
                    output_size=(region.width, region.height), result_dtype=wire.result.dtype,
                    preview_every=LIVE_PREVIEW_EVERY if live else 0, preview_max_side=preview_side, **options)
            result_layer.insert()
            result_layer.show(result.image.data)
            details = {"style_layer": styles[0].layer.get_name(), "job_id": result.job_id,
                       "live_preview_updates": result_layer.previews_shown, "transport": client.transport,
                       "wire": {"source": wire.source.dtype.value, "result": wire.result.dtype.value,
                                "image_bytes_sent": result.image_bytes_sent}}
            if live:
                details["live_preview"] = {"max_side": preview_side, "last_size": result_layer.last_preview_size}
            result_layer.record = ResultRecord(source.get_tattoo(), region, plain, tattoos, settings, details)
        for result_layer in made:
            result_layer.finish(keep_previous)
        _remember_style_layers(image, tattoos)
    except BaseException:
        for result_layer in made:
            result_layer.remove()
        raise
    finally:
        image.undo_group_end()
    Gimp.displays_flush()


def _selected_region(layer) -> Region:
    found, x, y, width, height = layer.mask_intersect()
    if not found or width == 0 or height == 0:
        raise UserError(f"Neural Style: the selection does not overlap the layer “{layer.get_name()}”.")
    return Region(x, y, width, height)


def _remember_style_layers(image, tattoos: dict) -> None:
    # Not persistent: a remembered choice is not worth a change to the saved file.
    remembered = {name: tattoos.get(name) for name in (*STYLE_LAYERS, *REGIONS)}
    image.attach_parasite(Gimp.Parasite.new(STYLE_LAYER_PARASITE, 0, json.dumps(remembered).encode()))
