#!/usr/bin/env python3
"""Draws the bundled sample pair (content.png, style.png) from code, so that their licence is ours:
both images are dedicated to the public domain (CC0), like this script.  Run it to regenerate them."""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


def content(width: int = 384, height: int = 288) -> Image.Image:
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):  # evening sky
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(70 + 150 * t), int(110 + 80 * t), int(200 - 60 * t)))
    draw.ellipse([260, 40, 320, 100], fill=(250, 220, 120))  # sun
    for offset, colour in ((150, (60, 110, 70)), (190, (40, 85, 55)), (230, (30, 65, 40))):  # hills
        points = [(x, offset + 25 * math.sin(x / 45 + offset)) for x in range(0, width + 8, 8)]
        draw.polygon(points + [(width, height), (0, height)], fill=colour)
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
        for step in range(6):
            angle += rng.uniform(-0.35, 0.35)
            x, y = x + math.cos(angle) * length / 6, y + math.sin(angle) * length / 6
            points.append((x, y))
        draw.line(points, fill=rng.choice(palette), width=rng.randint(2, 5))
    return image.filter(ImageFilter.SMOOTH_MORE)


if __name__ == "__main__":
    content().save(HERE / "content.png")
    style().save(HERE / "style.png")
    print(f"Wrote {HERE / 'content.png'} and {HERE / 'style.png'}")
