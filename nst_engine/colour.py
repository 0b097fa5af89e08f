"""Colour preservation by luminance-only transfer (Gatys et al. 2017, "Controlling Perceptual Factors
in Neural Style Transfer", section 5.1): stylise the luminance channel alone, then recombine it with the
content's chrominance.  YIQ, the space the paper uses, is a linear transform of RGB.
"""

from __future__ import annotations

import torch

_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.5959, -0.2746, -0.3213],
        [0.2115, -0.5227, 0.3112],
    ]
)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    """3×H×W (or 1×3×H×W) RGB → YIQ."""
    matrix = _RGB_TO_YIQ.to(image.device, image.dtype)
    return torch.einsum("ij,...jhw->...ihw", matrix, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    matrix = torch.linalg.inv(_RGB_TO_YIQ).to(image.device, image.dtype)
    return torch.einsum("ij,...jhw->...ihw", matrix, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Y of an RGB image, repeated into three channels so that VGG can take it."""
    luma = rgb_to_yiq(image)[..., :1, :, :]
    return luma.expand_as(image).contiguous()


def match_luminance(style_luma: torch.Tensor, content_luma: torch.Tensor) -> torch.Tensor:
    """Shift and scale the style's luminance to the content's mean and standard deviation (eq. 2 of the 2017 paper)."""
    style_std = style_luma.std().clamp_min(1e-6)
    return (style_luma - style_luma.mean()) * (content_luma.std() / style_std) + content_luma.mean()


def recombine(stylised_luma: torch.Tensor, content_rgb: torch.Tensor) -> torch.Tensor:
    """RGB image with the stylised luminance and the content's I and Q channels, clamped to [0, 1]."""
    yiq = rgb_to_yiq(content_rgb)
    yiq = torch.cat([stylised_luma.mean(dim=-3, keepdim=True), yiq[..., 1:, :, :]], dim=-3)
    return yiq_to_rgb(yiq).clamp(0.0, 1.0)
