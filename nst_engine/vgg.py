"""VGG19's convolutional stack as a feature extractor addressed by layer names (``relu4_2``, ``conv1_1``…);
the names and shapes of its layers are in nst_engine.layers."""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import fused
from .layers import LAYER_DEPTH, VGG19_CONVS, Pooling

# torchvision's pre-trained VGG19 expects sRGB in [0, 1] normalised with the ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights, and of every feature map this model computes."""
        return self.convs[0].weight.dtype

    def converted(self, dtype: torch.dtype) -> VGGFeatures:
        """A copy whose convolutions hold their weights in ``dtype`` (same device and memory format), so
        that a reduced-precision pass casts nothing but its input.  The input normalisation stays
        float32: the image is normalised before it is rounded."""
        if dtype == self.dtype:
            return self
        twin = copy.deepcopy(self)
        twin.convs.to(dtype)
        return twin

    def forward(
        self, image: torch.Tensor, layers: Collection[str], pooling: Pooling = Pooling.MAX
    ) -> dict[str, torch.Tensor]:
        """Feature maps of ``image`` (N×3×H×W, sRGB in [0, 1]) at each requested layer name, in :attr:`dtype`."""
        wanted = set(layers)
        deepest = max(LAYER_DEPTH[name] for name in wanted)
        features: dict[str, torch.Tensor] = {}
        x = ((image - self.mean) / self.std).to(self.dtype)
        if fused.usable(x, self.convs[0].weight, wanted):
            names = sorted(wanted, key=LAYER_DEPTH.__getitem__)
            return dict(zip(names, fused.features(self.convs, fused.plan_for(names, pooling), x)))
        for spec, conv in zip(VGG19_CONVS, self.convs):
            if spec.position == 1 and spec.block > 1:
                x = F.max_pool2d(x, 2) if pooling is Pooling.MAX else F.avg_pool2d(x, 2)
            x = conv(x)
            if spec.conv_name in wanted:
                features[spec.conv_name] = x
            if LAYER_DEPTH[spec.conv_name] == deepest:
                break
            # In place saves a full activation's memory, except where the conv output is itself a feature.
            x = F.relu(x, inplace=spec.conv_name not in wanted)
            if spec.relu_name in wanted:
                features[spec.relu_name] = x
            if LAYER_DEPTH[spec.relu_name] == deepest:
                break
        return features
