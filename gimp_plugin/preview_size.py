"""How large the daemon makes live previews: never larger than a screen can show.

GIMP's API does not tell a plug-in a display's zoom, but no display shows an image at more pixels than
its monitor has, so the largest monitor's longest side (in device pixels) bounds what a preview needs.
The daemon scales each preview to fit before it sends it, so a large layer's previews cost a screenful
of bytes on the wire (on a remote daemon, that is what keeps previews live); the plug-in scales them up
into the result layer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from user_error import UserError

PREVIEW_MAX_SIDE_ENV = "NEURAL_STYLE_PREVIEW_MAX_SIDE"
NO_SCREEN_MAX_SIDE = 2048  # GIMP without a display (a script in gimp-console): a large screen's width
SMALLEST_MAX_SIDE = 16


@dataclass(frozen=True)
class Monitor:
    width: int  # logical pixels, as GDK reports them
    height: int
    scale_factor: int  # device pixels per logical pixel (2 on most HiDPI screens)

    def longest_side(self) -> int:
        return max(self.width, self.height) * self.scale_factor


def preview_max_side(environ: Mapping[str, str], monitors: Sequence[Monitor]) -> int:
    """The longest side, in pixels, to ask the daemon's previews to fit: ``NEURAL_STYLE_PREVIEW_MAX_SIDE``
    where set (smaller previews for a slow link to a remote daemon), else the largest monitor's."""
    explicit = environ.get(PREVIEW_MAX_SIDE_ENV, "").strip()
    if explicit:
        try:
            side = int(explicit)
        except ValueError:
            side = 0
        if side < SMALLEST_MAX_SIDE:
            raise UserError(f"Neural Style: {PREVIEW_MAX_SIDE_ENV} must be a whole number of pixels, at least "
                            f"{SMALLEST_MAX_SIDE} (it is “{explicit}”).")
        return side
    if not monitors:
        return NO_SCREEN_MAX_SIDE
    return max(monitor.longest_side() for monitor in monitors)


def gdk_monitors() -> list[Monitor]:
    """The monitors of the display GIMP runs on; none when there is no display.  A non-interactive run
    has not opened the display yet (only the dialog does), so this opens it where one is named."""
    import gi

    try:
        gi.require_version("Gdk", "3.0")
        from gi.repository import Gdk
    except (ImportError, ValueError):  # no GTK 3 typelib: GIMP is without a display too
        return []

    display = Gdk.Display.get_default()
    if display is None and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        Gdk.init_check([])
        display = Gdk.Display.get_default()
    if display is None:
        return []
    monitors = []
    for index in range(display.get_n_monitors()):
        monitor = display.get_monitor(index)
        geometry = monitor.get_geometry()
        monitors.append(Monitor(geometry.width, geometry.height, monitor.get_scale_factor()))
    return monitors
