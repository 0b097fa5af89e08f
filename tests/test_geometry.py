"""nst_engine.geometry: fitting a longest side, (height, width) in and out."""

from __future__ import annotations

import pytest

from nst_engine.geometry import MIN_TILE, TILE_ALIGN, fit_longest_side
from nst_engine.layers import LAYER_NAMES, layer_downsampling


@pytest.mark.parametrize(("height", "width", "longest", "fitted"), [
    (500, 1000, 512, (256, 512)),  # shrinks, keeping the aspect ratio
    (1000, 500, 512, (512, 256)),  # the order is (height, width) both ways
    (50, 100, 512, (256, 512)),  # enlarges
    (3, 1000, 100, (1, 100)),  # never below one pixel
    (48, 64, 64, (48, 64)),
])
def test_fit_longest_side(height, width, longest, fitted):
    assert fit_longest_side(height, width, longest) == fitted


def test_tiles_lie_on_a_grid_every_layer_maps_onto():
    assert all(TILE_ALIGN % layer_downsampling(name) == 0 for name in LAYER_NAMES)
    assert TILE_ALIGN == max(layer_downsampling(name) for name in LAYER_NAMES)
    assert MIN_TILE % TILE_ALIGN == 0
