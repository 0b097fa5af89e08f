"""Helpers for the scripts that run inside real GIMP 3 (tests/gimp/batch.py and ui.py): test layers and
the facts recorded about an image.  Imported from the work directory the tests copy them to."""

import hashlib
import os
from array import array

from gi.repository import Gegl, Gimp

PDB = Gimp.get_pdb()


def fill(layer, width, height, channels, seed, alpha_hole=False, transparent_half=False, green_half=False):
    values = array("f")
    for y in range(height):
        for x in range(width):
            base = ((x * 7 + y * 13 + seed * 31) % 97) / 96.0
            pixel = [base, ((x + seed) % 16) / 15.0, ((y * 3 + seed) % 11) / 10.0][: channels - 1]
            if green_half and x < width // 2:
                pixel = [0.0, 1.0, 0.0][: channels - 1]
            alpha = 0.0 if (alpha_hole and x < width // 4) or (transparent_half and x < width // 2) else 1.0
            values.extend(pixel + [alpha])
    fmt = "R'G'B'A float" if channels == 4 else "Y'A float"
    layer.get_buffer().set(Gegl.Rectangle.new(0, 0, width, height), fmt, values.tobytes())
    layer.get_buffer().flush()


def digest(drawable):
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    fmt = "Y'A float" if drawable.is_gray() else "R'G'B'A float"
    return hashlib.sha256(bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE))).hexdigest()


def floats(drawable):
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    fmt = "Y'A float" if drawable.is_gray() else "R'G'B'A float"
    data = array("f")
    data.frombytes(bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE)))
    return data


def snapshot(image):
    layers = []
    for layer in image.get_layers():
        layers.append({"name": layer.get_name(), "width": layer.get_width(), "height": layer.get_height(),
                       "offsets": list(layer.get_offsets()[1:]), "digest": digest(layer),
                       "has_mask": layer.get_mask() is not None, "visible": layer.get_visible(),
                       "parasite": (lambda p: bytes(p.get_data()).decode() if p else None)(
                           layer.get_parasite("neural-style-settings"))})
    return layers


def status_name(result):
    status = result.index(0)
    return status.value_nick if hasattr(status, "value_nick") else str(status)


def error_text(result):
    if result.index(0) == Gimp.PDBStatusType.SUCCESS:
        return None
    try:
        return str(result.index(1))
    except Exception:  # no error value
        return None


def mark(kind, step):
    """Tell the test driving GIMP's interface that ``step`` is ready (``kind`` "ready") or done ("done"): a file
    in the shared work folder ($NST_E2E_DIR)."""
    with open(os.path.join(os.environ["NST_E2E_DIR"], f"{kind}-{step}"), "w") as handle:
        handle.write(step)
