"""The feature extractor: layer names, cut-off, pooling."""

import pytest
import torch
import torchvision

from nst_engine import InvalidSettingsError, Pooling
from nst_engine.layers import LAYER_NAMES, VGG19_CONVS, layer_channels, validate_layer_names


def test_layer_names_follow_torchvision_indices():
    by_name = {spec.conv_name: spec.features_index for spec in VGG19_CONVS}
    assert by_name["conv1_1"] == 0 and by_name["conv4_2"] == 21 and by_name["conv5_4"] == 34
    features = torchvision.models.vgg19().features
    assert all(isinstance(features[spec.features_index], torch.nn.Conv2d) for spec in VGG19_CONVS)
    assert len(LAYER_NAMES) == 32 and layer_channels("relu3_1") == 256


def test_unknown_layer_is_named_in_the_error():
    with pytest.raises(InvalidSettingsError, match="relu6_1"):
        validate_layer_names(["relu1_1", "relu6_1"], "style_layers")


def test_features_match_torchvision_at_named_layers(engine):
    reference = torchvision.models.vgg19().features
    reference.load_state_dict(dict(_features_state(engine)))
    image = torch.rand(1, 3, 32, 32)
    normalised = (image - engine.model.mean) / engine.model.std
    expected = reference[:23](normalised)  # through relu4_2 (index 22)
    ours = engine.model(image, ["relu4_2", "conv1_1"])
    assert set(ours) == {"relu4_2", "conv1_1"}
    assert torch.allclose(ours["relu4_2"], expected, atol=1e-4, rtol=1e-4)
    assert torch.allclose(ours["conv1_1"], reference[0](normalised), atol=1e-5)
    assert (ours["conv1_1"] < 0).any(), "conv outputs are taken before the ReLU"


def test_forward_stops_after_the_deepest_requested_layer(engine):
    calls = []
    hooks = [conv.register_forward_hook(lambda *_: calls.append(1)) for conv in engine.model.convs]
    try:
        engine.model(torch.rand(1, 3, 16, 16), ["relu2_1"])
    finally:
        for hook in hooks:
            hook.remove()
    assert len(calls) == 3  # conv1_1, conv1_2, conv2_1


def test_average_pooling_changes_deeper_features_only(engine):
    image = torch.rand(1, 3, 32, 32)
    max_pooled = engine.model(image, ["relu1_2", "relu2_1"], Pooling.MAX)
    avg_pooled = engine.model(image, ["relu1_2", "relu2_1"], Pooling.AVERAGE)
    assert torch.equal(max_pooled["relu1_2"], avg_pooled["relu1_2"])
    assert not torch.allclose(max_pooled["relu2_1"], avg_pooled["relu2_1"])


def _features_state(engine):
    state = {}
    for spec, conv in zip(VGG19_CONVS, engine.model.convs):
        state[f"{spec.features_index}.weight"] = conv.weight
        state[f"{spec.features_index}.bias"] = conv.bias
    return state
