"""Runs inside real GIMP 3 (gimp-console, python-fu-eval): drives plug-in-neural-style on test images
and writes what it finds to result.json for tests/test_gimp.py.  No assertions here: only facts."""

import json
import os
import sys

from gi.repository import Gimp

WORK = os.environ["NST_E2E_DIR"]
sys.path.insert(0, WORK)
from gimp_facts import PDB, error_text, fill, floats, snapshot, status_name  # noqa: E402



def run_case(name, base_type=Gimp.ImageBaseType.RGB, precision=Gimp.Precision.U8_NON_LINEAR, offset=(0, 0),
             alpha_hole=False, selection=None, size=(48, 40), iterations=3, live=False, indexed=False):
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
    if indexed:
        image.convert_indexed(Gimp.ConvertDitherType.NONE, Gimp.ConvertPaletteType.GENERATE, 16, False, False, "")
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
    after = snapshot(image)
    facts = {"status": status_name(result), "error": error_text(result),
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


def argument_facts():
    """The procedure's arguments as GIMP registered them: default, and range where it has one."""
    facts = {}
    for spec in PDB.lookup_procedure("plug-in-neural-style").get_arguments():
        default = spec.get_default_value()
        fact = {"default": default if default is None or isinstance(default, (bool, int, float, str)) else str(default)}
        for bound in ("minimum", "maximum"):
            if hasattr(spec, bound):
                fact[bound] = getattr(spec, bound)
        facts[spec.get_name()] = fact
    return facts


results = {}
try:
    results["arguments"] = argument_facts()
except Exception as error:  # recorded for the test to report
    results["arguments"] = {"exception": f"{type(error).__name__}: {error}"}
cases = {
    "rgb": {},
    "rgba_offset": {"offset": (5, 3), "alpha_hole": True},
    "selection": {"selection": (10, 8, 24, 20)},
    "float32": {"precision": Gimp.Precision.FLOAT_NON_LINEAR},
    "u16": {"precision": Gimp.Precision.U16_NON_LINEAR},
    "gray": {"base_type": Gimp.ImageBaseType.GRAY},
    "live": {"iterations": 20, "live": True},
    "indexed": {"indexed": True},
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
