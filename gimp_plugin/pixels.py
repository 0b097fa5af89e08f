"""Pixel helpers for the plug-in that need neither GIMP nor torch (so they can be tested anywhere).

GEGL hands out and takes interleaved float32 samples as bytes; the ``array`` module does the channel
shuffling at C speed with strided slice assignment.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass


@dataclass(frozen=True)
class Region:
    """A rectangle in a drawable's own coordinates."""

    x: int
    y: int
    width: int
    height: int


def floats(data: bytes | bytearray | memoryview) -> array:
    samples = array("f")
    samples.frombytes(bytes(data))
    return samples


def rgb_with_alpha(rgb: bytes | memoryview, source: bytes | memoryview, source_channels: int) -> bytes:
    """Interleave the result's RGB floats with the alpha of the source's RGBA/YA floats."""
    colour = floats(rgb)
    pixels = len(colour) // 3
    original = floats(source)
    if len(original) != pixels * source_channels:
        raise ValueError("result and source sizes differ")
    out = array("f", bytes(4 * 4 * pixels))
    out[0::4] = colour[0::3]
    out[1::4] = colour[1::3]
    out[2::4] = colour[2::3]
    out[3::4] = original[source_channels - 1 :: source_channels]
    return out.tobytes()


def with_mask_in_alpha(pixels: bytes | memoryview, mask: bytes | memoryview, channels: int) -> bytes:
    """RGBA/YA floats with their alpha multiplied by a 1-channel float mask of the same size."""
    values = floats(pixels)
    weights = floats(mask)
    if len(values) != len(weights) * channels:
        raise ValueError("image and mask sizes differ")
    alpha = values[channels - 1 :: channels]
    values[channels - 1 :: channels] = array("f", (a * w for a, w in zip(alpha, weights)))
    return values.tobytes()
