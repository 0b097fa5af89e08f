"""VGG19's convolutional stack as a feature extractor addressed by layer names (``relu4_2``, ``conv1_1``…)."""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Convolutions per block and channels per block of VGG19 (Simonyan & Zisserman, configuration "E").
VGG19_BLOCKS: tuple[int, ...] = (2, 2, 4, 4, 4)
VGG19_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

# torchvision's pre-trained VGG19 expects sRGB in [0, 1] normalised with the ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
_LAYER_DEPTH: dict[str, int] = {name: depth for depth, name in enumerate(LAYER_NAMES)}


def layer_channels(name: str) -> int:
    """Number of feature maps (N_l in the paper) of a named layer."""
    return VGG19_CONVS[_LAYER_DEPTH[name] // 2].out_channels


def layer_downsampling(name: str) -> int:
    """How many times smaller than the input a named layer's feature maps are (1, 2, 4, 8 or 16)."""
    return 2 ** (VGG19_CONVS[_LAYER_DEPTH[name] // 2].block - 1)


def validate_layer_names(names: Collection[str], field: str) -> None:
    from .errors import InvalidSettingsError

    unknown = [name for name in names if name not in _LAYER_DEPTH]
    if unknown:
        raise InvalidSettingsError(
            f"{field}: unknown layer {', '.join(unknown)}; use names from conv1_1/relu1_1 to conv5_4/relu5_4"
        )


class VGGFeatures(nn.Module):
    """VGG19's convolutions with frozen weights; ``forward`` stops after the deepest requested layer."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """``state_dict`` holds torchvision's features-only keys (``"0.weight"``, ``"0.bias"``, ``"2.weight"``…)."""
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(spec.in_channels, spec.out_channels, kernel_size=3, padding=1) for spec in VGG19_CONVS
        )
        for spec, conv in zip(VGG19_CONVS, self.convs):
            conv.weight.data.copy_(state_dict[f"{spec.features_index}.weight"])
            conv.bias.data.copy_(state_dict[f"{spec.features_index}.bias"])
        self.requires_grad_(False)
        self.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(
        self, image: torch.Tensor, layers: Collection[str], pooling: Pooling = Pooling.MAX
    ) -> dict[str, torch.Tensor]:
        """Feature maps of ``image`` (N×3×H×W, sRGB in [0, 1]) at each requested layer name."""
        wanted = set(layers)
        deepest = max(_LAYER_DEPTH[name] for name in wanted)
        features: dict[str, torch.Tensor] = {}
        x = (image - self.mean) / self.std
        for spec, conv in zip(VGG19_CONVS, self.convs):
            if spec.position == 1 and spec.block > 1:
                x = F.max_pool2d(x, 2) if pooling is Pooling.MAX else F.avg_pool2d(x, 2)
            x = conv(x)
            if spec.conv_name in wanted:
                features[spec.conv_name] = x
            if _LAYER_DEPTH[spec.conv_name] == deepest:
                break
            # In place saves a full activation's memory, except where the conv output is itself a feature.
            x = F.relu(x, inplace=spec.conv_name not in wanted)
            if spec.relu_name in wanted:
                features[spec.relu_name] = x
            if _LAYER_DEPTH[spec.relu_name] == deepest:
                break
        return features
