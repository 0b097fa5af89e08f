"""The ``estimate`` request (#14 item 4): memory by the engine's model, whole or tiled, seconds from the
daemon's measured speed, whether a job can run and the largest size that can."""

from __future__ import annotations

import pytest

from daemon.client.contract import DaemonJobError
from daemon.wire.messages import EstimateReply
from nst_engine.memory import BF16_EMULATED, MODEL_BYTES, estimate_bytes
from nst_engine.settings import Optimizer, Precision, StyleSettings

from .daemon_harness import TINY_SETTINGS, load_script, rgb_image, start_daemon

BUDGET = 2**30


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("estimate-daemon"), weights_file, "--memory-budget", str(BUDGET))
    yield running
    running.stop()


def test_seconds_come_from_the_jobs_the_daemon_has_run(client):
    before = client.estimate(TINY_SETTINGS, 48, 40, style_sizes=[(40, 40)])
    assert isinstance(before, EstimateReply) and before.seconds is None  # nothing measured yet
    assert client.status().seconds_per_megapixel_iteration is None
    assert (before.output_width, before.output_height) == (32, 27) and before.iterations == 3
    assert before.runnable and not before.tiled and before.tiles == 1 and before.available_bytes == BUDGET
    client.stylize(rgb_image(40, 48, seed=1), [rgb_image(40, 40, seed=2)], {**TINY_SETTINGS, "iterations": 6})
    rate = client.status().seconds_per_megapixel_iteration
    assert rate is not None and rate > 0
    after = client.estimate(TINY_SETTINGS, 48, 40, style_sizes=[(40, 40)])
    assert after.seconds is not None and after.seconds > 0
    # Four times the pixels, twice the iterations: about eight times the time (style passes aside).
    larger = client.estimate({**TINY_SETTINGS, "size": 64, "iterations": 6}, 48, 40)
    assert 6 < larger.seconds / client.estimate(TINY_SETTINGS, 48, 40).seconds < 10


def test_a_job_too_large_for_the_budget_says_so_with_the_largest_size_that_runs(client):
    settings = {"size": 16384, "scales": 1, "optimizer": "adam"}
    refused = client.estimate(settings, 2000, 1000)
    assert not refused.runnable and refused.memory_bytes > BUDGET
    assert 256 < refused.largest_size < 16384
    fits = client.estimate({**settings, "size": refused.largest_size}, 2000, 1000)
    assert fits.runnable and fits.tiled and fits.tiles > 1 and fits.memory_bytes <= BUDGET
    whole = client.estimate({**settings, "size": 256}, 2000, 1000)
    assert whole.runnable and not whole.tiled and whole.tiles == 1


def test_bad_settings_are_an_invalid_request(client):
    with pytest.raises(DaemonJobError, match="settings.iterations") as raised:
        client.estimate({"iterations": 0}, 64, 64)
    assert raised.value.code == "invalid_request"
    with pytest.raises(DaemonJobError, match="style_blend_weights needs one value per style image"):
        client.estimate({"style_blend_weights": [1, 2]}, 64, 64, style_sizes=[(64, 64)])


@pytest.mark.parametrize("size", [192, 320])
@pytest.mark.parametrize("precision", [Precision.FP32, Precision.BF16])
def test_the_memory_figure_is_within_25_percent_of_the_measured_peak(client, size, precision):
    """The peak resident set of a real one-stage run (benchmarks/memory_use.py's measurement: a fresh
    process, peak restarted once the model is loaded), plus the model the estimate counts; bf16 as this
    CPU runs it, natively or emulated, which the daemon's estimate knows."""
    settings = {"size": size, "scales": 1, "optimizer": "adam", "iterations": 2, "precision": precision.value}
    reply = client.estimate(settings, size, size)
    measured = load_script("benchmarks/memory_use.py").measure("random", "cpu", size, Optimizer.ADAM, 2, precision)
    measured += MODEL_BYTES
    assert abs(reply.memory_bytes - measured) <= 0.25 * measured, (reply.memory_bytes / 2**20, measured / 2**20)


