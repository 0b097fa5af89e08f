"""What a result layer remembers of the run that made it (its settings parasite), so that running the
filter on the result re-runs it from its source.  GIMP-free, so that tests can check it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pixels import Region

RECORD_VERSION = 2


@dataclass(frozen=True)
class ResultRecord:
    """``arguments``: the procedure's plain argument values (layers and channels by tattoo, under
    ``tattoos``); ``settings``: what went to the daemon; ``region``: the processed rectangle in the
    source layer's coordinates."""

    source_tattoo: int
    region: Region
    arguments: dict[str, Any]
    tattoos: dict[str, int | None] = field(default_factory=dict)  # argument name → tattoo of its item
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # job id, transport, live-preview updates
    # An animation's result image: its source frames' tattoos and names, bottom to top (``source_tattoo``
    # is the first's), the id their image had (valid within one GIMP session), and the tattoos of its own
    # frames, made from them in the same order.
    frame_tattoos: tuple[int, ...] = ()
    frame_image_id: int | None = None
    frame_names: tuple[str, ...] = ()
    result_tattoos: tuple[int, ...] = ()

    def to_json(self) -> str:
        # The settings stay at the top level, as version 1 wrote them, for anyone reading the parasite.
        return json.dumps({**self.settings, **self.details, "version": RECORD_VERSION,
                           "source_tattoo": self.source_tattoo, "region": asdict(self.region),
                           "arguments": self.arguments, "tattoos": self.tattoos, "settings": self.settings,
                           **({"frame_tattoos": list(self.frame_tattoos), "frame_image_id": self.frame_image_id,
                               "frame_names": list(self.frame_names),
                               "result_tattoos": list(self.result_tattoos)} if self.frame_tattoos else {})})

    @classmethod
    def from_json(cls, text: str) -> ResultRecord | None:
        """The record, or None for a parasite that does not hold one (written by version 1, or damaged)."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
                return None
            region = Region(**{key: int(data["region"][key]) for key in ("x", "y", "width", "height")})
            return cls(int(data["source_tattoo"]), region, dict(data["arguments"]),
                       {str(k): (None if v is None else int(v)) for k, v in dict(data["tattoos"]).items()},
                       dict(data.get("settings", {})),
                       frame_tattoos=tuple(int(tattoo) for tattoo in data.get("frame_tattoos", ())),
                       frame_image_id=None if data.get("frame_image_id") is None else int(data["frame_image_id"]),
                       frame_names=tuple(str(name) for name in data.get("frame_names", ())),
                       result_tattoos=tuple(int(tattoo) for tattoo in data.get("result_tattoos", ())))
        except (ValueError, TypeError, KeyError):
            return None
