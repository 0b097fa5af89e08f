"""Pixel helpers for the plug-in that need neither GIMP nor torch (so they can be tested anywhere).

GEGL hands out and takes interleaved samples as bytes; the ``array`` module does the channel shuffling
at C speed with strided slice assignment.
"""

from __future__ import annotations

import enum
from array import array
from dataclasses import dataclass

from daemon.wire.messages import DType


@dataclass(frozen=True)
class Region:
    """A rectangle in a drawable's own coordinates."""

    x: int
    y: int
    width: int
    height: int


class Sample(enum.Enum):
    """A sample type pixels are read from and written to GEGL in: its babl name, the wire dtype of the
    same bytes, its ``array`` type code and the value that stands for 1.0."""

    U8 = ("u8", DType.U8, "B", 255)
    U16 = ("u16", DType.U16, "H", 65535)
    FLOAT = ("float", DType.F32, "f", 1.0)

    def __init__(self, babl: str, dtype: DType, typecode: str, top: float) -> None:
        self.babl, self.dtype, self.typecode, self.top = babl, dtype, typecode, top
        self.itemsize = array(typecode).itemsize


@dataclass(frozen=True)
class WireFormat:
    """How one image's pixels travel: sources read and sent as ``source``, results (and previews) asked
    for and written back as ``result``."""

    source: Sample
    result: Sample

    def colour(self, sample: Sample, grayscale: bool) -> str:
        """The babl format of a layer's pixels with alpha, e.g. "R'G'B'A u8"."""
        model = "Y'A" if grayscale else "R'G'B'A"
        return f"{model} {sample.babl}"

    def result_format(self) -> str:
        return f"R'G'B'A {self.result.babl}"

    def mask(self, linear: bool) -> str:
        """The babl format of a region (a channel or layer mask), read as stored: linear in a linear image."""
        model = "Y" if linear else "Y'"
        return f"{model} {self.source.babl}"


FULL_PRECISION = WireFormat(Sample.FLOAT, Sample.FLOAT)
_COMPACT_SOURCES = {"U8": Sample.U8, "U16": Sample.U16}
_ENCODED = ("NON_LINEAR", "PERCEPTUAL")  # sRGB-encoded samples, the encoding the wire carries


def wire_format(precision: str, *, own_profile: bool = False) -> WireFormat:
    """From a Gimp.Precision value name ("GIMP_PRECISION_U8_NON_LINEAR" or "U8_NON_LINEAR"): 8- and 16-bit
    sRGB-encoded images send their samples as they are stored (u8, u16: a quarter and a half of float32's
    bytes) and get u16 results, whose 65536 levels are finer than either source's, so nothing visible is
    lost; everything else stays float32 both ways.  Linear-light integer images stay float32 because the
    wire carries sRGB-encoded values: re-encoding their samples at the same bit depth would round dark
    tones away.  ``own_profile``: the image has a colour profile of its own, so GEGL converts its pixels
    to sRGB when they are read, and the converted values are not on the integer grid either."""
    name = precision.upper().removeprefix("GIMP_PRECISION_")
    bits, _, encoding = name.partition("_")
    source = _COMPACT_SOURCES.get(bits)
    if source is None or encoding not in _ENCODED or own_profile:
        return FULL_PRECISION
    return WireFormat(source, Sample.U16)


def samples(data: bytes | bytearray | memoryview, sample: Sample = Sample.FLOAT) -> array:
    values = array(sample.typecode)
    values.frombytes(bytes(data))
    return values


def floats(data: bytes | bytearray | memoryview) -> array:
    return samples(data, Sample.FLOAT)


def _converted(values: array, source: Sample, target: Sample) -> array:
    """Samples of one type as another (1.0 stays 1.0)."""
    if source is target:
        return values
    if (source, target) == (Sample.U8, Sample.U16):
        # a · 65535/255 = a · 257: both bytes of the u16 are a, whatever the byte order
        octets = values.tobytes()
        wide = bytearray(2 * len(octets))
        wide[0::2] = octets
        wide[1::2] = octets
        return samples(wide, Sample.U16)
    scale = target.top / source.top
    if target is Sample.FLOAT:
        return array("f", (value * scale for value in values))
    return array(target.typecode, (round(min(max(value * scale, 0.0), target.top)) for value in values))


def _place(out: bytearray, index: int, count: int, data: bytes, data_index: int, data_count: int, size: int) -> None:
    """Sample ``data_index`` of every ``data_count`` in ``data`` into sample ``index`` of every ``count``
    in ``out``, ``size`` bytes each: byte by byte, since strided slices of bytes copy faster than typed
    arrays' (a u16 channel of a 12-megapixel layer about three times faster)."""
    for byte in range(size):
        out[index * size + byte :: count * size] = data[data_index * size + byte :: data_count * size]


def rgb_with_alpha(rgb: bytes | memoryview, source: bytes | memoryview, source_channels: int,
                   result_sample: Sample = Sample.FLOAT, source_sample: Sample = Sample.FLOAT) -> bytes:
    """RGBA in ``result_sample``: the result's RGB with the alpha of the source's RGBA/YA pixels, which
    are in ``source_sample``."""
    size, source_size = result_sample.itemsize, source_sample.itemsize
    rgb, source = bytes(rgb), bytes(source)
    pixels = len(rgb) // (3 * size)
    if len(rgb) != 3 * size * pixels or len(source) != pixels * source_channels * source_size:
        raise ValueError("result and source sizes differ")
    source_alpha = bytearray(pixels * source_size)
    _place(source_alpha, 0, 1, source, source_channels - 1, source_channels, source_size)
    alpha = _converted(samples(source_alpha, source_sample), source_sample, result_sample).tobytes()
    out = bytearray(4 * size * pixels)
    for channel in range(3):
        _place(out, channel, 4, rgb, channel, 3, size)
    _place(out, 3, 4, alpha, 0, 1, size)
    return bytes(out)


def with_mask_in_alpha(pixels: bytes | memoryview, mask: bytes | memoryview, channels: int) -> bytes:
    """RGBA/YA floats with their alpha multiplied by a 1-channel float mask of the same size."""
    values = floats(pixels)
    weights = floats(mask)
    if len(values) != len(weights) * channels:
        raise ValueError("image and mask sizes differ")
    alpha = values[channels - 1 :: channels]
    values[channels - 1 :: channels] = array("f", (a * w for a, w in zip(alpha, weights)))
    return values.tobytes()
