"""The loss terms of Gatys et al. (2016), with the paper's normalisation unless a comment says otherwise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def _feature_matrix(features: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """One image's feature maps as a matrix without copying: (N×M, False), or (M×N, True) when the
    tensor is channels_last, where the channels are the innermost dimension."""
    single = features.reshape(features.shape[-3:])
    if single.stride(0) == 1 and single.dim() == 3 and single.shape[0] > 1:
        return single.permute(1, 2, 0).reshape(-1, single.shape[0]), True
    return single.reshape(single.shape[0], -1), False


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G = F Fᵀ for one image's feature maps (1×N×H×W, or N×H×W), F being N×M with M = H·W.

    Computed in float32 whatever the features' dtype: the Gram sums M products and loses precision
    in reduced formats.
    """
    matrix, transposed = _feature_matrix(features)
    matrix = _at_least_float32(matrix)
    return matrix.T @ matrix if transposed else matrix @ matrix.T


def style_normaliser(channels: int, positions: int) -> float:
    """1/(N_l²·M_l²), the paper's normalisation of a style layer's error (equation 4, without its ¼)."""
    return 1.0 / (channels**2 * positions**2)


def gram_error(difference: torch.Tensor, channels: int, positions: int) -> torch.Tensor:
    """E_l = ¼ · Σ (G − A)² / (N_l²·M_l²), from a layer's Gram difference G − A over N_l channels and M_l positions."""
    return difference.square().sum() * (style_normaliser(channels, positions) / 4.0)


class _StyleLayerLoss(torch.autograd.Function):
    """E_l with a hand-written backward: ∂E/∂F = (G − A)·F / (N²M²), one matrix product where autograd
    would spend two (it does not know that G − A is symmetric)."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, transposed: bool, target_gram: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        channels = matrix.shape[1] if transposed else matrix.shape[0]
        positions = matrix.numel() // channels
        as_float = _at_least_float32(matrix)
        gram = as_float.T @ as_float if transposed else as_float @ as_float.T
        difference = gram - target_gram
        ctx.save_for_backward(as_float, difference)
        ctx.transposed = transposed
        ctx.scale = style_normaliser(channels, positions)
        ctx.input_dtype = matrix.dtype
        return gram_error(difference, channels, positions)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        matrix, difference = ctx.saved_tensors
        scaled = difference * (grad_output * ctx.scale)  # N×N: cheaper to scale than the N×M result
        grad = matrix @ scaled if ctx.transposed else scaled @ matrix
        return grad.to(ctx.input_dtype), None, None


def style_layer_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """E_l = 1/(4·N_l²·M_l²) · Σ (G − A)², as in equation 4 of the paper."""
    matrix, transposed = _feature_matrix(features)
    return _StyleLayerLoss.apply(matrix, transposed, target_gram)


def gram_gradient_surrogate(features: torch.Tensor, difference: torch.Tensor) -> torch.Tensor:
    """⟨(G − A)·F, F⟩ with (G − A)·F held constant, for the feature maps F of part of an image whose
    whole Gram difference is ``difference``: its gradient with respect to F is (G − A)·F, which is
    ∂E_l/∂F of the whole image's error, up to :func:`style_normaliser`, at that part's positions."""
    matrix, transposed = _feature_matrix(features)
    matrix = _at_least_float32(matrix)
    with torch.no_grad():
        pulled = matrix @ difference if transposed else difference @ matrix
    return (pulled * matrix).sum()


def style_loss(
    features: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    layer_weights: Mapping[str, float],
) -> torch.Tensor:
    """L_style = Σ_l w_l · E_l over the style layers (equation 5 of the paper)."""
    terms = [weight * style_layer_loss(features[layer], target_grams[layer]) for layer, weight in layer_weights.items()]
    return torch.stack(terms).sum()


def content_loss(features: torch.Tensor, target: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """½ · Σ (F − P)² / (N·M): ½ · mean (F − P)², or, for part of an image's feature maps, with ``count``
    the N·M of the whole image's.

    Departure from the paper, whose equation 1 is ½ · Σ (F − P)²: we divide by N·M so that the content
    term, like the style term, does not grow with the image's area.  Otherwise α/β would mean something
    different at every size, and every stage of a multi-scale run would balance the two differently.
    """
    squared = (_at_least_float32(features) - _at_least_float32(target)).square()
    return 0.5 * (squared.mean() if count is None else squared.sum() / count)


def total_variation_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between horizontally and vertically neighbouring pixels.

    Not in Gatys et al.; a common smoothness prior (Mahendran & Vedaldi 2015), off by default.
    """
    horizontal = (image[..., :, 1:] - image[..., :, :-1]).square().mean()
    vertical = (image[..., 1:, :] - image[..., :-1, :]).square().mean()
    return horizontal + vertical


def blend_grams(grams_per_style: Sequence[Mapping[str, torch.Tensor]], blend_weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Σ_i b_i · A_i per layer, with the blend weights b normalised to sum to one."""
    total = float(sum(blend_weights))
    layers = grams_per_style[0].keys()
    return {
        layer: sum((weight / total) * grams[layer] for weight, grams in zip(blend_weights, grams_per_style))
        for layer in layers
    }


def box_penalty(image: torch.Tensor) -> torch.Tensor:
    """Σ of squared distances of pixel values outside [0, 1].

    Clamping inside an L-BFGS run would change the objective behind the optimiser's back and spoil its
    curvature pairs and line search; this smooth penalty (weighted by the caller) keeps the problem
    differentiable while holding pixels in range.  The final image is clamped once.
    """
    return (image - image.clamp(0.0, 1.0)).square().sum()
