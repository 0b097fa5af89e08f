"""The plug-in procedure's arguments come from the settings schema; the plug-in's own keep their places."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from daemon.protocol import validate_settings
from nst_engine.schema import FrontEnd
from nst_engine.settings import SETTINGS, StyleSettings, settings_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"))

from arguments import ARGUMENTS, ArgumentKind, settings_from_arguments  # noqa: E402

BY_NAME = {argument.name: argument for argument in ARGUMENTS}


def test_the_arguments_keep_their_names_and_positions():
    """Scripts call the procedure with these names, and Script-Fu by position."""
    assert [argument.name for argument in ARGUMENTS] == [
        "style-layer", "style-weight", "content-weight", "iterations", "max-size", "optimizer", "colors",
        "seed", "live-preview"]


def test_every_setting_offered_in_gimp_is_an_argument_with_the_schemas_rules():
    offered = settings_for(FrontEnd.GIMP)
    assert {argument.setting for argument in ARGUMENTS if argument.setting} == {item.name for item in offered}
    for item in offered:
        argument = BY_NAME[item.argument]
        assert argument.setting == item.name and argument.label == item.spec.label
        assert argument.default == item.plain_default()
        if argument.kind in (ArgumentKind.INT, ArgumentKind.DOUBLE):
            assert (argument.minimum, argument.maximum) == (item.spec.minimum, item.spec.maximum)
        if argument.kind is ArgumentKind.CHOICE:
            assert [choice.value for choice in argument.choices] == list(item.choice_values)


def test_the_defaults_are_the_engines():
    defaults = {BY_NAME[item.argument].setting: BY_NAME[item.argument].default for item in settings_for(FrontEnd.GIMP)}
    assert StyleSettings.from_values(defaults) == StyleSettings()
    assert BY_NAME["iterations"].default == StyleSettings().iterations == 500
    assert BY_NAME["max-size"].default == StyleSettings().size
    assert BY_NAME["max-size"].maximum == SETTINGS["size"].spec.maximum


def test_access_keys_are_unique():
    keys = [argument.label[argument.label.index("_") + 1].lower() for argument in ARGUMENTS]
    assert len(keys) == len(set(keys)), keys


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
    assert set(settings) == {item.name for item in settings_for(FrontEnd.GIMP)} | {"size"}
