"""The plug-in procedure's arguments come from the settings schema; the plug-in's own keep their places."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from daemon.wire.messages import validate_settings
from nst_engine.schema import FrontEnd
from nst_engine.settings import SETTINGS, StyleSettings, settings_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"))

from arguments import ARGUMENTS, DIALOG_BUTTON_KEYS, ArgumentKind, settings_from_arguments  # noqa: E402

BY_NAME = {argument.name: argument for argument in ARGUMENTS}


def test_the_arguments_keep_their_names_and_positions():
    """Scripts call the procedure with these names, and Script-Fu by position."""
    assert [argument.name for argument in ARGUMENTS][:9] == [
        "style-layer", "style-weight", "content-weight", "iterations", "max-size", "optimizer", "colors",
        "seed", "live-preview"]


def test_every_setting_offered_in_gimp_is_an_argument_with_the_schemas_rules():
    offered = settings_for(FrontEnd.GIMP)
    given = {argument.setting for argument in ARGUMENTS if argument.setting}
    assert given >= {item.name for item in offered}
    for name in given:
        item = SETTINGS[name]
        argument = BY_NAME[item.argument]
        assert argument.setting == item.name
        if item.spec.label:
            assert argument.label.replace("_", "") == item.spec.label.replace("_", "")
        assert argument.default == item.plain_default()
        assert argument.help.lower().startswith(item.spec.help[:20].lower())
        if argument.kind in (ArgumentKind.INT, ArgumentKind.DOUBLE):
            low = 0 if item.spec.zero_means else item.spec.minimum
            assert (argument.minimum, argument.maximum) == (low, item.spec.maximum)
        if argument.kind is ArgumentKind.CHOICE:
            assert {choice.value for choice in argument.choices} <= set(item.choice_values)


def test_the_dialogs_new_controls_are_the_schemas_settings_in_kebab_case():
    for name in ("style-scale", "tv-weight", "init", "scales", "coarse-iterations", "precision"):
        assert BY_NAME[name].setting == name.replace("-", "_")
    assert "image" not in [choice.value for choice in BY_NAME["init"].choices], "the plug-in passes no init image"


def test_the_defaults_are_the_engines():
    defaults = {argument.setting: argument.default for argument in ARGUMENTS if argument.setting}
    assert StyleSettings.from_values(defaults) == StyleSettings()
    assert BY_NAME["iterations"].default == StyleSettings().iterations == 500
    assert BY_NAME["max-size"].default == StyleSettings().size
    assert BY_NAME["max-size"].maximum == SETTINGS["size"].spec.maximum


def test_access_keys_are_unique():
    assert all("_" in argument.label for argument in ARGUMENTS), "GIMP warns of a property without an access key"
    keys = [argument.label[argument.label.index("_") + 1].lower() for argument in ARGUMENTS]
    assert len(keys) == len(set(keys)), keys
    # GimpProcedureDialog's own buttons Load Saved Settings (l), Save Settings (s), Reset (r), Cancel (c)
    # and OK (o), which the schema's and the plug-in's labels once clashed with
    assert not set(DIALOG_BUTTON_KEYS) & set(keys)


@pytest.mark.parametrize(("width", "height", "max_size", "size"),
                         [(1000, 500, 512, 512), (500, 1000, 512, 512), (100, 50, 512, 100), (100, 50, 0, 100)])
def test_max_size_never_enlarges(width, height, max_size, size):
    values = {argument.name: argument.default for argument in ARGUMENTS} | {"max-size": max_size}
    settings = settings_from_arguments(values.__getitem__, width, height)
    assert settings["size"] == size


def test_the_settings_sent_are_valid_on_the_wire():
    values = {argument.name: argument.default for argument in ARGUMENTS}
    settings = settings_from_arguments(values.__getitem__, 300, 200)
    assert validate_settings(settings) == settings
    assert set(settings) == {argument.setting for argument in ARGUMENTS if argument.setting} | {"size"}


def test_several_style_layers_send_their_blend_weights():
    values = {argument.name: argument.default for argument in ARGUMENTS} | {"style-blend-weight-2": 3.0}
    settings = settings_from_arguments(values.__getitem__, 300, 200, style_count=2)
    assert settings["style_blend_weights"] == [1.0, 3.0]
    assert validate_settings(settings) == settings
    with pytest.raises(ValueError, match="blend weights"):
        settings_from_arguments((values | {"style-blend-weight": 0.0, "style-blend-weight-2": 0.0}).__getitem__,
                                300, 200, style_count=2)
