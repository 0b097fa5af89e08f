"""Quality presets and the device they are chosen for; a result's record round trip.  GIMP-free."""

from __future__ import annotations

import dataclasses
import sys
from array import array
from pathlib import Path

import pytest

from daemon.wire.messages import StatusReply
from nst_engine.settings import SETTINGS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"))

from arguments import BY_NAME  # noqa: E402
from pixels import Region, floats, with_mask_in_alpha  # noqa: E402
from presets import DEFAULT_PRESET, PRESETS, DeviceKind, Preset, describe, device_kind, quality  # noqa: E402
from result_record import ResultRecord  # noqa: E402


def status_of(*devices: str) -> StatusReply:
    """A status whose fields are all None but its devices."""
    values = {item.name: None for item in dataclasses.fields(StatusReply)}
    return StatusReply(**{**values, "devices": [{"device": device, "model": "loaded"} for device in devices]})


@pytest.mark.parametrize(("status", "kind"), [
    (status_of("cuda:0", "cuda:1"), DeviceKind.GPU),
    (status_of("cpu"), DeviceKind.CPU),
    (status_of("mps"), DeviceKind.GPU),
    (None, None),
])
def test_the_device_kind_comes_from_the_daemons_status(status, kind):
    assert device_kind(status) is kind


def test_on_a_gpu_the_default_preset_works_at_the_layers_own_size():
    assert quality(DEFAULT_PRESET, DeviceKind.GPU).max_size == 0
    assert "full size" in describe(DeviceKind.GPU)


def test_on_a_cpu_or_an_unknown_device_the_default_preset_is_small():
    cpu = quality(DEFAULT_PRESET, DeviceKind.CPU)
    assert 0 < cpu.max_size <= 384 and cpu.iterations <= 200
    assert quality(DEFAULT_PRESET, None) == cpu
    assert str(cpu.max_size) in describe(DeviceKind.CPU)


def test_custom_sets_nothing_and_every_preset_value_is_valid_for_its_argument():
    assert quality(Preset.CUSTOM, DeviceKind.GPU) is None
    for by_preset in PRESETS.values():
        for values in by_preset.values():
            for name, value in values.arguments().items():
                argument = BY_NAME[name]
                assert argument.minimum <= value <= argument.maximum, name
                if argument.setting:
                    SETTINGS[argument.setting].check(value)


def test_a_results_record_round_trips_and_keeps_the_settings_at_the_top_level():
    record = ResultRecord(7, Region(1, 2, 30, 40), {"seed": 3, "colors": "style"},
                          {"style-layer": 9, "style-region": None}, {"iterations": 5}, {"job_id": "j"})
    text = record.to_json()
    back = ResultRecord.from_json(text)
    assert back is not None and (back.source_tattoo, back.region, back.arguments, back.tattoos, back.settings) == \
        (7, Region(1, 2, 30, 40), record.arguments, record.tattoos, record.settings)
    assert '"iterations": 5' in text and '"job_id": "j"' in text


@pytest.mark.parametrize("text", ['{"iterations": 3}', "not json", '{"version": 2, "region": {}}', "[]"])
def test_a_first_version_or_damaged_record_is_no_record(text):
    assert ResultRecord.from_json(text) is None


def test_a_layer_mask_multiplies_the_style_layers_alpha():
    pixels = array("f", [0.1, 0.2, 0.3, 1.0, 0.4, 0.5, 0.6, 0.5]).tobytes()
    mask = array("f", [0.0, 0.5]).tobytes()
    out = list(floats(with_mask_in_alpha(pixels, mask, 4)))
    assert out[:3] == pytest.approx([0.1, 0.2, 0.3]) and out[3] == 0.0 and out[7] == pytest.approx(0.25)


def test_the_cost_line_says_memory_plan_and_time_or_the_largest_size_that_runs():
    from cost_text import cost_text
    from daemon.wire.messages import EstimateReply

    def reply(memory, available, tiled, tiles, seconds, runnable, largest, width, height):
        return EstimateReply(memory_bytes=memory, available_bytes=available, tiled=tiled, tiles=tiles,
                             lbfgs_history=50, iterations=500, seconds=seconds, runnable=runnable,
                             largest_size=largest, output_width=width, output_height=height)

    whole = reply(300_000_000, 8_000_000_000, False, 1, 40.0, True, 4000, 512, 384)
    assert cost_text(whole) == "512×384, 300.0 MB whole, about 40 s"
    assert cost_text(whole, layers=3).endswith("about 2 min for 3 layers")
    assert cost_text(reply(300_000_000, 8_000_000_000, False, 1, 0.2, True, 4000, 32, 27)).endswith("whole, under 1 s")
    tiled = reply(2_000_000_000, 8_000_000_000, True, 6, None, True, 4000, 3000, 2000)
    assert cost_text(tiled) == "3000×2000, 2.0 GB in 6 tiles, time known after the daemon's first job"
    one_tile = reply(2_000_000_000, 8_000_000_000, True, 1, None, True, 4000, 3000, 2000)  # a shorter L-BFGS history
    assert "2.0 GB in 1 tile," in cost_text(one_tile)
    too_big = reply(9_000_000_000, 1_000_000_000, True, 40, None, False, 1200, 9000, 6000)
    text = cost_text(too_big)
    assert text.startswith("Cannot run") and "1200 px" in text


def test_the_dialog_opens_at_the_default_preset_only_while_the_quality_values_are_untouched():
    from presets import opening_preset

    defaults = {"max-size": 512, "iterations": 500, "scales": 0, "coarse-iterations": 0}
    assert opening_preset(Preset.CUSTOM, dict(defaults), defaults) is DEFAULT_PRESET
    assert opening_preset(Preset.CUSTOM, defaults | {"iterations": 3}, defaults) is Preset.CUSTOM
    assert opening_preset(Preset.FINE, dict(defaults), defaults) is Preset.FINE
