"""One run of the filter on an animation: its layer-frames, bottom to top, as one sequence job, and the
results as the top-level layers of a new image, each named as its source frame.  An image's top-level
layers are what GIMP plays (Filters → Animation → Playback) and exports as frames (GIF, WebP), so the
result plays and exports at once, timings and combine or replace modes included; GIMP's own animation
filters (Blend, Optimize, …) give new images for the same reason.  The source image is not changed.

A frame's layer appears as soon as its result arrives; on any failure or cancel the new image is closed
again.  The new image remembers the run (an image parasite), so that running the filter in it re-runs the
animation from its source frames, while their image is open, and replaces the frames in place as one undo
step of the result image."""

from __future__ import annotations

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


def _new_result_image(source_image, region: Region):
    """An image like the source's (mode, precision, colour profile, resolution) of the frames' size."""
    image = Gimp.Image.new_with_precision(region.width, region.height, source_image.get_base_type(),
                                          source_image.get_precision())
    profile = source_image.get_color_profile()
    if profile is not None:
        image.set_color_profile(profile)
    _, x_resolution, y_resolution = source_image.get_resolution()
    image.set_resolution(x_resolution, y_resolution)
    return image


class _ResultFrames:
    """The result image and its frames as they arrive: a new image, or for a re-run the earlier result
    image, where each new frame goes directly above the old one it replaces; the old frames go only once
    every frame has arrived, so that a failure leaves that image as it was."""

    def __init__(self, target: AnimationTarget, region: Region, keep_previous: bool, show: bool) -> None:
        self.region, self.show = region, show
        self.replacing = target.previous is not None and not keep_previous
        self.image = target.previous if self.replacing else _new_result_image(target.image, region)
        self.old_tattoos = target.record.result_tattoos if self.replacing else ()
        self.display = None
        self.made: list = []
        self.replaced: list = []  # per made frame, the old frame it replaces, or None
        if self.replacing:
            self.image.undo_group_start()
        else:
            self.image.undo_disable()  # a new image: its making is no step to undo

    def add(self, number: int, source_frame, grayscale: bool):
        layer_type = Gimp.ImageType.GRAYA_IMAGE if grayscale else Gimp.ImageType.RGBA_IMAGE
        layer = Gimp.Layer.new(self.image, source_frame.get_name(), self.region.width, self.region.height,
                               layer_type, source_frame.get_opacity(), source_frame.get_mode())
        old = self._old_frame(number)
        if old is not None:
            self.image.insert_layer(layer, old.get_parent(), self.image.get_item_position(old))
            layer.set_visible(old.get_visible())
        else:
            self.image.insert_layer(layer, None, 0)  # above the frames before it: bottom to top
        self.made.append(layer)
        self.replaced.append(old)
        if self.show and self.display is None and not self.replacing:
            self.display = Gimp.Display.new(self.image)
        return layer

    def _old_frame(self, number: int):
        if number > len(self.old_tattoos):
            return None
        return self.image.get_layer_by_tattoo(self.old_tattoos[number - 1])

    def finish(self, record: ResultRecord) -> None:
        for layer, old, name in zip(self.made, self.replaced, record.frame_names):
            if old is not None:
                self.image.remove_layer(old)
            layer.set_name(name)  # the name the old frame freed: no " #1"
        self.image.attach_parasite(Gimp.Parasite.new(PARASITE, Gimp.PARASITE_PERSISTENT, record.to_json().encode()))
        if self.replacing:
            self.image.undo_group_end()
        else:
            self.image.undo_enable()

    def discard(self) -> None:
        """After a failure: a new image closes again; a re-run's new frames are taken out again."""
        if self.replacing:
            for layer in self.made:
                if layer.is_valid():
                    self.image.remove_layer(layer)
            self.image.undo_group_end()
        elif self.display is not None and self.display.is_valid():
            self.display.delete()  # its only display: the image goes with it
        elif self.image.is_valid():
            self.image.delete()
        Gimp.displays_flush()


def stylise_animation(target: AnimationTarget, config, show: bool):
    """Stylise ``target``'s frames; returns the result image (a new one shown in a window where ``show``)."""
    image = target.image
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
    plan = follow_launch_plan()

    Gimp.progress_init("Neural Style: connecting to the daemon…")
    client = _connect(plan, on_wait=lambda text: Gimp.progress_set_text(text))
    with client:
        if not hasattr(client, "stylize_sequence"):
            raise UserError(NO_BRIDGE)
        results = _ResultFrames(target, region, bool(config.get_property("keep-previous")), show)
        try:
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
                layer = results.add(result.frame, frames[result.frame - 1], grayscale)
                _paint(layer, region, result.image.data, sources.pop(result.frame), channels, wire)
                Gimp.displays_flush()
            details = {"style_layer": styles[0].layer.get_name(), "job_id": job_id, "transport": client.transport,
                       "frames": count}
            record = ResultRecord(frames[0].get_tattoo(), region, plain, tattoos, settings, details,
                                  frame_tattoos=tuple(frame.get_tattoo() for frame in frames),
                                  frame_image_id=image.get_id(),
                                  frame_names=tuple(frame.get_name() for frame in frames),
                                  result_tattoos=tuple(layer.get_tattoo() for layer in results.made))
            results.finish(record)
        except BaseException:
            results.discard()
            raise
    _remember_style_layers(image, tattoos)
    Gimp.displays_flush()
    return results.image
