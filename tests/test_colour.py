"""Colour control: histogram matching moves a style's colour distribution to the content's."""

import torch

from nst_engine.colour import colour_statistics, match_colours

from .stand_ins import smooth_image


def tinted(image: torch.Tensor, scale: tuple[float, float, float], offset: tuple[float, float, float]) -> torch.Tensor:
    return image * torch.tensor(scale)[:, None, None] + torch.tensor(offset)[:, None, None]


def test_matched_style_has_the_contents_mean_and_covariance():
    content = tinted(smooth_image(40, 40, seed=1), (0.5, 0.6, 0.3), (0.3, 0.2, 0.4))  # stays inside [0, 1]
    style = tinted(smooth_image(48, 32, seed=2), (0.4, 0.2, 0.6), (0.1, 0.5, 0.2))
    matched = match_colours(style, content)
    mean, covariance = colour_statistics(matched)
    content_mean, content_covariance = colour_statistics(content)
    assert torch.allclose(mean, content_mean, atol=1e-4)
    assert torch.allclose(covariance, content_covariance, atol=1e-5)
    assert not torch.allclose(colour_statistics(style)[0], content_mean, atol=1e-2)


def test_matching_keeps_the_style_s_structure():
    """A linear colour map: pixels that were alike stay alike, so the texture survives."""
    style = smooth_image(32, 32, seed=3)
    matched = match_colours(style, smooth_image(32, 32, seed=4))
    correlation = torch.corrcoef(torch.stack([style.mean(0).flatten(), matched.mean(0).flatten()]))[0, 1]
    assert correlation.abs() > 0.9


def test_weights_leave_out_transparent_pixels():
    style = smooth_image(32, 32, seed=5)
    style[:, :, 16:] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # a red right half, "transparent"
    weights = torch.zeros(32, 32)
    weights[:, :16] = 1.0
    mean, _ = colour_statistics(style, weights)
    assert torch.allclose(mean, style[:, :, :16].reshape(3, -1).double().mean(1))


def test_a_flat_style_does_not_blow_up():
    flat = torch.full((3, 16, 16), 0.5)
    matched = match_colours(flat, smooth_image(16, 16, seed=6))
    assert torch.isfinite(matched).all() and matched.min() >= 0 and matched.max() <= 1
