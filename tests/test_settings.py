"""The settings schema: torch-free, one default per setting, and the engine, the wire, the command line
and the docs all taking their rules from it."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.wire.messages import ProtocolError, validate_settings
from nst_engine.cli import build_parser, settings_values
from nst_engine.errors import InvalidSettingsError
from nst_engine.schema import Choice, FrontEnd, Kind, Setting, setting, settings_of
from nst_engine.settings import SETTINGS, Init, Optimizer, StyleSettings, settings_for

from .daemon_harness import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]

TORCH_FREE = ("nst_engine", "nst_engine.settings", "nst_engine.schema", "nst_engine.errors", "nst_engine.layers",
              "nst_engine.geometry", "daemon.wire.framing", "daemon.wire.messages", "daemon.client.zeromq",
              "daemon.client.contract", "daemon.client.bridge", "daemon.wire.connection", "arguments", "pixels",
              "progress_text")


def torch_modules_after_importing(modules: tuple[str, ...]) -> list[str]:
    """The torch modules loaded by a fresh interpreter that imports ``modules`` (the plug-in's folder on its path)."""
    code = (f"import sys; sys.path.insert(0, 'gimp_plugin'); import {', '.join(modules)}; "
            "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'torch'))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    return json.loads(completed.stdout.replace("'", '"'))


def test_the_schema_the_client_and_the_plugin_import_without_torch():
    assert torch_modules_after_importing(TORCH_FREE) == []


def test_the_import_check_sees_torch():
    """The check above could fail: importing the engine proper loads torch."""
    assert "torch" in torch_modules_after_importing(("nst_engine.tiling",))


def test_the_package_loads_its_engine_names_on_first_use():
    import nst_engine

    assert nst_engine.StyleTransfer.__module__ == "nst_engine.transfer"
    assert nst_engine.Pooling is SETTINGS["pooling"].choice_type
    assert set(nst_engine.__all__) <= set(dir(nst_engine))
    with pytest.raises(AttributeError):
        nst_engine.NoSuchThing  # noqa: B018


# ---------------------------------------------------------------------------------------------------
# One default per setting
# ---------------------------------------------------------------------------------------------------
def test_the_command_line_defaults_are_the_schemas():
    values = settings_values(build_parser().parse_args([]))
    assert values == {item.name: item.plain_default() for item in settings_for(FrontEnd.CLI)}
    assert StyleSettings.from_values(values) == StyleSettings()


def test_the_wire_defaults_are_the_schemas():
    plain = {item.name: item.plain_default() for item in settings_for(FrontEnd.WIRE)}
    assert StyleSettings.from_values(validate_settings(plain)) == StyleSettings()


def test_settled_values():
    """The values issue #13 settled between front ends that disagreed (docs say why)."""
    defaults = StyleSettings()
    assert defaults.iterations == 500
    assert SETTINGS["style_weight"].spec.maximum == SETTINGS["content_weight"].spec.maximum == 1e12
    assert (SETTINGS["style_scale"].spec.minimum, SETTINGS["style_scale"].spec.maximum) == (0.01, 100.0)
    assert (SETTINGS["seed"].spec.minimum, SETTINGS["seed"].spec.maximum) == (0, 2**31 - 1)
    for bad in (17, 48, 16400):
        with pytest.raises(ProtocolError, match="settings.tile_size must be 0"):
            validate_settings({"tile_size": bad})


# ---------------------------------------------------------------------------------------------------
# The engine and the wire accept and refuse the same values, naming the field
# ---------------------------------------------------------------------------------------------------
_BLEND_STYLES = 2  # style images in the engine's validation below


def _list_length(item: Setting) -> int:
    per_layer = ("style_layer_weights", "style_layer_sources")
    return len(StyleSettings().style_layers) if item.name in per_layer else _BLEND_STYLES


def probes(item: Setting) -> list[Any]:
    """Values on and just past each limit of ``item``, and values of the wrong type."""
    spec = item.spec
    if item.kind is Kind.NUMBER:
        low, high = item.bounds
        return [low, high, (low + high) / 2, low - max(1e-9, abs(low) * 0.01), high * 1.01, int(high),
                10**400, math.nan, math.inf, True, "1"]
    if item.kind is Kind.INTEGER:
        low, high = map(int, item.bounds)
        step = spec.multiple_of or 1
        return [0, low, high, low - 1, high + step, low + 1, high - step, -1, 2.0, True, None]
    if item.kind is Kind.CHOICE:
        return [*item.choice_values, "nope", 1, None]
    if item.kind is Kind.FLAG:
        return [True, False, 1, 0, None, "true"]
    if item.kind is Kind.NUMBERS:
        length = _list_length(item)
        return [None, [1.0] * length, [1] * length, [0.0] * length, [-1.0] + [1.0] * (length - 1),
                [math.nan] * length, [1.0] * 65, [], 1.0, [True] * length]
    if item.kind is Kind.INTEGERS:
        length = _list_length(item)
        low, high = map(int, item.bounds)
        return [None, [low] * length, [_BLEND_STYLES] + [low] * (length - 1), [low - 1] * length,
                [high + 1] * length, [1.0] * length, [True] * length, [], 1, [low] * 65]
    raise AssertionError(f"no probes for {item.kind}")


CASES = [(item.name, value) for item in settings_for(FrontEnd.WIRE) for value in probes(item)]


@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{name}={value!r}" for name, value in CASES])
def test_the_engine_and_the_wire_agree(name, value):
    try:
        validate_settings({name: value})
        wire_error = None
    except ProtocolError as error:
        wire_error = str(error)
    try:
        StyleSettings(**{name: value}).validate(_BLEND_STYLES)
        engine_error = None
    except InvalidSettingsError as error:
        engine_error = str(error)
    assert (wire_error is None) == (engine_error is None), (wire_error, engine_error)
    if wire_error is not None:
        assert wire_error.startswith(f"settings.{name} must be ") and engine_error.startswith(f"{name} must be ")
        assert wire_error == f"settings.{engine_error}"


def test_settings_not_offered_on_the_wire_are_unknown_there():
    with pytest.raises(ProtocolError, match="settings.content_layer is not a known setting"):
        validate_settings({"content_layer": "relu4_2"})
    with pytest.raises(InvalidSettingsError, match="colour is not a known setting"):
        StyleSettings.from_values({"colour": "blue"})


def test_plain_values_become_typed_and_bad_ones_are_left_for_validate():
    settings = StyleSettings(optimizer="adam", init="noise", style_blend_weights=[1, 2], content_weight=2,
                             style_layers=["relu1_1"])
    assert settings.optimizer is Optimizer.ADAM and settings.init is Init.NOISE
    assert settings.style_blend_weights == (1.0, 2.0) and settings.style_layers == ("relu1_1",)
    assert isinstance(settings.content_weight, float)
    bad = StyleSettings(optimizer="sgd")
    with pytest.raises(InvalidSettingsError, match="optimizer must be one of lbfgs, adam, got 'sgd'"):
        bad.validate(1)


def test_cross_field_counts_are_checked_by_the_engine():
    with pytest.raises(InvalidSettingsError, match="style_layer_weights needs one value per style layer: 5, got 2"):
        StyleSettings(style_layer_weights=(1.0, 2.0)).validate(1)
    with pytest.raises(InvalidSettingsError, match="style_blend_weights needs one value per style image: 1, got 2"):
        StyleSettings(style_blend_weights=(1.0, 2.0)).validate(1)


# ---------------------------------------------------------------------------------------------------
# Declaring settings
# ---------------------------------------------------------------------------------------------------
class Colour(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


def test_every_field_must_be_declared_with_a_supported_type_and_a_valid_default():
    @dataclasses.dataclass
    class Undeclared:
        plain: int = 1

    @dataclasses.dataclass
    class Unsupported:
        when: complex = setting(1j, "a complex number")

    @dataclasses.dataclass
    class WrongChoices:
        colour: Colour = setting(Colour.RED, "a colour", choices=(Choice("red", "Red", "red"),))

    @dataclasses.dataclass
    class Unbounded:
        count: int = setting(1, "a count")

    @dataclasses.dataclass
    class BadDefault:
        count: int = setting(0, "a count", minimum=1, maximum=9)

    for declared, error in ((Undeclared, TypeError), (Unsupported, TypeError), (WrongChoices, TypeError),
                            (Unbounded, TypeError), (BadDefault, InvalidSettingsError)):
        with pytest.raises(error):
            settings_of(declared)


def test_every_setting_has_help_and_choices_have_labels():
    for item in SETTINGS.values():
        assert item.spec.help and not item.spec.help.endswith(".")
        assert all(choice.label and choice.help for choice in item.spec.choices)
        assert (item.kind in (Kind.NUMBERS, Kind.INTEGERS)) == (item.spec.none_means is not None)


# ---------------------------------------------------------------------------------------------------
# The docs' tables
# ---------------------------------------------------------------------------------------------------
def test_the_docs_tables_are_made_from_the_schema(capsys):
    tables = load_script("docs/settings_tables.py")
    assert tables.main(["--check"]) == 0, capsys.readouterr().err
    for path, make_table in tables.TABLES.items():
        text = path.read_text(encoding="utf-8")
        assert tables.with_table(text, make_table(), path) == text
        # what the check compares: a table naming every setting of its front end, in the document
        front_end = FrontEnd.CLI if path.name == "README.md" else FrontEnd.WIRE
        assert all(f"`{item.name}`" in text or f"`{item.option}" in text for item in settings_for(front_end))


def test_the_docs_check_fails_when_a_table_drifts(tmp_path, monkeypatch):
    tables = load_script("docs/settings_tables.py")
    readme = REPO_ROOT / "README.md"
    drifted = tmp_path / "README.md"
    drifted.write_text(readme.read_text(encoding="utf-8").replace("| 500 |", "| 300 |"), encoding="utf-8")
    monkeypatch.setattr(tables, "TABLES", {drifted: tables.TABLES[readme]})
    monkeypatch.setattr(tables, "REPO_ROOT", tmp_path)
    assert tables.main(["--check"]) == 1
    assert tables.main([]) == 0 and tables.main(["--check"]) == 0
    assert drifted.read_text(encoding="utf-8") == readme.read_text(encoding="utf-8")


@pytest.mark.parametrize(("strength", "factor"), [(50.0, 1.0), (60.0, 2.0), (40.0, 0.5), (0.0, 2**-5), (100.0, 2**5)])
def test_strength_doubles_the_style_weight_every_ten_points(strength, factor):
    assert StyleSettings(style_weight=300.0, strength=strength).effective_style_weight == pytest.approx(300.0 * factor)


def test_a_memory_budget_of_0_leaves_what_is_available():
    assert StyleSettings().memory_budget(12345) == 12345
    assert StyleSettings(memory_budget_mib=64).memory_budget(2**40) == 64 * 2**20
    assert StyleSettings(memory_budget_mib=64).memory_budget(1000) == 1000
    with pytest.raises(InvalidSettingsError, match="memory_budget_mib must be 0"):
        StyleSettings.from_values({"memory_budget_mib": 10})
