"""Which layers a run works on: each selected layer, or for a selected result its source (re-run and
replaced in place).  Anything else among the selected drawables gets a message that says what to do."""

from __future__ import annotations

from dataclasses import dataclass

from gi.repository import Gimp

from result_record import ResultRecord
from user_error import UserError

PARASITE = "neural-style-settings"  # on a result layer: its ResultRecord
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
                            "layers inside it, or merge the group first.")
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
