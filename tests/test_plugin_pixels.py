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

