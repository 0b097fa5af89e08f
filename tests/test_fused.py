"""The CPU's fused VGG passes (nst_engine.fused) and the content loss's hand-written backward give the
plain path's values bit for bit."""

import pytest
import torch

from nst_engine import Pooling, fused
from nst_engine.losses import content_loss

DEFAULT_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]
# relu1_2 and relu3_4 feed a pooling: their own gradients join the one coming up through it.
POOLED_LAYERS = ["relu1_2", "relu2_1", "relu3_4", "relu4_1"]


def _features_and_gradient(model, image: torch.Tensor, layers, pooling: Pooling):
    image = image.clone().requires_grad_(True)
    features = model(image, layers, pooling)
    # Weighted so that a gradient sent to the wrong layer shows.
    loss = sum((index + 1) * feature.float().square().sum() for index, feature in enumerate(features.values()))
    loss.backward()
    return features, image.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pooling", [Pooling.MAX, Pooling.AVERAGE])
@pytest.mark.parametrize("layers", [DEFAULT_LAYERS, POOLED_LAYERS])
def test_fused_passes_equal_the_plain_path_bit_for_bit(engine, monkeypatch, dtype, pooling, layers):
    model = engine.model.converted(dtype)
    image = torch.rand(1, 3, 72, 56, generator=torch.Generator().manual_seed(3))  # odd sizes below
    fused_features, fused_grad = _features_and_gradient(model, image, layers, pooling)
    monkeypatch.setattr(fused, "usable", lambda *_: False)
    plain_features, plain_grad = _features_and_gradient(model, image, layers, pooling)
    assert list(fused_features) == sorted(layers) == list(plain_features)
    for layer in layers:
        assert torch.equal(fused_features[layer], plain_features[layer]), layer
    assert torch.equal(fused_grad, plain_grad)


def test_the_fused_path_is_taken_for_float32_on_the_cpu(engine):
    # Not vacuous on any CPU: float32 needs no native bf16.
    weight = engine.model.convs[0].weight
    assert fused.usable(torch.rand(1, 3, 8, 8), weight, DEFAULT_LAYERS)
    assert not fused.usable(torch.rand(1, 3, 8, 8), weight, ["conv1_1", "relu2_1"])
    assert fused.plan_for(["relu2_1", "relu1_1"], Pooling.MAX).count == 3  # stops after conv2_1


def _autograd_content_loss(features, target, count):
    squared = (features.float() - target.float()).square()
    return 0.5 * (squared.mean() if count is None else squared.sum() / count)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("count", [None, 123_457])
def test_content_loss_backward_equals_autograd_bit_for_bit(dtype, count):
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(1, 32, 9, 11, generator=generator).to(dtype).contiguous(memory_format=torch.channels_last)
    target = torch.randn(1, 32, 9, 11, generator=generator)
    results = []
    for loss_function in (content_loss, _autograd_content_loss):
        leaf = features.clone().requires_grad_(True)
        loss = 3.7 * loss_function(leaf, target, count)
        loss.backward()
        results.append((loss.detach(), leaf.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1].dtype == dtype and torch.equal(results[0][1], results[1][1])
