"""The ``estimate`` request (#14 item 4): memory by the engine's model, whole or tiled, seconds from the
daemon's measured speed, whether a job can run and the largest size that can."""

from __future__ import annotations

import importlib.util

import pytest

from daemon.client import DaemonJobError
from daemon.messages import EstimateReply
from nst_engine.memory import MODEL_BYTES
from nst_engine.settings import Optimizer

from .daemon_harness import REPO_ROOT, TINY_SETTINGS, rgb_image, start_daemon

BUDGET = 2**30


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("estimate-daemon"), weights_file, "--memory-budget", str(BUDGET))
    yield running
    running.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as connected:
        yield connected


def test_seconds_come_from_the_jobs_the_daemon_has_run(client):
    before = client.estimate(TINY_SETTINGS, 48, 40, style_sizes=[(40, 40)])
    assert isinstance(before, EstimateReply) and before.seconds is None  # nothing measured yet
    assert client.status()["seconds_per_megapixel_iteration"] is None
    assert (before.output_width, before.output_height) == (32, 27) and before.iterations == 3
    assert before.runnable and not before.tiled and before.tiles == 1 and before.available_bytes == BUDGET
    client.stylize(rgb_image(40, 48, seed=1), [rgb_image(40, 40, seed=2)], {**TINY_SETTINGS, "iterations": 6})
    rate = client.status()["seconds_per_megapixel_iteration"]
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


def load_memory_benchmark():
    spec = importlib.util.spec_from_file_location("memory_use", REPO_ROOT / "benchmarks" / "memory_use.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("size", [192, 320])
def test_the_memory_figure_is_within_25_percent_of_the_measured_peak(client, size):
    """The peak resident set of a real one-stage run (benchmarks/memory_use.py's measurement: a fresh
    process, peak restarted once the model is loaded), plus the model the estimate counts."""
    reply = client.estimate({"size": size, "scales": 1, "optimizer": "adam", "iterations": 2}, size, size)
    measured = load_memory_benchmark().measure("random", "cpu", size, Optimizer.ADAM, 2) + MODEL_BYTES
    assert abs(reply.memory_bytes - measured) <= 0.25 * measured, (reply.memory_bytes / 2**20, measured / 2**20)


def test_the_quick_feasibility_check_agrees_with_the_planner():
    """estimates._runs (used to check the largest size cheaply) says what plan_stage would: a plan or none."""
    import random

    from daemon.estimates import _runs
    from nst_engine import InsufficientMemoryError, StyleSettings
    from nst_engine.tiling import plan_stage

    rng = random.Random(0)
    outcomes = set()
    for _ in range(400):
        height, width = rng.randint(16, 12000), rng.randint(16, 12000)
        budget = rng.choice([2**28, 2**30, 2**32])
        settings = StyleSettings(optimizer=rng.choice(["lbfgs", "adam"]), tile_size=rng.choice([0, 0, 256]))
        try:
            plan_stage(height, width, settings, budget)
            planned = True
        except InsufficientMemoryError:
            planned = False
        assert _runs(height, width, settings, budget) == planned, (height, width, budget, settings)
        outcomes.add(planned)
    assert outcomes == {True, False}
