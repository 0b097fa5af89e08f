#!/usr/bin/env python3
"""Draws the bundled samples from code, so that their licence is ours: all are dedicated to the public
domain (CC0), like this script.  Run it to regenerate them.

content.png and style.png are the sample pair; style2.png (a mosaic), sky.png and ground.png (masks
of the content's sky and of the rest) show spatial, colour and scale control (see the README)."""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


WIDTH, HEIGHT = 384, 288
FIRST_HILL = 150  # the farthest hill's baseline: the sky is above it


def hill_line(offset: int, width: int = WIDTH) -> list[tuple[float, float]]:
    return [(x, offset + 25 * math.sin(x / 45 + offset)) for x in range(0, width + 8, 8)]


def content(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):  # evening sky
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(70 + 150 * t), int(110 + 80 * t), int(200 - 60 * t)))
    draw.ellipse([260, 40, 320, 100], fill=(250, 220, 120))  # sun
    for offset, colour in ((FIRST_HILL, (60, 110, 70)), (190, (40, 85, 55)), (230, (30, 65, 40))):  # hills
        draw.polygon(hill_line(offset, width) + [(width, height), (0, height)], fill=colour)
    draw.rectangle([80, 170, 150, 230], fill=(180, 60, 50))  # a house
    draw.polygon([(72, 172), (115, 135), (158, 172)], fill=(90, 40, 35))
    draw.rectangle([105, 200, 122, 230], fill=(60, 30, 20))
    return image.filter(ImageFilter.SMOOTH)


def style(size: int = 256, seed: int = 7) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), (20, 30, 80))
    draw = ImageDraw.Draw(image)
    palette = [(240, 200, 60), (230, 120, 40), (60, 140, 200), (250, 240, 210), (30, 60, 140), (200, 60, 90)]
    for _ in range(700):  # short curved brush strokes
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        angle, length = rng.uniform(0, math.tau), rng.uniform(8, 26)
        points = []
        for _step in range(6):
            angle += rng.uniform(-0.35, 0.35)
            x, y = x + math.cos(angle) * length / 6, y + math.sin(angle) * length / 6
            points.append((x, y))
        draw.line(points, fill=rng.choice(palette), width=rng.randint(2, 5))
    return image.filter(ImageFilter.SMOOTH_MORE)


def mosaic(size: int = 256, seed: int = 3) -> Image.Image:
    """A second style: square tiles in warm earth colours with dark grout."""
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), (40, 30, 25))
    draw = ImageDraw.Draw(image)
    palette = [(200, 150, 80), (170, 90, 50), (220, 190, 130), (120, 70, 40), (90, 110, 60)]
    step = 16
    for top in range(0, size, step):
        for left in range(0, size, step):
            jitter = rng.randint(0, 2)
            draw.rectangle([left + 1 + jitter, top + 1 + jitter, left + step - 2, top + step - 2],
                           fill=rng.choice(palette))
    return image


def sky_mask(width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """White over the content's sky, black over the hills (soft-edged by a slight blur)."""
    mask = Image.new("L", (width, height), 255)
    ImageDraw.Draw(mask).polygon(hill_line(FIRST_HILL, width) + [(width, height), (0, height)], fill=0)
    return mask.filter(ImageFilter.GaussianBlur(2))


if __name__ == "__main__":
    sky = sky_mask()
    images = {"content.png": content(), "style.png": style(), "style2.png": mosaic(), "sky.png": sky,
              "ground.png": Image.eval(sky, lambda value: 255 - value)}
    for name, image in images.items():
        partial = HERE / f".{name}.partial"
        image.save(partial, format="PNG")
        partial.replace(HERE / name)  # whole or not at all
    print(f"Wrote {', '.join(images)} in {HERE}")
