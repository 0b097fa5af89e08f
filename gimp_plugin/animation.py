"""One run of the filter on an animation: its layer-frames, bottom to top, as one sequence job, and the
results as a new layer group of frames with the frames' names, one undo step.  GIMP keeps layer names
unique within an image, so each result frame's name is its source's with GIMP's " #1" added: the
timing and the combine or replace mode stay in it, for Playback and export.  A frame's layer appears
in the group as soon as its result arrives; on any failure or cancel the group is taken out again, so
that the image is left as it was (no half-finished animation stays behind)."""

from __future__ import annotations

import re
import threading

from gi.repository import Gegl, Gimp

from arguments import settings_from_arguments
from daemon.wire.messages import Image, ImageSpec
from pixels import Region, WireFormat, rgb_with_alpha
from plan import PARASITE, AnimationTarget
from progress_text import progress_status
from result_record import ResultRecord
from stylise import (
    _connect,
    _plain_arguments,
    _remember_style_layers,
    _style_image,
    _styles,
    _wire_format,
    follow_launch_plan,
)
from user_error import UserError

NO_BRIDGE = ("Neural Style: Animation needs the plug-in's direct connection to the daemon (pyzmq); this GIMP "
             "reaches it through the pipe bridge, which does not run animations. Run the layers one by one, "
             "or install the plug-in with pyzmq for GIMP's Python.")


def _read_over(layer, region: Region, fmt: str) -> bytes:
    """``layer`` over ``region`` (image coordinates), transparent where the layer does not reach."""
    x, y = layer.get_offsets()[1:]
    rectangle = Gegl.Rectangle.new(region.x - x, region.y - y, region.width, region.height)
    return bytes(layer.get_buffer().get(rectangle, 1.0, fmt, Gegl.AbyssPolicy.NONE))


def _paint(layer, region: Region, rgb, source: bytes, channels: int, wire: WireFormat) -> None:
    pixels = rgb_with_alpha(rgb, source, channels, wire.result, wire.source)
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, region.width, region.height), wire.result_format(), pixels)
    buffer.flush()
    layer.update(0, 0, region.width, region.height)


def stylise_animation(image, target: AnimationTarget, config) -> None:
    grayscale = image.get_base_type() == Gimp.ImageBaseType.GRAY
    channels = 2 if grayscale else 4
    wire = _wire_format(image)
    styles = _styles(config)
    if any(style.region is not None for style in styles):
        raise UserError("Neural Style: regions are not offered for animations; set the styles' regions to none, "
                        "or untick Animation.")
    style_images = [_style_image(style.layer, grayscale) for style in styles]
    plain, tattoos = _plain_arguments(config)
    region = target.region(image)
    settings = settings_from_arguments(config.get_property, region.width, region.height, len(styles))
    frames, count = target.frames, len(target.frames)
    fmt = wire.colour(wire.source, grayscale)
    layer_type = Gimp.ImageType.GRAYA_IMAGE if grayscale else Gimp.ImageType.RGBA_IMAGE
    plan = follow_launch_plan()

    Gimp.progress_init("Neural Style: connecting to the daemon…")
    group = None
    image.undo_group_start()
    try:
        client = _connect(plan, on_wait=lambda text: Gimp.progress_set_text(text))
        with client:
            if not hasattr(client, "stylize_sequence"):
                raise UserError(NO_BRIDGE)
            group = Gimp.GroupLayer.new(image, target.name)
            image.insert_layer(group, target.above.get_parent(), image.get_item_position(target.above))
            sources: dict[int, bytes] = {}  # frames sent and not yet back: their alpha goes onto the result

            def frame_images():
                for number, layer in enumerate(frames, start=1):
                    sources[number] = _read_over(layer, region, fmt)
                    yield Image(ImageSpec(region.width, region.height, channels, wire.source.dtype), sources[number])

            def on_progress(progress) -> None:
                text, fraction = progress_status(progress)
                Gimp.progress_set_text(text)
                Gimp.progress_update(fraction)

            job_id = None
            for result in client.stylize_sequence(frame_images(), count, style_images, settings,
                                                  on_progress=on_progress, cancel=threading.Event(),
                                                  output_size=(region.width, region.height),
                                                  result_dtype=wire.result.dtype):
                job_id = result.job_id
                layer = Gimp.Layer.new(image, frames[result.frame - 1].get_name(), region.width, region.height,
                                       layer_type, 100.0, Gimp.LayerMode.NORMAL)
                image.insert_layer(layer, group, 0)  # above the frames before it: bottom to top
                layer.set_offsets(region.x, region.y)
                _paint(layer, region, result.image.data, sources.pop(result.frame), channels, wire)
                Gimp.displays_flush()
            transport = client.transport
        details = {"style_layer": styles[0].layer.get_name(), "job_id": job_id, "transport": transport,
                   "frames": count}
        record = ResultRecord(frames[0].get_tattoo(), region, plain, tattoos, settings, details,
                              tuple(frame.get_tattoo() for frame in frames))
        group.attach_parasite(Gimp.Parasite.new(PARASITE, Gimp.PARASITE_PERSISTENT, record.to_json().encode()))
        if target.previous is not None:
            _take_over(image, group, target.previous, config.get_property("keep-previous"))
        _remember_style_layers(image, tattoos)
    except BaseException:
        if group is not None and group.is_valid():
            image.remove_layer(group)
        raise
    finally:
        image.undo_group_end()
    Gimp.displays_flush()


def _without_number(name: str) -> str:
    return re.sub(r" #\d+$", "", name)


def _take_over(image, group, previous, keep_previous: bool) -> None:
    """The previous result group's visibility, opacity and mode; its name unless it stays beside, hidden."""
    group.set_opacity(previous.get_opacity())
    group.set_mode(previous.get_mode())
    group.set_visible(previous.get_visible())
    if keep_previous:
        previous.set_visible(False)
        return
    name = previous.get_name()
    image.remove_layer(previous)
    group.set_name(name)
    for child in group.get_children():  # the names the previous frames had freed: "#1" again, not "#2"
        child.set_name(_without_number(child.get_name()))
