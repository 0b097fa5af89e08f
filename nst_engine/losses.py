"""The loss terms of Gatys et al. (2016), with the paper's normalisation unless a comment says otherwise."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .products import gram


def _feature_matrix(features: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """One image's feature maps as a matrix without copying: (N×M, False), or (M×N, True) when the
    tensor is channels_last, where the channels are the innermost dimension."""
    single = features.reshape(features.shape[-3:])
    if single.stride(0) == 1 and single.dim() == 3 and single.shape[0] > 1:
        return single.permute(1, 2, 0).reshape(-1, single.shape[0]), True
    return single.reshape(single.shape[0], -1), False


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def _guide_vector(guide: torch.Tensor | None, transposed: bool, like: torch.Tensor) -> torch.Tensor | None:
    """The guide (h×w) as a column or row along the positions of a :func:`_feature_matrix`, in the
    matrix's dtype (a no-op for guides already there: see :meth:`StyleTerm.in_dtype`)."""
    if guide is None:
        return None
    weights = guide.reshape(-1).to(like.device, like.dtype)
    return weights[:, None] if transposed else weights[None, :]


def _guided(features: torch.Tensor, guide: torch.Tensor | None) -> tuple[torch.Tensor, bool]:
    """(F∘g, transposed): the feature matrix as :func:`_feature_matrix` gives it, in its own dtype,
    weighted by the guide."""
    matrix, transposed = _feature_matrix(features)
    weights = _guide_vector(guide, transposed, matrix)
    return (matrix if weights is None else matrix * weights), transposed


def guide_weight(features: torch.Tensor, guide: torch.Tensor | None) -> float:
    """Σ g² over the positions of ``features``: M without a guide (see nst_engine.guides)."""
    if guide is None:
        return float(features.shape[-2] * features.shape[-1])
    return float(guide.double().square().sum())


def guided_gram_sum(features: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_p g_p² f_p f_pᵀ over one image's (or one tile's) positions; F Fᵀ without a guide.  float32,
    accumulated in float32, from features in float32 or bf16."""
    matrix, transposed = _guided(features, guide)
    return gram(matrix, transposed)


def mean_gram(features: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
    """Ĝ = Σ_p g_p² f_p f_pᵀ / Σ_p g_p²: the Gram matrix per position of the guided region (of the
    whole image without a guide, F Fᵀ / M).

    Style targets and the output's statistics are compared as such means, so that a style image of
    another area than the output (another aspect ratio, a region) weighs neither more nor less: the
    paper's equation 4, E = Σ (G − A)² / (4·N²·M²), assumes both have M positions, and equals
    Σ (Ĝ − Â)² / (4·N²) when they do.
    """
    return guided_gram_sum(features, guide) / guide_weight(features, guide)


def style_normaliser(channels: int) -> float:
    """1/N_l², the normalisation of a style layer's error between per-position Gram matrices."""
    return 1.0 / channels**2


def gram_error(difference: torch.Tensor, channels: int) -> torch.Tensor:
    """E_l = ¼ · Σ (Ĝ − Â)² / N_l², from a layer's difference of per-position Gram matrices."""
    return difference.square().sum() * (style_normaliser(channels) / 4.0)


class _StyleLayerLoss(torch.autograd.Function):
    """E_l with a hand-written backward: ∂E/∂F = (Ĝ − Â)·(F∘g)∘g / (N²·Σg²), one matrix product where
    autograd would spend two (it does not know that Ĝ − Â is symmetric).

    Both products stay in the features' dtype: the Gram matrix is accumulated and returned in float32
    (nst_engine.products), the gradient, which flows on into the VGG's backward pass in that dtype, is
    accumulated in float32 and rounded once."""

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, transposed: bool, target: torch.Tensor,  # type: ignore[override]
                weights: torch.Tensor | None, total_weight: float) -> torch.Tensor:
        channels = matrix.shape[1] if transposed else matrix.shape[0]
        guided = matrix if weights is None else matrix * weights
        difference = gram(guided, transposed) / total_weight - target
        ctx.save_for_backward(guided, difference, weights)
        ctx.transposed = transposed
        ctx.scale = style_normaliser(channels) / total_weight
        return gram_error(difference, channels)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:  # type: ignore[override]
        guided, difference, weights = ctx.saved_tensors
        # N×N: cheaper to scale (and round) than the N×M result.
        scaled = (difference * (grad_output * ctx.scale)).to(guided.dtype)
        grad = guided @ scaled if ctx.transposed else scaled @ guided
        if weights is not None:
            grad = grad * weights
        return grad, None, None, None, None


