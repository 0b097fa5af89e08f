"""Runs inside real GIMP 3 with its user interface (on Xvfb): an animation's layer-frames through the
dialog (Animation on by default, since the names carry timings) into a new image of frames, which
Filters → Animation → Playback plays and the GIF export writes as an animation; a layer group's frames;
the re-run of a result image; a re-run whose source image is gone.  tests/test_gimp.py presses the keys;
no assertions here: only facts.
"""

import json
import os
import sys

from gi.repository import Gimp, Gio

WORK = os.environ["NST_E2E_DIR"]
sys.path.insert(0, WORK)
from gimp_facts import PDB, digest, error_text, fill, mark, snapshot, status_name  # noqa: E402

FRAME_NAMES = ("walk 1 (100ms) (replace)", "walk 2 (200ms)", "walk 3 (100ms) (combine)", "walk 4 (300ms)")


def image_facts(image):
    """A result image: its size, its top-level layers (top to bottom) and the record it keeps."""
    if image is None:
        return None
    parasite = image.get_parasite("neural-style-settings")
    return {"size": [image.get_width(), image.get_height()], "dirty": image.is_dirty(),
            "parasite": bytes(parasite.get_data()).decode() if parasite else None,
            "layers": [{"name": layer.get_name(), "width": layer.get_width(), "height": layer.get_height(),
                        "offsets": list(layer.get_offsets()[1:]), "digest": digest(layer),
                        "is_group": isinstance(layer, Gimp.GroupLayer), "opacity": layer.get_opacity(),
                        "visible": layer.get_visible()}
                       for layer in image.get_layers()]}


def run(procedure, run_mode, image, drawables, **properties):
    config = procedure.create_config()
    config.set_property("run-mode", run_mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", drawables)
    for name, value in properties.items():
        config.set_property(name.replace("_", "-"), value)
    result = procedure.run(config)
    made = result.index(1) if result.index(0) == Gimp.PDBStatusType.SUCCESS else None
    return {"status": status_name(result), "error": error_text(result), "after": snapshot(image),
            "images": len(Gimp.get_images()), "result": image_facts(made)}, made


def exported_gif(image, path):
    """``image`` exported as an animated GIF and loaded back: the frames' names (GIF's loader writes each
    frame's delay and disposal into its name), top to bottom."""
    procedure = PDB.lookup_procedure("file-gif-export")
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_property("file", Gio.File.new_for_path(path))
    config.set_property("as-animation", True)
    status = status_name(procedure.run(config))
    loaded = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(path))
    names = [layer.get_name() for layer in loaded.get_layers()]
    loaded.delete()
    return {"status": status, "frames": names}


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
    frames[1].set_opacity(80.0)
    display = Gimp.Display.new(image)
    Gimp.displays_flush()
    image.clean_all()
    facts["before"] = snapshot(image)
    procedure = PDB.lookup_procedure("plug-in-neural-style")

    # The four frames selected (in a scrambled order), Animation off in the caller's values: the names
    # carry timings, so the dialog opens with it on; the test accepts it with Return.
    mark("ready", "animation-dialog")
    scrambled = [frames[2], frames[0], frames[3], frames[1]]
    facts["interactive"], made = run(procedure, Gimp.RunMode.INTERACTIVE, image, scrambled, style_layer=style,
                                     iterations=3, max_size=32, seed=3, animation=False, live_preview=False)
    mark("done", "animation-dialog")
    facts["source_dirty"] = image.is_dirty()
    facts["exported"] = exported_gif(made, os.path.join(WORK, "animation.gif"))

    # Filters → Animation → Playback on the result image: the test looks at its window, then closes it.
    Gimp.displays_flush()
    mark("ready", "animation-playback")
    playback = PDB.lookup_procedure("plug-in-animationplay")
    config = playback.create_config()
    config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    config.set_property("image", made)
    facts["playback"] = status_name(playback.run(config))
    mark("done", "animation-playback")

    # A layer group's layers are the frames.
    group = Gimp.GroupLayer.new(image, "walk")
    image.insert_layer(group, None, 0)
    for frame in frames:  # bottom first: each goes to the top of the group
        image.reorder_item(frame, group, 0)
    facts["group"], from_group = run(procedure, Gimp.RunMode.NONINTERACTIVE, image, [group], style_layer=style,
                                     iterations=3, max_size=32, seed=3, animation=True)
    facts["group_source_names"] = [child.get_name() for child in group.get_children()]

    # Run in the result image: re-run from its source frames with its settings, replaced in place.
    facts["re_edit"], again = run(procedure, Gimp.RunMode.NONINTERACTIVE, from_group, [from_group.get_layers()[0]],
                                  style_layer=style, iterations=3, max_size=32, seed=3, init="noise", animation=True)
    facts["re_edit"]["result"] = image_facts(from_group)
    facts["re_edit_same_image"] = again is not None and again.get_id() == from_group.get_id()

    # With "Keep the previous result": a second new image; the first stays as it was.
    kept_before = image_facts(from_group)
    facts["kept"], kept = run(procedure, Gimp.RunMode.NONINTERACTIVE, from_group, [from_group.get_layers()[0]],
                              style_layer=style, iterations=3, max_size=32, seed=4, keep_previous=True, animation=True)
    facts["kept_new_image"] = kept is not None and kept.get_id() != from_group.get_id()
    facts["kept_previous_unchanged"] = image_facts(from_group) == kept_before
    if kept is not None:
        kept.delete()

    # With the source image closed, a re-run says so in one line and changes nothing.
    before_orphan = image_facts(from_group)
    image.clean_all()
    display.delete()  # its only display: the image closes with it
    facts["orphan"], _ = run(procedure, Gimp.RunMode.NONINTERACTIVE, from_group, [from_group.get_layers()[0]],
                             style_layer=from_group.get_layers()[0], iterations=3, max_size=32, animation=True)
    facts["orphan_unchanged"] = image_facts(from_group) == before_orphan
    facts["source_closed"] = not image.is_valid()
except Exception as error:  # recorded for the test to report
    facts["exception"] = f"{type(error).__name__}: {error}"
with open(os.path.join(WORK, "animation-result.json"), "w") as handle:
    json.dump(facts, handle)
quit_procedure = PDB.lookup_procedure("gimp-quit")
quit_config = quit_procedure.create_config()
quit_config.set_property("force", True)
quit_procedure.run(quit_config)
