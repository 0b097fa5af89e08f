"""Runs inside real GIMP 3 with its user interface (on Xvfb): an animation's layer-frames through the
dialog (Animation on by default, since the names carry timings), one Ctrl+Z, a layer group's frames,
and the re-run of a result group.  tests/test_gimp.py presses the keys; no assertions here: only facts.
"""

import json
import os
import sys
import time

from gi.repository import Gimp

WORK = os.environ["NST_E2E_DIR"]
sys.path.insert(0, WORK)
from gimp_facts import PDB, digest, error_text, fill, mark, snapshot, status_name  # noqa: E402

KEY_WAIT_S = 90
FRAME_NAMES = ("walk 1 (100ms) (replace)", "walk 2 (200ms)", "walk 3 (100ms) (combine)", "walk 4 (300ms)")


def ready(step):
    mark("ready", step)


def done(step):
    mark("done", step)


def group_facts(group):
    parasite = group.get_parasite("neural-style-settings")
    return {"name": group.get_name(), "is_group": isinstance(group, Gimp.GroupLayer),
            "parasite": bytes(parasite.get_data()).decode() if parasite else None,
            "children": [{"name": child.get_name(), "width": child.get_width(), "height": child.get_height(),
                          "offsets": list(child.get_offsets()[1:]), "digest": digest(child)}
                         for child in group.get_children()] if isinstance(group, Gimp.GroupLayer) else []}


def run(procedure, run_mode, image, drawables, **properties):
    config = procedure.create_config()
    config.set_property("run-mode", run_mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", drawables)
    for name, value in properties.items():
        config.set_property(name.replace("_", "-"), value)
    result = procedure.run(config)
    return {"status": status_name(result), "error": error_text(result), "after": snapshot(image),
            "top": group_facts(image.get_layers()[0])}


facts = {}
try:
    image = Gimp.Image.new(48, 40, Gimp.ImageBaseType.RGB)
    style = Gimp.Layer.new(image, "style", 40, 40, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(style, None, 0)
    fill(style, 40, 40, 4, seed=5)
    frames = []
    for number, name in enumerate(FRAME_NAMES):  # bottom to top: each new layer goes on top
        frame = Gimp.Layer.new(image, name, 48, 40, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(frame, None, 0)
        fill(frame, 48, 40, 4, seed=1 + number)
        frames.append(frame)
    Gimp.Display.new(image)
    Gimp.displays_flush()
    facts["before"] = snapshot(image)
    procedure = PDB.lookup_procedure("plug-in-neural-style")

    # The four frames selected (in a scrambled order), Animation off in the caller's values: the names
    # carry timings, so the dialog opens with it on; the test accepts it with Return.
    ready("animation-dialog")
    scrambled = [frames[2], frames[0], frames[3], frames[1]]
    facts["interactive"] = run(procedure, Gimp.RunMode.INTERACTIVE, image, scrambled, style_layer=style,
                               iterations=3, max_size=32, seed=3, animation=False, live_preview=False)
    done("animation-dialog")

    # One Ctrl+Z in the image window takes the whole group away.
    Gimp.displays_flush()
    time.sleep(1.0)  # the image window enables Undo from its idle handlers once the plug-in has returned
    ready("animation-undo")
    deadline = time.monotonic() + KEY_WAIT_S
    while len(image.get_layers()) != len(facts["before"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    done("animation-undo")
    facts["undo"] = snapshot(image)

    # A layer group's layers are the frames; the result group goes directly above the group.
    group = Gimp.GroupLayer.new(image, "walk")
    image.insert_layer(group, None, 0)
    for frame in frames:  # bottom first: each goes to the top of the group
        image.reorder_item(frame, group, 0)
    facts["group"] = run(procedure, Gimp.RunMode.NONINTERACTIVE, image, [group], style_layer=style,
                         iterations=3, max_size=32, seed=3, animation=True)
    facts["group_source_names"] = [child.get_name() for child in group.get_children()]
    # Run on the result group: re-run from its frames with its settings, replaced in place.
    facts["re_edit"] = run(procedure, Gimp.RunMode.NONINTERACTIVE, image, [image.get_layers()[0]],
                           style_layer=style, iterations=3, max_size=32, seed=3, init="noise", animation=True)
except Exception as error:  # recorded for the test to report
    facts["exception"] = f"{type(error).__name__}: {error}"
with open(os.path.join(WORK, "animation-result.json"), "w") as handle:
    json.dump(facts, handle)
quit_procedure = PDB.lookup_procedure("gimp-quit")
quit_config = quit_procedure.create_config()
quit_config.set_property("force", True)
quit_procedure.run(quit_config)
