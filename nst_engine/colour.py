"""Colour control (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer",
section 5): keep the content's colours either by luminance-only transfer (stylise the luminance channel
alone, then recombine it with the content's chrominance; YIQ, the space the paper uses, is a linear
transform of RGB), or by matching the style image's colour distribution to the content's before the run.
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


def colour_statistics(image: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (3) and covariance (3×3) of an image's RGB values (3×H×W or 1×3×H×W); ``weights`` (H×W, ≥ 0)
    counts each pixel that much, e.g. a style image's alpha."""
    pixels = image.reshape(3, -1).double()
    if weights is None:
        weights = torch.ones(pixels.shape[1], dtype=torch.float64, device=image.device)
    else:
        weights = weights.reshape(-1).to(image.device, torch.float64)
    total = weights.sum().clamp_min(1e-12)
    mean = (pixels * weights).sum(dim=1) / total
    centred = pixels - mean[:, None]
    covariance = (centred * weights) @ centred.T / total
    return mean, covariance


def match_colours(
    style: torch.Tensor, content: torch.Tensor, style_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The style image with its colours moved to the content's mean and covariance (section 5.2 of the
    2017 paper): x' = A(x − μ_s) + μ_c with A Σ_s Aᵀ = Σ_c.

    A = Σ_c^½ Σ_s^−½, the symmetric choice (the paper also names the Cholesky one): of the linear maps
    that match the covariance it turns the colour space least, so hues keep their order.  A nearly
    flat style (a covariance eigenvalue near zero) is regularised rather than blown up.  Values are
    clamped to [0, 1], which can shift the statistics where the match asks for colours out of range.
    """
    style_mean, style_cov = colour_statistics(style, style_weights)
    content_mean, content_cov = colour_statistics(content)
    transform = _matrix_power(content_cov, 0.5) @ _matrix_power(style_cov, -0.5)
    pixels = style.reshape(3, -1).double()
    matched = transform @ (pixels - style_mean[:, None]) + content_mean[:, None]
    return matched.reshape(style.shape).to(style.dtype).clamp(0.0, 1.0)


def _matrix_power(symmetric: torch.Tensor, power: float, floor: float = 1e-5) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(symmetric)
    return vectors @ torch.diag(values.clamp_min(floor) ** power) @ vectors.T
