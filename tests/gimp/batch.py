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


def new_image(layers, size=(64, 56)):
    """An RGB image with layers given as (name, width, height, seed, offset, transparent_left_half),
    the first on top."""
    image = Gimp.Image.new(*size, Gimp.ImageBaseType.RGB)
    made = {}
    for name, width, height, seed, offset, transparent_half in reversed(layers):
        layer = Gimp.Layer.new(image, name, width, height, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, None, 0)
        layer.set_offsets(*offset)
        fill(layer, width, height, 4, seed=seed, transparent_half=transparent_half)
        made[name] = layer
    return image, made


def run_plugin(image, drawables, **properties):
    """Run the filter non-interactively on ``drawables``; its status, error and the layers after."""
    return run_plugin_returning(image, drawables, **properties)[0]


def run_plugin_returning(image, drawables, **properties):
    """As run_plugin, and the image the procedure returned (an animation's new image; else None)."""
    procedure = PDB.lookup_procedure("plug-in-neural-style")
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", drawables)
    for name, value in {"iterations": 3, "max-size": 32, **properties}.items():
        config.set_property(name.replace("_", "-"), value)
    result = procedure.run(config)
    returned = result.index(1) if result.index(0) == Gimp.PDBStatusType.SUCCESS else None
    return {"status": status_name(result), "error": error_text(result), "after": snapshot(image)}, returned


def result_floats(image, name):
    layer = next(layer for layer in image.get_layers() if layer.get_name() == name)
    return list(floats(layer))


def two_layers_case():
    image, layers = new_image([("top", 48, 40, 1, (0, 0), False), ("bottom", 40, 32, 2, (8, 6), False),
                               ("style", 40, 40, 5, (0, 0), False)])
    before = snapshot(image)
    facts = run_plugin(image, [layers["top"], layers["bottom"]], style_layer=layers["style"])
    facts["before"] = before
    image.delete()
    return facts


def rerun_case():
    """A result re-run with another seed (noise start), with the same seed, and keeping the previous one."""
    image, layers = new_image([("content", 48, 40, 1, (4, 2), False), ("style", 40, 40, 5, (0, 0), False)])
    facts = {"first": run_plugin(image, [layers["content"]], style_layer=layers["style"], init="noise", seed=1)}
    result = image.get_layers()[0]
    result.set_offsets(6, 9)  # the user moved it: the re-run keeps it there
    facts["moved"] = snapshot(image)
    facts["other_seed"] = run_plugin(image, [image.get_layers()[0]], init="noise", seed=2)
    facts["other_seed_again"] = run_plugin(image, [image.get_layers()[0]], init="noise", seed=2)
    facts["kept"] = run_plugin(image, [image.get_layers()[0]], init="noise", seed=3, keep_previous=True)
    facts["kept_visible"] = [layer.get_visible() for layer in image.get_layers()]
    source_tattoo = layers["content"].get_tattoo()
    image.remove_layer(layers["content"])
    facts["source_gone"] = run_plugin(image, [image.get_layers()[0]], init="noise", seed=4)
    facts["source_tattoo"] = source_tattoo
    image.delete()
    return facts


def controls_case():
    """style-scale and a second style layer change the result; each style layer with a channel as its
    region (complementary halves) against each style alone."""
    image, layers = new_image([("content", 48, 40, 1, (0, 0), False), ("style", 40, 40, 5, (0, 0), False),
                               ("style two", 40, 40, 9, (0, 0), False)])
    content, style, two = layers["content"], layers["style"], layers["style two"]
    channels = {}
    for name, x in (("left", 0), ("right", 24)):
        image.select_rectangle(Gimp.ChannelOps.REPLACE, x, 0, 24, 56)
        channels[name] = Gimp.Selection.save(image)
        channels[name].set_name(name)
    Gimp.Selection.none(image)
    facts = {}
    runs = (("plain", {"style_layer": style}), ("scaled", {"style_layer": style, "style_scale": 0.5}),
            ("two_styles", {"style_layer": style, "style_layer_2": two}), ("only_two", {"style_layer": two}),
            ("split", {"style_layer": style, "style_region": channels["right"], "style_layer_2": two,
                       "style_region_2": channels["left"]}))
    for key, options in runs:
        facts[key] = run_plugin(image, [content], iterations=20, **options)
        if facts[key]["status"] == "success":
            facts[key + "_pixels"] = result_floats(image, "content (Neural Style)")
            image.remove_layer(image.get_layers()[0])
    image.delete()
    return facts


