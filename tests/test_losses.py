"""Loss maths against values computed by hand, guided (masked) Gram matrices included."""

import pytest
import torch

from nst_engine.losses import (
    StyleTerm,
    blend_grams,
    box_penalty,
    content_loss,
    guided_gram_sum,
    mean_gram,
    style_layer_loss,
    style_loss,
    total_variation_loss,
)
from nst_engine.settings import StyleSettings

# Two feature maps (N = 2) over two positions (M = 2): F = [[1, 2], [3, 4]].
FEATURES = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])


def test_gram_matrix_is_f_f_transpose_and_its_mean_per_position():
    assert torch.equal(guided_gram_sum(FEATURES), torch.tensor([[5.0, 11.0], [11.0, 25.0]]))
    assert torch.equal(mean_gram(FEATURES), torch.tensor([[2.5, 5.5], [5.5, 12.5]]))


def test_style_layer_loss_uses_the_papers_normalisation():
    # Σ(G − 0)² = 25 + 121 + 121 + 625 = 892;  1/(4·N²·M²) = 1/(4·4·4) = 1/64.
    assert style_layer_loss(FEATURES, torch.zeros(2, 2)).item() == pytest.approx(892 / 64)


def test_style_layer_loss_is_zero_at_the_target():
    assert style_layer_loss(FEATURES, mean_gram(FEATURES)).item() == 0.0


def test_style_loss_weights_layers_and_terms():
    features = {"a": FEATURES, "b": 2 * FEATURES}
    targets = {"a": torch.zeros(2, 2), "b": torch.zeros(2, 2)}
    # Doubling F multiplies G by 4 and E by 16.
    expected = 0.25 * 892 / 64 + 0.75 * 16 * 892 / 64
    assert style_loss(features, [StyleTerm(targets)], {"a": 0.25, "b": 0.75}).item() == pytest.approx(expected)
    two_terms = [StyleTerm(targets, 0.5), StyleTerm(targets, 2.0)]
    assert style_loss(features, two_terms, {"a": 0.25, "b": 0.75}).item() == pytest.approx(2.5 * expected)


def test_content_loss_is_half_the_mean_squared_error():
    target = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])
    # differences 0, 2, 3, 2 → squares 0, 4, 9, 4 → mean 4.25 → ½ · 4.25
    assert content_loss(FEATURES, target).item() == pytest.approx(2.125)


def test_total_variation_of_a_ramp():
    image = torch.arange(4.0).repeat(1, 1, 3, 1)  # rows 0 1 2 3: horizontal steps of 1, vertical 0
    assert total_variation_loss(image).item() == pytest.approx(1.0)


def test_blend_weights_one_zero_equal_the_single_style():
    first = {"relu1_1": torch.rand(4, 4)}
    second = {"relu1_1": torch.rand(4, 4)}
    assert torch.equal(blend_grams([first, second], (1.0, 0.0))["relu1_1"], first["relu1_1"])


def test_blend_weights_are_normalised():
    first = {"l": torch.full((2, 2), 2.0)}
    second = {"l": torch.full((2, 2), 6.0)}
    assert torch.allclose(blend_grams([first, second], (1.0, 3.0))["l"], torch.full((2, 2), 5.0))


def test_box_penalty_is_zero_inside_and_quadratic_outside():
    assert box_penalty(torch.tensor([0.0, 0.5, 1.0])).item() == 0.0
    assert box_penalty(torch.tensor([-0.5, 1.25])).item() == pytest.approx(0.25 + 0.0625)


def test_default_layer_weights_are_equal_and_sum_to_one():
    weights = StyleSettings().layer_weights()
    assert list(weights) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert all(w == pytest.approx(0.2) for w in weights.values())


def test_explicit_layer_weights_are_used_as_given():
    settings = StyleSettings(style_layer_weights=(1.0, 0.0, 0.0, 0.0, 3.0))
    assert settings.layer_weights()["relu5_1"] == 3.0


@pytest.mark.parametrize("channels_last", [False, True])
def test_style_layer_loss_gradient_matches_autograd_of_the_formula(channels_last):
    features = torch.rand(1, 4, 5, 6, dtype=torch.float64)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    features.requires_grad_(True)
    target = torch.rand(4, 4, dtype=torch.float64)
    target = target + target.T
    loss = style_layer_loss(features, target)
    (ours,) = torch.autograd.grad(loss, features)
    reference_features = features.detach().clone().requires_grad_(True)
    matrix = reference_features.reshape(4, 30)
    reference = ((matrix @ matrix.T / 30 - target).square().sum() / (4 * 16))
    (expected,) = torch.autograd.grad(reference, reference_features)
    assert loss.item() == pytest.approx(reference.item())
    assert torch.allclose(ours, expected)


def test_gram_matrix_is_the_same_in_both_memory_formats():
    features = torch.rand(1, 8, 5, 7)
    guide = torch.rand(1, 1, 5, 7)
    for g in (None, guide):
        assert torch.allclose(mean_gram(features, g),
                              mean_gram(features.contiguous(memory_format=torch.channels_last), g))


# -- guided Gram matrices (Gatys et al. 2017, spatial control) ------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
def test_an_all_ones_guide_is_exactly_no_guide(channels_last):
    features = torch.rand(1, 6, 5, 7)
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    target = mean_gram(torch.rand(1, 6, 4, 4))
    results = []
    for guide in (None, torch.ones(1, 1, 5, 7)):
        leaf = features.clone().requires_grad_(True)
        loss = style_layer_loss(leaf, target, guide)
        (grad,) = torch.autograd.grad(loss, leaf)
        results.append((loss, grad))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_a_binary_guide_sees_only_its_region_whatever_its_area():
    features = torch.rand(1, 4, 6, 8, requires_grad=True)
    guide = torch.zeros(1, 1, 6, 8)
    guide[..., :, :3] = 1.0
    target = mean_gram(torch.rand(1, 4, 3, 3))
    guided = style_layer_loss(features, target, guide)
    cropped = style_layer_loss(features[..., :, :3], target)
    assert guided.item() == pytest.approx(cropped.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(guided, features)
    assert (grad[..., :, 3:] == 0).all() and (grad[..., :, :3] != 0).any()
    # The same texture repeated over twice the area has the same per-position Gram matrix.
    tile = torch.rand(1, 4, 3, 3)
    assert torch.allclose(mean_gram(tile), mean_gram(torch.cat([tile, tile], dim=-1)))


def test_a_soft_guide_weights_positions_by_its_square():
    features = torch.rand(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    guide = torch.rand(1, 1, 4, 5, dtype=torch.float64)
    target = torch.rand(3, 3, dtype=torch.float64)
    target = target + target.T
    loss = style_layer_loss(features, target, guide)
    (ours,) = torch.autograd.grad(loss, features)
    reference_features = features.detach().clone().requires_grad_(True)
    weighted = (reference_features * guide).reshape(3, 20)
    reference = ((weighted @ weighted.T / guide.square().sum() - target).square().sum() / (4 * 9))
    (expected,) = torch.autograd.grad(reference, reference_features)
    assert loss.item() == pytest.approx(reference.item())
    assert torch.allclose(ours, expected.float() if ours.dtype == torch.float32 else expected, atol=1e-6)


def test_a_region_empty_at_a_layer_adds_nothing():
    features = torch.rand(1, 3, 4, 4, requires_grad=True)
    assert style_layer_loss(features, torch.zeros(3, 3), torch.zeros(1, 1, 4, 4)).item() == 0.0
