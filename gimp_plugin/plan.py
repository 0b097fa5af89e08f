"""Which layers a run works on: each selected layer, or for a selected result its source (re-run and
replaced in place).  Anything else among the selected drawables gets a message that says what to do."""

from __future__ import annotations

from dataclasses import dataclass

from gi.repository import Gimp

from frames import bottom_to_top
from items import all_layers
from pixels import Region
from result_record import ResultRecord
from user_error import UserError

PARASITE = "neural-style-settings"  # on a result layer, or an animation's result image: its ResultRecord
STYLE_LAYER_PARASITE = "neural-style-style-layer"  # on an image: the style layers of its last run


@dataclass
class Target:
    """One job: ``source`` is styled; ``previous`` is the result it replaces (with its ``record``)."""

    source: object
    previous: object | None = None
    record: ResultRecord | None = None


def plan_targets(image, drawables) -> list[Target]:
    if not drawables:
        raise UserError("Neural Style needs a layer: select one or more layers.")
    targets = []
    for drawable in drawables:
        name = drawable.get_name()
        if isinstance(drawable, Gimp.LayerMask):
            raise UserError(f"Neural Style works on layers, not on a layer mask (of “{name}”): "
                            "select the layer itself in the Layers dialog.")
        if isinstance(drawable, Gimp.Channel):
            raise UserError(f"Neural Style works on layers, not on a channel (“{name}”): select a layer. "
                            "A channel can be a style's region in the dialog.")
        if isinstance(drawable, Gimp.GroupLayer):
            raise UserError(f"Neural Style works on layers, not on a layer group (“{name}”): select the "
                            "layers inside it, merge the group first, or tick Animation to stylise its layers as "
                            "an animation's frames.")
        parasite = drawable.get_parasite(PARASITE)
        record = ResultRecord.from_json(bytes(parasite.get_data()).decode()) if parasite is not None else None
        if record is None:
            targets.append(Target(drawable))
            continue
        source = image.get_layer_by_tattoo(record.source_tattoo)
        if source is None:
            raise UserError(f"Neural Style: the layer “{name}” was made from is no longer in the image, so it "
                            "cannot be re-run; run the filter on another layer.")
        targets.append(Target(source, drawable, record))
    sources = [target.source.get_id() for target in targets]
    if len(set(sources)) != len(sources):
        raise UserError("Neural Style: two of the selected layers are a result and its source (or two results of "
                        "one source); select one of them.")
    return targets


@dataclass
class AnimationTarget:
    """One sequence job: ``frames`` (layers of ``image``, bottom one first) give a new image of frames; for
    a re-run, ``previous`` is the result image it re-runs (with its ``record``)."""

    image: object
    frames: list
    previous: object | None = None
    record: ResultRecord | None = None

    def region(self, image) -> Region:
        """The frames' common rectangle in image coordinates: the union of their bounds, within the canvas
        (each frame is read over it, transparent where it does not reach)."""
        if self.record is not None:
            return self.record.region
        boxes = []
        for layer in self.frames:
            x, y = layer.get_offsets()[1:]
            boxes.append((x, y, x + layer.get_width(), y + layer.get_height()))
        left, top = max(0, min(box[0] for box in boxes)), max(0, min(box[1] for box in boxes))
        right = min(image.get_width(), max(box[2] for box in boxes))
        bottom = min(image.get_height(), max(box[3] for box in boxes))
        if right <= left or bottom <= top:
            raise UserError("Neural Style: the animation's frames lie outside the canvas.")
        return Region(left, top, right - left, bottom - top)


def plan_animation(image, drawables) -> AnimationTarget | None:
    """The animation the run makes, or None where Animation does not apply (one plain layer, or something
    that is not a layer): in the result image of an earlier animation, that animation again (re-run from
    its frames); a layer group (its layers are the frames); several selected layers."""
    record = animation_record(image)
    if record is not None:
        source, frames = _source_frames(image, record)
        return AnimationTarget(source, frames, image, record)
    if len(drawables) == 1 and isinstance(drawables[0], Gimp.GroupLayer):
        children = drawables[0].get_children()
        if len(children) < 2:
            return None
        return AnimationTarget(image, bottom_to_top([(child, image.get_item_position(child)) for child in children]))
    if len(drawables) < 2 or any(not isinstance(drawable, Gimp.Layer) or isinstance(drawable, Gimp.LayerMask)
                                 for drawable in drawables):
        return None
    # Across groups too: the order of the Layers dialog, top to bottom (all_layers), reversed.
    order = {layer.get_id(): position for position, layer in enumerate(all_layers(image))}
    return AnimationTarget(image, bottom_to_top([(layer, order[layer.get_id()]) for layer in drawables]))


def animation_record(image) -> ResultRecord | None:
    """The record of the animation ``image`` is the result of, or None."""
    parasite = image.get_parasite(PARASITE)
    record = ResultRecord.from_json(bytes(parasite.get_data()).decode()) if parasite is not None else None
    return record if record is not None and record.frame_tattoos else None


def _source_frames(result_image, record: ResultRecord):
    """The open image that holds the frames ``record`` was made from, and those frames: the image of the
    recorded id (within the session that made the result), else one whose layers of the recorded tattoos
    bear the recorded names (after a restart; results of other animations, which bear those names too,
    are no candidates)."""
    recorded = Gimp.Image.get_by_id(record.frame_image_id) if record.frame_image_id is not None else None
    candidates = [recorded] if recorded is not None and recorded.is_valid() else []
    candidates += [image for image in Gimp.get_images() if animation_record(image) is None]
    for candidate in candidates:
        if candidate.get_id() == result_image.get_id():
            continue
        frames = [candidate.get_layer_by_tattoo(tattoo) for tattoo in record.frame_tattoos]
        if all(frame is not None for frame in frames) and \
                tuple(frame.get_name() for frame in frames) == record.frame_names:
            return candidate, frames
    raise UserError("Neural Style: this image is an animation's result, and the frames it was made from are not "
                    "open (or were renamed or removed): open their image, then run the filter here again.")