def transparent_half_case():
    """A style layer whose left half is green and transparent, against its right half cropped, and
    against the same green half left opaque (what ignoring the alpha would give)."""
    image, layers = new_image([("content", 64, 64, 1, (0, 0), False), ("half", 64, 64, 5, (0, 0), False)],
                              size=(64, 64))
    content, half = layers["content"], layers["half"]
    fill(half, 64, 64, 4, seed=5, transparent_half=True, green_half=True)
    cropped = half.copy()
    image.insert_layer(cropped, None, 0)
    cropped.resize(32, 64, -32, 0)
    options = {"iterations": 30, "max_size": 64}  # enough for the style's statistics to show
    facts = {"cropped_size": [cropped.get_width(), cropped.get_height()]}
    for key, style in (("half", half), ("cropped", cropped), ("opaque", half)):
        if key == "opaque":
            fill(half, 64, 64, 4, seed=5, green_half=True)
        facts[key] = run_plugin(image, [content], style_layer=style, **options)
        if facts[key]["status"] == "success":
            facts[key + "_pixels"] = result_floats(image, "content (Neural Style)")
            image.remove_layer(next(layer for layer in image.get_layers()
                                    if layer.get_name() == "content (Neural Style)"))
    image.delete()
    return facts


def not_layers_case():
    """A layer group, a channel and a layer mask as the drawable each get a message; nothing changes."""
    image, layers = new_image([("content", 48, 40, 1, (0, 0), False), ("style", 40, 40, 5, (0, 0), False)])
    group = Gimp.GroupLayer.new(image, "group")
    image.insert_layer(group, None, 0)
    mask = layers["content"].create_mask(Gimp.AddMaskType.WHITE)
    layers["content"].add_mask(mask)
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 0, 0, 8, 8)
    channel = Gimp.Selection.save(image)
    Gimp.Selection.none(image)
    before = snapshot(image)
    facts = {}
    for key, drawable in (("group", group), ("channel", channel), ("mask", mask)):
        facts[key] = run_plugin(image, [drawable], style_layer=layers["style"])
    facts["before"] = before
    image.delete()
    return facts


def animation_case():
    """Three layer-frames with Animation on: a new image of three frames, returned (through pyzmq), or one
    line saying why not (through the pipe bridge); the sources unchanged either way."""
    image, layers = new_image([("f3 (100ms)", 48, 40, 3, (0, 0), False), ("f2 (100ms)", 48, 40, 2, (0, 0), False),
                               ("f1 (100ms)", 48, 40, 1, (0, 0), False), ("style", 40, 40, 5, (0, 0), False)])
    before = snapshot(image)
    frames = [layers[name] for name in ("f1 (100ms)", "f2 (100ms)", "f3 (100ms)")]
    images_before = len(Gimp.get_images())
    facts, made = run_plugin_returning(image, frames, style_layer=layers["style"], animation=True)
    facts["result_layers"] = [layer.get_name() for layer in made.get_layers()] if made is not None else []
    facts["images_left"] = len(Gimp.get_images()) - images_before - (made is not None)
    if made is not None:
        made.delete()
    # A style beyond the daemon's side limit: refused once the new image is made, which then goes again.
    wide, _ = new_image([("wide style", 16400, 2, 6, (0, 0), False)])
    images_before = len(Gimp.get_images())
    facts["refused"], made = run_plugin_returning(image, frames, style_layer=wide.get_layers()[0], animation=True)
    facts["refused"]["images_left"] = len(Gimp.get_images()) - images_before
    wide.delete()
    facts["before"] = before
    image.delete()
    return facts


def ulps_apart(a, b):
    """How many float32 values lie between a and b (both in [0, 1]), plus one if they differ."""
    import struct

    return abs(struct.unpack("<i", struct.pack("<f", a))[0] - struct.unpack("<i", struct.pack("<f", b))[0])


