"""The plug-in's GIMP-free pixel helpers."""

import sys
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"))

from pixels import rgb_with_alpha  # noqa: E402


def test_rgb_gets_the_source_alpha():
    rgb = array("f", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).tobytes()
    source = array("f", [9, 9, 9, 0.25, 9, 9, 9, 0.75]).tobytes()
    out = array("f")
    out.frombytes(rgb_with_alpha(rgb, source, 4))
    assert list(out) == list(array("f", [0.1, 0.2, 0.3, 0.25, 0.4, 0.5, 0.6, 0.75]))


def test_gray_alpha_source():
    out = array("f")
    out.frombytes(rgb_with_alpha(array("f", [1, 1, 1]).tobytes(), array("f", [0.5, 0.125]).tobytes(), 2))
    assert list(out) == [1.0, 1.0, 1.0, 0.125]


def test_mismatched_sizes_are_refused():
    import pytest

    with pytest.raises(ValueError):
        rgb_with_alpha(array("f", [1, 1, 1]).tobytes(), array("f", [0.5, 0.5, 0.5, 0.5] * 2).tobytes(), 4)



# -- how pixels travel, by the image's precision ----------------------------------------------------------------
import pytest  # noqa: E402

from pixels import FULL_PRECISION, Sample, WireFormat, wire_format  # noqa: E402


@pytest.mark.parametrize(("precision", "source"), [
    ("GIMP_PRECISION_U8_NON_LINEAR", Sample.U8), ("U8_PERCEPTUAL", Sample.U8),
    ("GIMP_PRECISION_U16_NON_LINEAR", Sample.U16), ("U16_PERCEPTUAL", Sample.U16)])
def test_8_and_16_bit_encoded_images_send_their_own_samples_and_get_u16(precision, source):
    wire = wire_format(precision)
    assert wire == WireFormat(source, Sample.U16)
    assert (wire.source.dtype.value, wire.result.dtype.value) == (source.value[0], "u16")
    assert wire.colour(wire.source, False) == f"R'G'B'A {source.value[0]}"
    assert wire.colour(wire.source, True) == f"Y'A {source.value[0]}"
    assert wire.result_format() == "R'G'B'A u16" and wire.mask(False) == f"Y' {source.value[0]}"


@pytest.mark.parametrize("precision", [
    "GIMP_PRECISION_U8_LINEAR", "U16_LINEAR", "U32_LINEAR", "U32_NON_LINEAR", "U32_PERCEPTUAL",
    "HALF_LINEAR", "HALF_NON_LINEAR", "HALF_PERCEPTUAL", "FLOAT_LINEAR", "FLOAT_NON_LINEAR", "FLOAT_PERCEPTUAL",
    "DOUBLE_LINEAR", "DOUBLE_NON_LINEAR", "DOUBLE_PERCEPTUAL", "SOMETHING_NEW"])
def test_linear_wide_and_unknown_precisions_stay_float32_both_ways(precision):
    wire = wire_format(precision)
    assert wire == FULL_PRECISION
    assert (wire.source.dtype.value, wire.result.dtype.value) == ("f32", "f32")
    assert wire.colour(wire.source, False) == "R'G'B'A float" and wire.result_format() == "R'G'B'A float"


def test_an_image_with_its_own_profile_stays_float32():
    """GEGL converts its pixels to sRGB on reading: the converted values are off the integer grid."""
    assert wire_format("U8_NON_LINEAR", own_profile=True) == FULL_PRECISION


def test_a_linear_image_reads_its_masks_as_stored():
    assert FULL_PRECISION.mask(True) == "Y float" and FULL_PRECISION.mask(False) == "Y' float"


def test_u8_source_alpha_becomes_exactly_the_same_u16_alpha():
    """Every u8 alpha a becomes a·257 (a/255 = a·257/65535): GIMP writes back the source's alpha exactly."""
    alphas = list(range(256))
    source = array("B", [value for a in alphas for value in (1, 2, 3, a)]).tobytes()
    rgb = array("H", [7, 8, 9] * len(alphas)).tobytes()
    out = array("H")
    out.frombytes(rgb_with_alpha(rgb, source, 4, Sample.U16, Sample.U8))
    assert list(out[3::4]) == [a * 257 for a in alphas]
    assert list(out[0::4]) == [7] * 256 and list(out[1::4]) == [8] * 256 and list(out[2::4]) == [9] * 256


def test_u16_gray_alpha_source_with_a_u16_result():
    out = array("H")
    out.frombytes(rgb_with_alpha(array("H", [1, 2, 3, 4, 5, 6]).tobytes(), array("H", [9, 65535, 9, 123]).tobytes(),
                                 2, Sample.U16, Sample.U16))
    assert list(out) == [1, 2, 3, 65535, 4, 5, 6, 123]


def test_alpha_between_integer_and_float_samples():
    out = array("f")
    out.frombytes(rgb_with_alpha(array("f", [0.5, 0.5, 0.5]).tobytes(), array("B", [0, 0, 0, 51]).tobytes(), 4,
                                 Sample.FLOAT, Sample.U8))
    assert out[3] == pytest.approx(0.2)
    wide = array("H")
    wide.frombytes(rgb_with_alpha(array("H", [1, 2, 3]).tobytes(), array("f", [0, 0, 0, 0.5]).tobytes(), 4,
                                  Sample.U16, Sample.FLOAT))
    assert wide[3] == 32768  # 0.5 · 65535 = 32767.5, rounded half to even


def test_mismatched_compact_sizes_are_refused():
    with pytest.raises(ValueError):
        rgb_with_alpha(array("H", [1, 1, 1]).tobytes(), array("B", [1, 2, 3, 4] * 2).tobytes(), 4,
                       Sample.U16, Sample.U8)