@pytest.mark.parametrize("size", [192, 320])
def test_the_memory_figure_of_emulated_bf16_is_within_25_percent_of_the_measured_peak(size):
    """bf16 on a CPU without native bf16, on any CPU: oneDNN held below its bf16 instructions."""
    measured = load_script("benchmarks/memory_use.py").measure("random", "cpu", size, Optimizer.ADAM, 2,
                                                                Precision.BF16, {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    measured += MODEL_BYTES
    settings = StyleSettings(optimizer=Optimizer.ADAM)
    estimate = estimate_bytes(size, size, settings.layers, settings.style_layers, Optimizer.ADAM, BF16_EMULATED)
    assert abs(estimate - measured) <= 0.25 * measured, (estimate / 2**20, measured / 2**20)


def _observe_stage(speed, job_id: str, side: int, seconds_per_iteration: float, iterations: int = 6) -> None:
    """Progress reports of a one-stage job at side × side that takes ``seconds_per_iteration`` each."""
    from nst_engine.progress import LossTerms, Progress

    for number in range(1, iterations + 1):
        speed.observe(job_id, Progress(stage=1, stages=1, width=side, height=side, stage_iteration=number,
                                       stage_iterations=iterations, iteration=number, total_iterations=iterations,
                                       losses=LossTerms(0.0, 0.0, 0.0, 0.0), elapsed_s=number * seconds_per_iteration))


def test_the_speed_fit_separates_fixed_costs_from_the_cost_per_pixel():
    """Jobs of two sizes whose iterations take 0.05 s plus 2 s per megapixel: a 1-megapixel iteration is
    predicted at 2.05 s.  A ratio through zero, as the daemon used before, predicts 3.5 s from them."""
    from daemon.server.estimates import EvaluationSpeed

    speed = EvaluationSpeed()
    assert speed.model() is None
    for number, side in enumerate((100, 200, 100, 200)):
        _observe_stage(speed, f"job-{number}", side, 0.05 + 2.0 * side * side / 1e6)
    model = speed.model()
    assert model is not None
    assert model.seconds_per_iteration == pytest.approx(0.05, rel=1e-6)
    assert model.seconds_per_megapixel == pytest.approx(2.0, rel=1e-6)
    assert model.seconds(1, 1.0) == pytest.approx(2.05, rel=1e-6)


def test_with_jobs_of_one_size_the_speed_is_a_ratio_through_zero():
    from daemon.server.estimates import EvaluationSpeed

    speed = EvaluationSpeed()
    _observe_stage(speed, "only", 100, 0.03)
    model = speed.model()
    assert model is not None and model.seconds_per_iteration == 0.0
    assert model.seconds_per_megapixel == pytest.approx(0.03 / 0.01, rel=1e-6)


def test_a_jobs_own_memory_budget_caps_what_the_estimate_offers(client):
    settings = {"size": 512, "scales": 1, "optimizer": "adam"}
    whole = client.estimate(settings, 512, 512)
    assert whole.available_bytes == BUDGET and whole.runnable and not whole.tiled
    capped = client.estimate({**settings, "memory_budget_mib": 256}, 512, 512)
    assert capped.available_bytes == 256 * 2**20
    assert capped.tiled and capped.memory_bytes <= 256 * 2**20
    above = client.estimate({**settings, "memory_budget_mib": 4096}, 512, 512)
    assert above.available_bytes == BUDGET, "the daemon's own budget still applies"


def test_a_larger_style_scale_raises_the_memory_figure_once_the_style_pass_is_the_peak(client):
    """At style scale 4 the style image's VGG pass (16 times the stage's pixels) outweighs the stage; and
    style scale matters for the time through the style passes."""
    client.stylize(rgb_image(40, 48, seed=1), [rgb_image(40, 40, seed=2)], TINY_SETTINGS)  # for the seconds
    settings = {"size": 96, "scales": 1, "iterations": 3}
    plain = client.estimate(settings, 96, 96, style_sizes=[(96, 96)])
    scaled = client.estimate({**settings, "style_scale": 4.0}, 96, 96, style_sizes=[(96, 96)])
    assert scaled.memory_bytes > 1.3 * plain.memory_bytes
    assert not scaled.tiled and scaled.runnable
    assert scaled.seconds > plain.seconds


def test_the_dialogs_cost_line_follows_the_style_scale(client):
    """The plug-in's cost line (gimp_plugin/cost_text.estimate_line, which the dialog calls whenever a
    value it depends on changes) from the procedure's defaults, against this daemon."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin"))
    from arguments import BY_NAME
    from cost_text import estimate_line

    values = {name: argument.default for name, argument in BY_NAME.items()}
    values.update({"max-size": 96, "iterations": 3, "scales": 1})

    def line(style_scale: float) -> str:
        return estimate_line(client, {**values, "style-scale": style_scale}.get, 96, 96, [(96, 96)])

    assert line(1.0).startswith("96×96, ") and "whole" in line(1.0)
    assert line(4.0) != line(1.0)
    assert estimate_line(client, {**values, "iterations": 0}.get, 96, 96, [(96, 96)]).startswith("No estimate: ")