def compact_case():
    """How 8- and 16-bit layers read as their own samples compare with GIMP's own float reading of them
    (the daemon makes of a u8/u16 frame each level over the top one, rounded once to float32); and a
    style layer with a layer mask in an 8-bit image (that style travels as float32)."""
    from array import array

    from gi.repository import Gegl

    facts = {}
    for key, precision, babl, typecode, top in (("u8", Gimp.Precision.U8_NON_LINEAR, "u8", "B", 255),
                                                ("u16", Gimp.Precision.U16_NON_LINEAR, "u16", "H", 65535)):
        image = Gimp.Image.new_with_precision(48, 40, Gimp.ImageBaseType.RGB, precision)
        layer = Gimp.Layer.new(image, "content", 48, 40, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(layer, None, 0)
        fill(layer, 48, 40, 4, seed=1, alpha_hole=True)
        rectangle = Gegl.Rectangle.new(0, 0, 48, 40)
        own = array(typecode)
        own.frombytes(bytes(layer.get_buffer().get(rectangle, 1.0, f"R'G'B'A {babl}", Gegl.AbyssPolicy.CLAMP)))
        as_float = floats(layer)
        scaled = array("f", (value / top for value in own))  # level / top, rounded once to float32
        differences = [abs(a - b) for a, b in zip(scaled, as_float)]
        facts[key] = {"precision": image.get_precision().value_name, "samples": len(own), "levels": len(set(own)),
                      "mismatches": sum(d != 0 for d in differences), "largest_difference": max(differences),
                      "largest_ulps": max(ulps_apart(a, b) for a, b in zip(scaled, as_float))}
        image.delete()
    image, layers = new_image([("content", 48, 40, 1, (0, 0), False), ("style", 40, 40, 5, (0, 0), False)])
    mask = layers["style"].create_mask(Gimp.AddMaskType.WHITE)
    layers["style"].add_mask(mask)
    hidden_left = array("f", [0.0 if x < 20 else 1.0 for _ in range(40) for x in range(40)])
    mask.get_buffer().set(Gegl.Rectangle.new(0, 0, 40, 40), "Y float", hidden_left.tobytes())
    mask.get_buffer().flush()
    facts["masked_style"] = run_plugin(image, [layers["content"]], style_layer=layers["style"])
    image.delete()
    # A style layer in another image, a float one: it travels as float32 beside the 8-bit content.
    image, layers = new_image([("content", 48, 40, 1, (0, 0), False)])
    other = Gimp.Image.new_with_precision(40, 40, Gimp.ImageBaseType.RGB, Gimp.Precision.FLOAT_NON_LINEAR)
    style = Gimp.Layer.new(other, "style", 40, 40, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    other.insert_layer(style, None, 0)
    fill(style, 40, 40, 4, seed=5)
    facts["float_style"] = run_plugin(image, [layers["content"]], style_layer=style)
    other.delete()
    image.delete()
    return facts


def preview_upscale_case():
    """The plug-in's own scaling of a live preview that came smaller than its layer (12×10 → 48×40, u16),
    through the installed plug-in's module, as GEGL in GIMP does it."""
    from array import array

    plugin_dir = os.path.join(Gimp.directory(), "plug-ins", "neural_style")
    sys.path[0:0] = [os.path.join(plugin_dir, "lib"), plugin_dir]
    from result_layer import upscaled_rgb

    small = array("H", [value for y in range(10) for x in range(12) for value in (x * 5000, y * 7000, 65535)])
    large = array("H")
    large.frombytes(upscaled_rgb(small.tobytes(), 12, 10, 48, 40, "u16"))
    return {"small": list(small), "large": list(large)}


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
whole_cases = {"two_layers": two_layers_case, "rerun": rerun_case, "controls": controls_case,
               "transparent_half": transparent_half_case, "not_layers": not_layers_case, "compact": compact_case,
               "preview_upscale": preview_upscale_case, "animation": animation_case}
only = os.environ.get("NST_E2E_CASES")
for case, options in cases.items():
    if (only and case not in only.split(",")) or (not only and case == "long"):
        continue
    try:
        results[case] = run_case(case, **options)
    except Exception as error:  # recorded for the test to report
        results[case] = {"exception": f"{type(error).__name__}: {error}"}
for case, function in whole_cases.items():
    if only and case not in only.split(","):
        continue
    try:
        results[case] = function()
    except Exception as error:  # recorded for the test to report
        results[case] = {"exception": f"{type(error).__name__}: {error}"}
with open(os.path.join(WORK, os.environ.get("NST_E2E_OUTPUT", "result.json")), "w") as handle:
    json.dump(results, handle)
