"""Image sizes without pixels: fitting a longest side, and the sizes tiles may have.  Torch-free (the
settings schema reads the tile rules, and the schema is imported by the torch-free client)."""

from __future__ import annotations

from .layers import MAX_DOWNSAMPLING

# Tile edges lie on this grid, which maps exactly onto every VGG19 layer's feature map.
TILE_ALIGN = MAX_DOWNSAMPLING
MIN_TILE = 64  # smallest tile core side: each tile's pass also covers a context margin around the core


def fit_longest_side(height: int, width: int, longest: int) -> tuple[int, int]:
    """(height, width) scaled, up or down, so that the longer side is ``longest``, keeping the aspect ratio
    (each side at least 1)."""
    scale = longest / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def style_size_at(style_height: int, style_width: int, style_scale: float, height: int, width: int) -> tuple[int, int]:
    """(height, width) a style image is resized to for a height×width stage: its longest side
    ``style_scale`` times the stage's."""
    return fit_longest_side(style_height, style_width, round(style_scale * max(height, width)))
