"""The layer a job's result goes into, and what is painted on it while the job runs."""

from __future__ import annotations

from gi.repository import Gegl, Gimp

from pixels import Region, WireFormat, rgb_with_alpha
from plan import PARASITE, Target
from result_record import ResultRecord


class ResultLayer:
    """The new layer: directly above the source, sized and placed like the processed region; for a
    re-run, where the previous result is, which it replaces (or hides) when every job has succeeded."""

    def __init__(self, image, target: Target, region: Region, grayscale: bool, source_pixels: bytes,
                 channels: int, wire: WireFormat) -> None:
        self.image, self.target, self.region = image, target, region
        self.grayscale, self.source_pixels, self.channels, self.wire = grayscale, source_pixels, channels, wire
        self.layer = None
        self.record: ResultRecord | None = None
        self.previews_shown = 0
        self.last_preview_size: tuple[int, int] | None = None

    def insert(self) -> None:
        if self.layer is not None:
            return
        region, source, previous = self.region, self.target.source, self.target.previous
        layer_type = Gimp.ImageType.GRAYA_IMAGE if self.grayscale else Gimp.ImageType.RGBA_IMAGE
        self.layer = Gimp.Layer.new(self.image, f"{source.get_name()} (Neural Style)", region.width,
                                    region.height, layer_type, 100.0, Gimp.LayerMode.NORMAL)
        above = previous if previous is not None else source
        self.image.insert_layer(self.layer, above.get_parent(), self.image.get_item_position(above))
        if previous is not None:
            self.layer.set_offsets(*previous.get_offsets()[1:])
        else:
            offset_x, offset_y = source.get_offsets()[1:]
            self.layer.set_offsets(offset_x + region.x, offset_y + region.y)

    def show(self, rgb) -> None:
        pixels = rgb_with_alpha(rgb, self.source_pixels, self.channels, self.wire.result, self.wire.source)
        buffer = self.layer.get_buffer()
        buffer.set(Gegl.Rectangle.new(0, 0, self.region.width, self.region.height), self.wire.result_format(), pixels)
        buffer.flush()
        self.layer.update(0, 0, self.region.width, self.region.height)
        Gimp.displays_flush()

    def show_preview(self, preview) -> None:
        """A live preview (a daemon.client.contract.Image of RGB), scaled up to the layer if it came smaller."""
        width, height = preview.spec.width, preview.spec.height
        rgb = preview.data
        if (width, height) != (self.region.width, self.region.height):
            rgb = upscaled_rgb(rgb, width, height, self.region.width, self.region.height, self.wire.result.babl)
        self.show(rgb)
        self.previews_shown += 1
        self.last_preview_size = (width, height)

    def finish(self, keep_previous: bool) -> None:
        previous = self.target.previous
        if previous is None:
            if not Gimp.Selection.is_empty(self.image):
                self.layer.add_mask(self.layer.create_mask(Gimp.AddMaskType.SELECTION))
        else:
            self._take_over(previous, keep_previous)
        assert self.record is not None
        self.layer.attach_parasite(Gimp.Parasite.new(PARASITE, Gimp.PARASITE_PERSISTENT,
                                                     self.record.to_json().encode()))

    def _take_over(self, previous, keep_previous: bool) -> None:
        """The previous result's mask, visibility, opacity and mode; its name, unless it stays beside."""
        mask = previous.get_mask()
        if mask is not None and (mask.get_width(), mask.get_height()) == (self.region.width, self.region.height):
            new_mask = self.layer.create_mask(Gimp.AddMaskType.WHITE)
            self.layer.add_mask(new_mask)
            whole = Gegl.Rectangle.new(0, 0, self.region.width, self.region.height)
            fmt = "Y float"
            new_mask.get_buffer().set(whole, fmt, bytes(mask.get_buffer().get(whole, 1.0, fmt, Gegl.AbyssPolicy.NONE)))
            new_mask.get_buffer().flush()
        self.layer.set_opacity(previous.get_opacity())
        self.layer.set_mode(previous.get_mode())
        if keep_previous:
            previous.set_visible(False)
            return
        name = previous.get_name()
        self.image.remove_layer(previous)
        self.layer.set_name(name)

    def remove(self) -> None:
        if self.layer is not None and self.layer.is_valid():
            self.image.remove_layer(self.layer)
        self.layer = None


def upscaled_rgb(rgb, width: int, height: int, to_width: int, to_height: int, sample: str) -> bytes:
    """RGB samples (babl sample type ``sample``: "u16", "float") of a ``width``×``height`` image, at
    ``to_width``×``to_height``: GEGL reads the small buffer at the scale factor (nearest neighbour from
    2×, bilinear below).  The daemon keeps the aspect ratio within a pixel's rounding, so one factor
    serves both sides, and the edge repeats where rounding leaves a row or column short."""
    Gegl.init(None)  # libgimp sets GEGL up on a drawable's first buffer; a plain buffer needs it too (idempotent)
    fmt = f"R'G'B' {sample}"
    small = Gegl.Buffer.new(fmt, 0, 0, width, height)
    small.set(Gegl.Rectangle.new(0, 0, width, height), fmt, bytes(rgb))
    scale = max(to_width / width, to_height / height)
    return bytes(small.get(Gegl.Rectangle.new(0, 0, to_width, to_height), scale, fmt, Gegl.AbyssPolicy.CLAMP))
