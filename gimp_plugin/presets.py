"""Quality presets: each sets the size, the iterations and the stages, for the kind of device the
daemon runs on.  GIMP-free, so that tests can check them.

On a GPU the result is optimised at the layer's own size (max-size 0, the engine tiles what does not
fit); on a CPU the default preset is sized to finish in about a minute (docs/benchmarks.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from daemon.wire.messages import StatusReply
from nst_engine.schema import Choice


class Preset(str, enum.Enum):
    CUSTOM = "custom"
    DRAFT = "draft"
    BALANCED = "balanced"
    FINE = "fine"


class DeviceKind(str, enum.Enum):
    CPU = "cpu"
    GPU = "gpu"


@dataclass(frozen=True)
class Quality:
    """The values a preset writes into the procedure's arguments."""

    max_size: int  # 0: the layer's own size
    iterations: int
    scales: int  # 0: automatic
    coarse_iterations: int  # 0: as many as iterations

    def arguments(self) -> dict[str, int]:
        return {"max-size": self.max_size, "iterations": self.iterations, "scales": self.scales,
                "coarse-iterations": self.coarse_iterations}


PRESETS: dict[DeviceKind, dict[Preset, Quality]] = {
    # Measured 2026-11-29 with random stand-in weights on this project's 2-core machine: Balanced (192 px,
    # 80 iterations) took 41 s for a 4:3 layer (192×144) with the machine idle, 114 s at load average 3
    # from other jobs; 256 px and 100 iterations took 276 s at that load (docs/benchmarks.md).
    DeviceKind.CPU: {
        Preset.DRAFT: Quality(128, 50, 1, 0),
        Preset.BALANCED: Quality(192, 80, 1, 0),
        Preset.FINE: Quality(384, 200, 2, 100),
    },
    DeviceKind.GPU: {
        Preset.DRAFT: Quality(512, 200, 0, 100),
        Preset.BALANCED: Quality(0, 500, 0, 200),
        Preset.FINE: Quality(0, 1000, 0, 500),
    },
}
DEFAULT_PRESET = Preset.BALANCED

PRESET_CHOICES = (
    Choice(Preset.CUSTOM.value, "Custom", "the size, iterations and stages as set below"),
    Choice(Preset.DRAFT.value, "Draft", "a quick look: small and few iterations"),
    Choice(Preset.BALANCED.value, "Balanced",
           "the layer's own size on a GPU; on a CPU small enough to finish in about a minute"),
    Choice(Preset.FINE.value, "Fine", "more iterations (and on a CPU a larger size): slow"),
)


def device_kind(status: StatusReply | None) -> DeviceKind | None:
    """GPU or CPU from the daemon's status: the device the next job goes to (its first, whose model is
    loaded or will be); None when there is no status."""
    if status is None or not status.devices:
        return None
    device = str(status.devices[0]["device"])
    if device.startswith(("cuda", "mps", "xpu")):
        return DeviceKind.GPU
    if device.startswith("cpu"):
        return DeviceKind.CPU
    return None


def quality(preset: Preset, kind: DeviceKind | None) -> Quality | None:
    """What ``preset`` sets on ``kind`` (a CPU when unknown); None for Custom."""
    if preset is Preset.CUSTOM:
        return None
    return PRESETS[kind or DeviceKind.CPU][preset]


def opening_preset(preset: Preset, values: dict[str, int], defaults: dict[str, int]) -> Preset:
    """The preset the dialog opens with: the device's default preset while the size, iterations and
    stages are untouched defaults (first use, with nothing remembered), else the one given."""
    untouched = all(values[name] == defaults[name] for name in Quality(0, 0, 0, 0).arguments())
    return DEFAULT_PRESET if preset is Preset.CUSTOM and untouched else preset


def describe(kind: DeviceKind | None) -> str:
    """A line for the dialog that says which default applies."""
    if kind is DeviceKind.GPU:
        return "The daemon runs on a GPU: Balanced works at the layer's full size."
    if kind is DeviceKind.CPU:
        size = PRESETS[DeviceKind.CPU][DEFAULT_PRESET].max_size
        return f"The daemon runs on a CPU: Balanced works at up to {size} px and takes about a minute."
    return "The daemon's device is not known yet: the presets assume a CPU."
