"""VGG19's layers by name (``relu4_2``, ``conv1_1``…) and their shapes, without torch.

The settings schema validates layer names with this module, and the torch-free client (the daemon's
protocol, the GIMP plug-in) imports the schema; nst_engine.vgg builds the network from these specs.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass

from .errors import InvalidSettingsError

# Convolutions per block and channels per block of VGG19 (Simonyan & Zisserman, configuration "E").
VGG19_BLOCKS: tuple[int, ...] = (2, 2, 4, 4, 4)
VGG19_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
# Feature maps of the last block are this many times smaller than the input (one 2× pooling per block).
MAX_DOWNSAMPLING = 2 ** (len(VGG19_BLOCKS) - 1)


class Pooling(str, enum.Enum):
    MAX = "max"
    # Gatys et al. (2016) found average pooling gives slightly more appealing results; it is an option.
    AVERAGE = "avg"


@dataclass(frozen=True)
class ConvSpec:
    """One 3×3 convolution of VGG19 and where torchvision's ``features`` keeps its parameters."""

    block: int  # 1-based
    position: int  # 1-based within the block
    features_index: int  # index in torchvision's ``vgg19().features``
    in_channels: int
    out_channels: int

    @property
    def conv_name(self) -> str:
        return f"conv{self.block}_{self.position}"

    @property
    def relu_name(self) -> str:
        return f"relu{self.block}_{self.position}"


def _vgg19_conv_specs() -> tuple[ConvSpec, ...]:
    specs: list[ConvSpec] = []
    index, in_channels = 0, 3
    for block, (count, channels) in enumerate(zip(VGG19_BLOCKS, VGG19_CHANNELS), start=1):
        for position in range(1, count + 1):
            specs.append(ConvSpec(block, position, index, in_channels, channels))
            index += 2  # conv, relu
            in_channels = channels
        index += 1  # pool
    return tuple(specs)


VGG19_CONVS: tuple[ConvSpec, ...] = _vgg19_conv_specs()
LAYER_NAMES: tuple[str, ...] = tuple(
    name for spec in VGG19_CONVS for name in (spec.conv_name, spec.relu_name)
)
LAYER_DEPTH: dict[str, int] = {name: depth for depth, name in enumerate(LAYER_NAMES)}


def layer_channels(name: str) -> int:
    """Number of feature maps (N_l in the paper) of a named layer."""
    return VGG19_CONVS[LAYER_DEPTH[name] // 2].out_channels


def layer_downsampling(name: str) -> int:
    """How many times smaller than the input a named layer's feature maps are (1, 2, 4, 8 or 16)."""
    return 2 ** (VGG19_CONVS[LAYER_DEPTH[name] // 2].block - 1)


def validate_layer_names(names: Collection[str], field: str) -> None:
    unknown = [str(name) for name in names if name not in LAYER_DEPTH]
    if unknown:
        raise InvalidSettingsError(
            f"{field}: unknown layer {', '.join(unknown)}; use names from conv1_1/relu1_1 to conv5_4/relu5_4"
        )