def style_layer_loss(features: torch.Tensor, target: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
    """E_l = Σ (Ĝ − Â)² / (4·N_l²) between the per-position Gram matrix of ``features`` over the
    ``guide``'s region (the whole image without one) and the per-position ``target`` Â (equation 4
    of the paper, in the form :func:`mean_gram` explains).  Zero for a region empty at this layer."""
    total_weight = guide_weight(features, guide)
    if total_weight == 0:
        return features.new_zeros((), dtype=torch.float32)
    matrix, transposed = _feature_matrix(features)
    weights = _guide_vector(guide, transposed, matrix)
    return _StyleLayerLoss.apply(matrix, transposed, target, weights, total_weight)


def gram_gradient_surrogate(features: torch.Tensor, difference: torch.Tensor,
                            guide: torch.Tensor | None = None) -> torch.Tensor:
    """⟨(Ĝ − Â)·H, H⟩ with (Ĝ − Â)·H held constant, H = F∘g being the guided feature maps of part of an
    image whose whole per-position Gram difference is ``difference``: its gradient with respect to F is
    (Ĝ − Â)·(F∘g)∘g, which is ∂E_l/∂F of the whole image's error, up to
    :func:`style_normaliser` / Σg², at that part's positions.  ``difference`` in the features' dtype
    (the product rounds nothing else; cast it once per evaluation, not per tile)."""
    matrix, transposed = _guided(features, guide)
    with torch.no_grad():
        difference = difference.to(matrix.dtype)
        pulled = matrix @ difference if transposed else difference @ matrix
    return (pulled * matrix).sum(dtype=torch.float32)


@dataclass(frozen=True)
class StyleTerm:
    """One comparison of Gram statistics at every style layer: the output's over a region (``guides``,
    per layer; the whole image when None) against per-position ``targets``, counted ``weight`` times."""

    targets: Mapping[str, torch.Tensor]
    weight: float = 1.0
    guides: Mapping[str, torch.Tensor] | None = None

    def guide(self, layer: str) -> torch.Tensor | None:
        return None if self.guides is None else self.guides[layer]

    def in_dtype(self, dtype: torch.dtype) -> StyleTerm:
        """This term with its guides in ``dtype``, the features' (cast once per stage, not per evaluation);
        the targets stay float32."""
        if self.guides is None:
            return self
        return dataclasses.replace(self, guides={layer: guide.to(dtype) for layer, guide in self.guides.items()})


def style_loss(
    features: Mapping[str, torch.Tensor],
    terms: Sequence[StyleTerm],
    layer_weights: Mapping[str, float],
) -> torch.Tensor:
    """L_style = Σ_t λ_t Σ_l w_l · E_l over the style layers (equation 5 of the paper; one term per
    region for spatial control, section 4 of the 2017 paper)."""
    losses = [term.weight * weight * style_layer_loss(features[layer], term.targets[layer], term.guide(layer))
              for term in terms for layer, weight in layer_weights.items()]
    return torch.stack(losses).sum()


def content_loss(features: torch.Tensor, target: torch.Tensor, count: int | None = None) -> torch.Tensor:
    """½ · Σ (F − P)² / (N·M): ½ · mean (F − P)², or, for part of an image's feature maps, with ``count``
    the N·M of the whole image's.

    Departure from the paper, whose equation 1 is ½ · Σ (F − P)²: we divide by N·M so that the content
    term, like the style term, does not grow with the image's area.  Otherwise α/β would mean something
    different at every size, and every stage of a multi-scale run would balance the two differently.
    """
    return _ContentLoss.apply(features, target, count)


class _ContentLoss(torch.autograd.Function):
    """:func:`content_loss` with a hand-written backward: ∂/∂F = (F − P)·2q, q = ½·∂L/N·M, in one
    pass over the features where autograd spent four, on a gradient it broadcast from a scalar in
    another layout than the features' (slow on the CPU).  The same values as autograd's, bit for bit:
    2q and 2(F − P) are exact, so (F − P)·2q rounds as autograd's q·2(F − P) does."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, target: torch.Tensor,  # type: ignore[override]
                count: int | None) -> torch.Tensor:
        difference = _at_least_float32(features) - _at_least_float32(target)
        squared = difference.square()
        ctx.save_for_backward(difference)
        ctx.divisor = squared.numel() if count is None else count
        ctx.dtype = features.dtype
        return 0.5 * (squared.mean() if count is None else squared.sum() / count)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (difference,) = ctx.saved_tensors
        per_value = (grad_output * 0.5) / ctx.divisor
        return (difference * (2 * per_value)).to(ctx.dtype), None, None


def total_variation_loss(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between horizontally and vertically neighbouring pixels.

    Not in Gatys et al.; a common smoothness prior (Mahendran & Vedaldi 2015), off by default.
    """
    horizontal = (image[..., :, 1:] - image[..., :, :-1]).square().mean()
    vertical = (image[..., 1:, :] - image[..., :-1, :]).square().mean()
    return horizontal + vertical


def blend_grams(grams_per_style: Sequence[Mapping[str, torch.Tensor]],
                blend_weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Σ_i b_i · Â_i per layer, with the blend weights b normalised to sum to one."""
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
