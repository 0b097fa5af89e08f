"""daemon.server.images.frame_to_rgb: wire frames (u8, u16, f32; gray, gray+alpha, RGB, RGBA) to the engine's
3×H×W floats."""

from __future__ import annotations

import struct
from array import array

import pytest
import torch

from daemon.server.images import frame_to_rgb, rgb_to_frame
from daemon.wire.messages import DType, ImageSpec

# A 2-row × 3-column image: each pixel's channels are (row, column, channel-number) codes, so that a
# transposed or shuffled result cannot pass.
HEIGHT, WIDTH = 2, 3


def samples(channels: int, code) -> list[int]:
    return [code(row, column, channel)
            for row in range(HEIGHT) for column in range(WIDTH) for channel in range(channels)]


def frame(dtype: DType, values: list) -> bytes:
    if dtype is DType.F16:  # array has no half-precision type code; struct has
        return struct.pack(f"<{len(values)}e", *values)
    typecode = {DType.U8: "B", DType.U16: "H", DType.F32: "f"}[dtype]
    return array(typecode, values).tobytes()


def expected_rgb(channels: int, code, scale: float) -> torch.Tensor:
    """What frame_to_rgb must give: colour channels (gray repeated) scaled to [0, 1], alpha gone."""
    colour = range(3) if channels >= 3 else [0, 0, 0]
    return torch.tensor([[[code(row, column, c) / scale for column in range(WIDTH)] for row in range(HEIGHT)]
                         for c in colour], dtype=torch.float32)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize(("dtype", "scale"),
                         [(DType.U8, 255.0), (DType.U16, 65535.0), (DType.F32, 1.0), (DType.F16, 1.0)])
def test_channels_are_scaled_to_0_1_gray_repeated_alpha_dropped(dtype, scale, channels):
    top = {DType.U8: 255, DType.U16: 65535, DType.F32: 1.0, DType.F16: 1.0}[dtype]

    def code(row: int, column: int, channel: int):
        # distinct per pixel and channel, within range, the first pixel's first channel at the top value
        value = top - (row * WIDTH + column) * (top / 8) - channel * (top / 64)
        return value if dtype in (DType.F32, DType.F16) else round(value)  # k/64 steps: exact in f16

    spec = ImageSpec(WIDTH, HEIGHT, channels, dtype)
    rgb = frame_to_rgb(spec, frame(dtype, samples(channels, code)))
    assert rgb.shape == (3, HEIGHT, WIDTH) and rgb.dtype == torch.float32
    torch.testing.assert_close(rgb, expected_rgb(channels, code, scale), rtol=0, atol=1e-7)
    assert rgb.max().item() == 1.0  # the full range maps onto [0, 1]


def test_u16_keeps_precision_below_8_bits():
    """Two u16 values 1 apart stay apart: nothing is rounded through 8 bits."""
    spec = ImageSpec(2, 1, 1, DType.U16)
    rgb = frame_to_rgb(spec, frame(DType.U16, [30000, 30001]))
    assert rgb[0, 0, 1].item() - rgb[0, 0, 0].item() == pytest.approx(1 / 65535, rel=1e-3)


def test_alpha_does_not_reach_the_colour():
    """RGBA and gray+alpha with opposite alphas give the same colour."""
    for channels in (2, 4):
        opaque = [200 if (i + 1) % channels else 255 for i in range(channels * WIDTH * HEIGHT)]
        clear = [200 if (i + 1) % channels else 0 for i in range(channels * WIDTH * HEIGHT)]
        spec = ImageSpec(WIDTH, HEIGHT, channels, DType.U8)
        assert torch.equal(frame_to_rgb(spec, frame(DType.U8, opaque)), frame_to_rgb(spec, frame(DType.U8, clear)))
        assert torch.allclose(frame_to_rgb(spec, frame(DType.U8, opaque)), torch.full((3, HEIGHT, WIDTH), 200 / 255))


@pytest.mark.parametrize(("dtype", "levels"), [(DType.U8, 256), (DType.U16, 65536)])
def test_every_u8_and_u16_level_reads_exactly_as_its_float_reading(dtype, levels):
    """A compact frame gives the engine the very floats that the same pixels read as float32 give (what a
    float reading of an 8- or 16-bit layer holds: each level over the top one, rounded once to float32),
    for every level, in every channel: sending u8/u16 instead of f32 loses nothing."""
    top = levels - 1
    values = [level for level in range(levels) for _ in range(4)]  # one RGBA pixel per level
    float_reading = [float(torch.tensor(level / top, dtype=torch.float32)) for level in values]
    compact = frame_to_rgb(ImageSpec(levels, 1, 4, dtype), frame(dtype, values))
    full = frame_to_rgb(ImageSpec(levels, 1, 4, DType.F32), frame(DType.F32, float_reading))
    assert torch.equal(compact, full)
    assert compact[0, 0, 1].item() == float(torch.tensor(1 / top, dtype=torch.float32))  # not rounded coarser


@pytest.mark.parametrize("dtype", [DType.U16, DType.F16, DType.F32])
def test_results_are_interleaved_and_rounded_to_their_dtype(dtype):
    """rgb_to_frame: the engine's 3×H×W floats as H×W×3 of the result dtype; u16 clamped to [0, 1] and
    rounded to the nearest level, and read back by frame_to_rgb within half a level."""
    planes = torch.tensor([[[code / 64 - 0.25 + channel * 0.3 + row * 0.75 for code in range(WIDTH)]
                            for row in range(HEIGHT)]
                           for channel in range(3)], dtype=torch.float32)
    spec, data = rgb_to_frame(planes, dtype)
    assert spec == ImageSpec(WIDTH, HEIGHT, 3, dtype) and data.nbytes == spec.nbytes
    interleaved = planes.permute(1, 2, 0)
    if dtype is DType.U16:
        values = array("H", bytes(data))
        expected = [round(min(max(float(v), 0.0), 1.0) * 65535) for v in interleaved.flatten()]
        assert list(values) == expected
        back = frame_to_rgb(spec, data)
        assert (back - planes.clamp(0, 1)).abs().max().item() <= 0.5 / 65535 + 1e-7
    else:
        typecode = "e" if dtype is DType.F16 else "f"
        values = struct.unpack(f"<{spec.width * spec.height * 3}{typecode}", bytes(data))
        assert list(values) == interleaved.to(torch.float16 if dtype is DType.F16 else torch.float32).flatten().tolist()
