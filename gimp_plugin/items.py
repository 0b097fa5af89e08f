"""Finding the image's items the plug-in refers to by tattoo (persistent across sessions, unlike ids)."""

from __future__ import annotations

from gi.repository import Gimp


def all_layers(image):
    """Every layer of ``image``, inside groups too, top to bottom."""
    found = []

    def walk(layers):
        for layer in layers:
            found.append(layer)
            if isinstance(layer, Gimp.GroupLayer):
                walk(layer.get_children())

    walk(image.get_layers())
    return found


def item_by_tattoo(image, tattoo: int):
    """The layer, channel or layer mask with ``tattoo``, or None."""
    layer = image.get_layer_by_tattoo(tattoo)
    if layer is not None:
        return layer
    channel = image.get_channel_by_tattoo(tattoo)
    if channel is not None:
        return channel
    for layer in all_layers(image):
        mask = layer.get_mask()
        if mask is not None and mask.get_tattoo() == tattoo:
            return mask
    return None
