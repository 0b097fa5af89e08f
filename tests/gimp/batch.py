"""Runs inside real GIMP 3 (gimp-console, python-fu-eval): drives plug-in-neural-style on test images
and writes what it finds to result.json for tests/test_gimp.py.  No assertions here: only facts."""

import hashlib
import json
import os
from array import array

from gi.repository import Gegl, Gimp

WORK = os.environ["NST_E2E_DIR"]
PDB = Gimp.get_pdb()


def fill(layer, width, height, channels, seed, alpha_hole=False):
    values = array("f")
    for y in range(height):
        for x in range(width):
            base = ((x * 7 + y * 13 + seed * 31) % 97) / 96.0
            pixel = [base, ((x + seed) % 16) / 15.0, ((y * 3 + seed) % 11) / 10.0][: channels - 1]
            alpha = 0.0 if alpha_hole and x < width // 4 else 1.0
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
                       "has_mask": layer.get_mask() is not None,
                       "parasite": (lambda p: bytes(p.get_data()).decode() if p else None)(layer.get_parasite("neural-style-settings"))})
    return layers


def _error_text(result):
    try:
        return str(result.index(1))
    except Exception:  # no error value
        return None


def run_case(name, base_type=Gimp.ImageBaseType.RGB, precision=Gimp.Precision.U8_NON_LINEAR, offset=(0, 0),
             alpha_hole=False, selection=None, size=(48, 40), iterations=3, live=False):
    width, height = size
    image = Gimp.Image.new_with_precision(width + 16, height + 16, base_type, precision)
    gray = base_type == Gimp.ImageBaseType.GRAY
    layer_type = Gimp.ImageType.GRAYA_IMAGE if gray else Gimp.ImageType.RGBA_IMAGE
    style = Gimp.Layer.new(image, "style", 40, 40, layer_type, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(style, None, 0)
    fill(style, 40, 40, 2 if gray else 4, seed=5)
    content = Gimp.Layer.new(image, "content", width, height, layer_type, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(content, None, 0)
    content.set_offsets(*offset)
    fill(content, width, height, 2 if gray else 4, seed=1, alpha_hole=alpha_hole)
    if selection:
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *selection)
    before = snapshot(image)
    procedure = PDB.lookup_procedure("plug-in-neural-style")
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [content])
    config.set_property("style-layer", style)
    config.set_property("iterations", iterations)
    config.set_property("live-preview", live)
    config.set_property("max-size", 32)
    result = procedure.run(config)
    status = result.index(0)
    after = snapshot(image)
    facts = {"status": status.value_nick if hasattr(status, "value_nick") else str(status),
             "error": _error_text(result) if status != Gimp.PDBStatusType.SUCCESS else None,
             "before": before, "after": after, "precision": str(image.get_precision())}
    new = [layer for layer in image.get_layers() if layer.get_name().endswith("(Neural Style)")]
    if new:
        values = floats(new[0])
        channels = 2 if gray else 4
        facts["result_alpha"] = list(values[channels - 1 :: channels])
        facts["source_alpha"] = list(floats(content)[channels - 1 :: channels])
        facts["result_colour_sample"] = list(values[:64])
    image.delete()
    return facts


results = {}
cases = {
    "rgb": {},
    "rgba_offset": {"offset": (5, 3), "alpha_hole": True},
    "selection": {"selection": (10, 8, 24, 20)},
    "float32": {"precision": Gimp.Precision.FLOAT_NON_LINEAR},
    "u16": {"precision": Gimp.Precision.U16_NON_LINEAR},
    "gray": {"base_type": Gimp.ImageBaseType.GRAY},
    "live": {"iterations": 20, "live": True},
    "long": {"iterations": 100000},  # only when asked for: the test kills the plug-in mid-job
}
only = os.environ.get("NST_E2E_CASES")
for case, options in cases.items():
    if (only and case not in only.split(",")) or (not only and case == "long"):
        continue
    try:
        results[case] = run_case(case, **options)
    except Exception as error:  # recorded for the test to report
        results[case] = {"exception": f"{type(error).__name__}: {error}"}
with open(os.path.join(WORK, os.environ.get("NST_E2E_OUTPUT", "result.json")), "w") as handle:
    json.dump(results, handle)
