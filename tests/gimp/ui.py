"""Runs inside real GIMP 3 with its user interface (on Xvfb): the dialog, last values and undo.

tests/test_gimp.py presses the keys with xdotool.  The two hand over through files in the work
directory: this script writes ``ready-<step>`` when it waits for a key, and ui-result.json at the end.
No assertions here: only facts.
"""

import json
import os
import sys
import time

from gi.repository import Gimp

WORK = os.environ["NST_E2E_DIR"]
sys.path.insert(0, WORK)
from gimp_facts import PDB, error_text, fill, mark, snapshot, status_name  # noqa: E402

KEY_WAIT_S = 90


def ready(step):
    mark("ready", step)


def done(step):
    mark("done", step)


def ready_to_undo(step):
    # The image window enables Edit → Undo (and so Ctrl+Z) from its idle handlers once a plug-in has
    # returned; a key pressed before then is ignored.
    Gimp.displays_flush()
    time.sleep(1.0)
    ready(step)


def wait_for_layer_count(image, count):
    deadline = time.monotonic() + KEY_WAIT_S
    while len(image.get_layers()) != count and time.monotonic() < deadline:
        time.sleep(0.1)


def run(procedure, run_mode, image, content, **properties):
    config = procedure.create_config()
    config.set_property("run-mode", run_mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", content if isinstance(content, list) else [content])
    for name, value in properties.items():
        config.set_property(name.replace("_", "-"), value)
    result = procedure.run(config)
    return {"status": status_name(result), "error": error_text(result), "after": snapshot(image)}


facts = {}
try:
    image = Gimp.Image.new(64, 56, Gimp.ImageBaseType.RGB)
    style = Gimp.Layer.new(image, "style", 40, 40, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(style, None, 0)
    fill(style, 40, 40, 4, seed=5)
    content = Gimp.Layer.new(image, "content", 48, 40, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(content, None, 0)
    fill(content, 48, 40, 4, seed=1)
    Gimp.Display.new(image)
    Gimp.displays_flush()
    facts["before"] = snapshot(image)
    procedure = PDB.lookup_procedure("plug-in-neural-style")

    # The dialog opens with the caller's values; the test accepts it with Return.
    ready("dialog")
    facts["interactive"] = run(procedure, Gimp.RunMode.INTERACTIVE, image, content,
                               style_layer=style, iterations=3, max_size=32, seed=11, live_preview=True)
    done("dialog")
    # Filters → Repeat: no dialog, the last values (style layer included) instead of these.
    facts["last_values"] = run(procedure, Gimp.RunMode.WITH_LAST_VALS, image, content, iterations=7, seed=0)

    # The test presses Ctrl+Z in the image window, once per step.
    for step, count in (("undo-1", len(facts["interactive"]["after"])), ("undo-2", len(facts["before"]))):
        ready_to_undo(step)
        wait_for_layer_count(image, count)
        done(step)
        facts[step] = snapshot(image)

    # The dialog on a result opens with the result's values, not the caller's; OK re-runs it in place.
    first = run(procedure, Gimp.RunMode.NONINTERACTIVE, image, content, style_layer=style, iterations=3,
                max_size=32, seed=11, style_weight=250.0, live_preview=True)
    ready("re-edit")
    facts["re_edit"] = run(procedure, Gimp.RunMode.INTERACTIVE, image, image.get_layers()[0], iterations=4,
                           max_size=24, seed=12, style_weight=999.0)
    done("re-edit")
    facts["re_edit_first"] = first

    # Two layers in one run: one undo step takes both results away.
    second = Gimp.Layer.new(image, "second", 40, 32, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(second, None, len(image.get_layers()))
    fill(second, 40, 32, 4, seed=2)
    facts["before_two"] = snapshot(image)
    facts["two"] = run(procedure, Gimp.RunMode.NONINTERACTIVE, image, [content, second], style_layer=style,
                       iterations=3, max_size=32)
    ready_to_undo("undo-3")
    wait_for_layer_count(image, len(facts["before_two"]))
    done("undo-3")
    facts["undo-3"] = snapshot(image)
except Exception as error:  # recorded for the test to report
    facts["exception"] = f"{type(error).__name__}: {error}"
with open(os.path.join(WORK, "ui-result.json"), "w") as handle:
    json.dump(facts, handle)
quit_procedure = PDB.lookup_procedure("gimp-quit")
quit_config = quit_procedure.create_config()
quit_config.set_property("force", True)  # the test image is unsaved; no "discard changes?" dialog
quit_procedure.run(quit_config)
