"""The optimisation: it lowers the loss, is repeatable, multi-scale, cancellable, memory-aware."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from nst_engine import (
    CancelledError,
    CancelToken,
    Colors,
    Init,
    InsufficientMemoryError,
    InvalidSettingsError,
    Optimizer,
    Precision,
    StyleSettings,
    colour,
)
from nst_engine.device import cpu_has_native_bf16, resolve_precision
from nst_engine.memory import FP32, estimate_bytes
from nst_engine.quality import PrecisionQuality, judge_precision
from nst_engine.tiling import plan_stage
from nst_engine.transfer import Objective

from .bf16_check import CHECK_SETTINGS, bf16_quality, check_inputs

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = {"size": 48, "iterations": 8, "scales": 1}


def run(engine, content, style, progress=None, **overrides):
    settings = StyleSettings(**{**TINY, **overrides})
    records = [] if progress is None else progress
    result = engine.stylize(content, [style], settings, on_progress=records.append)
    return result, records


@pytest.mark.parametrize("optimizer", list(Optimizer))
def test_optimisation_lowers_the_loss_from_content(engine, content_image, style_image, optimizer):
    _, records = run(engine, content_image, style_image, optimizer=optimizer, iterations=15)
    first, last = records[0].losses, records[-1].losses
    assert last.total < 0.5 * first.total
    assert last.style < first.style  # starting at the content, style is what there is to gain
    assert first.content == pytest.approx(0.0, abs=1e-9)


def test_from_noise_both_terms_fall(engine, content_image, style_image):
    _, records = run(engine, content_image, style_image, init=Init.NOISE, iterations=15)
    first, last = records[0].losses, records[-1].losses
    assert last.content < first.content and last.style < first.style


def test_output_is_in_range_and_sized_by_the_longest_side(engine, content_image, style_image):
    result, _ = run(engine, content_image, style_image)
    assert result.shape == (3, 36, 48) and result.dtype == torch.float32
    assert result.min() >= 0.0 and result.max() <= 1.0


def test_size_zero_keeps_the_content_size(engine, content_image, style_image):
    result, _ = run(engine, content_image, style_image, size=0, iterations=2)
    assert result.shape == content_image.shape


@pytest.mark.parametrize("init", [Init.CONTENT, Init.NOISE])
def test_same_seed_gives_identical_output(engine, content_image, style_image, init):
    first, _ = run(engine, content_image, style_image, init=init, seed=7)
    second, _ = run(engine, content_image, style_image, init=init, seed=7)
    assert torch.equal(first, second)


def test_different_seed_gives_a_different_noise_start(engine, content_image, style_image):
    first, _ = run(engine, content_image, style_image, init=Init.NOISE, seed=1, iterations=1)
    second, _ = run(engine, content_image, style_image, init=Init.NOISE, seed=2, iterations=1)
    assert not torch.equal(first, second)


def test_init_image_is_the_starting_point(engine, content_image, style_image):
    start = torch.full_like(content_image, 0.25)
    settings = StyleSettings(**{**TINY, "iterations": 1, "style_weight": 0.0, "content_weight": 0.0}, init=Init.IMAGE)
    result = engine.stylize(content_image, [style_image], settings, init_image=start)
    assert torch.allclose(result, torch.full_like(result, 0.25), atol=1e-4)


def test_blend_weights_one_zero_equal_the_single_style(engine, content_image, style_image):
    other = torch.rand_like(style_image)
    single, _ = run(engine, content_image, style_image, iterations=3)
    blended = engine.stylize(
        content_image, [style_image, other], StyleSettings(**{**TINY, "iterations": 3}, style_blend_weights=(1.0, 0.0))
    )
    assert torch.allclose(single, blended, atol=1e-6)


def test_multi_scale_ends_at_the_requested_size(engine, content_image, style_image):
    result, records = run(engine, content_image, style_image, size=96, scales=3, iterations=3)
    assert result.shape == (3, 72, 96)
    assert [(r.stage, r.width) for r in records if r.stage_iteration == 1] == [(1, 24), (2, 48), (3, 96)]
    assert records[-1].iteration == records[-1].total_iterations == 9


def test_automatic_scales_halve_down_to_about_256():
    assert StyleSettings().stage_sizes(512) == [256, 512]
    assert StyleSettings().stage_sizes(1500) == [375, 750, 1500]
    assert StyleSettings().stage_sizes(128) == [128]


@pytest.mark.parametrize("optimizer", list(Optimizer))
def test_progress_iterations_rise_and_carry_each_term(engine, content_image, style_image, optimizer):
    _, records = run(engine, content_image, style_image, optimizer=optimizer, scales=2, size=64, iterations=5)
    iterations = [r.iteration for r in records]
    assert iterations == sorted(iterations) and len(set(iterations)) == len(iterations)
    assert iterations[-1] == 10
    assert all(r.elapsed_s >= 0 and r.losses.total == pytest.approx(r.losses.content + r.losses.style + r.losses.tv)
               for r in records)


def test_preview_images_arrive_every_n_iterations(engine, content_image, style_image):
    records = []
    engine.stylize(content_image, [style_image],
                   StyleSettings(**{**TINY, "optimizer": Optimizer.ADAM, "iterations": 6}),
                   on_progress=records.append, preview_every=2)
    with_image = [r.stage_iteration for r in records if r.image is not None]
    assert with_image == [2, 4, 6]
    assert records[1].image.shape == (3, 36, 48)


@pytest.mark.parametrize("optimizer", list(Optimizer))
@pytest.mark.parametrize("cancel_at", [1, 3, 6])  # first iteration, mid-stage, first iteration of stage 2
def test_cancel_stops_within_one_iteration(engine, content_image, style_image, optimizer, cancel_at):
    token = CancelToken()
    records = []
    evaluations = []
    original_forward = engine.model.forward

    def on_progress(record):
        records.append(record)
        if record.iteration == cancel_at:
            token.cancel()

    def counting_forward(*args, **kwargs):
        evaluations.append(token.cancelled)
        return original_forward(*args, **kwargs)

    engine.model.forward = counting_forward
    try:
        with pytest.raises(CancelledError):
            engine.stylize(content_image, [style_image],
                           StyleSettings(size=64, scales=2, iterations=5, optimizer=optimizer),
                           on_progress=on_progress, cancel=token)
    finally:
        del engine.model.forward
    assert records[-1].iteration == cancel_at
    assert True not in evaluations, "no VGG pass may start once the token is set"


def test_cancel_before_start(engine, content_image, style_image):
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        engine.stylize(content_image, [style_image], StyleSettings(**TINY), cancel=token)


def test_cancel_from_another_thread(engine, content_image, style_image):
    token = CancelToken()
    records = []

    def on_progress(record):
        records.append(record)
        if record.iteration == 2:
            threading.Thread(target=token.cancel).start()

    with pytest.raises(CancelledError):
        engine.stylize(content_image, [style_image],
                       StyleSettings(**{**TINY, "iterations": 500}, optimizer=Optimizer.ADAM),
                       on_progress=on_progress, cancel=token)
    assert len(records) < 50


def test_colour_preservation_keeps_the_content_chroma(engine, content_image):
    colourful_style = torch.stack([torch.ones(64, 64), torch.zeros(64, 64), torch.rand(64, 64)])
    result, _ = run(engine, content_image, colourful_style, colors=Colors.LUMINANCE, iterations=10, style_weight=1e4)
    content_small = torch.nn.functional.interpolate(content_image[None], size=result.shape[-2:], mode="bicubic",
                                                    antialias=True)[0].clamp(0, 1)
    result_iq = colour.rgb_to_yiq(result)[1:]
    content_iq = colour.rgb_to_yiq(content_small)[1:]
    # Tolerance: clamping to [0, 1] after recombination can shift chroma where luminance saturates.
    assert (result_iq - content_iq).abs().mean() < 0.01
    assert not torch.allclose(colour.rgb_to_yiq(result)[0], colour.rgb_to_yiq(content_small)[0], atol=1e-3)


def test_without_colour_preservation_the_style_colours_come_through(engine, content_image):
    red_style = torch.stack([torch.ones(64, 64), torch.zeros(64, 64), torch.zeros(64, 64)]) * 0.9
    result, _ = run(engine, content_image, red_style, iterations=15, style_weight=1e4)
    content_iq = colour.rgb_to_yiq(content_image)[1:].mean()
    assert (colour.rgb_to_yiq(result)[1:].mean() - content_iq).abs() > 0.01


def test_a_run_that_does_not_fit_names_the_largest_size(engine, content_image, style_image):
    settings = StyleSettings(size=64, scales=1, precision="fp32")
    budget = estimate_bytes(30, 40, settings.layers, settings.style_layers, Optimizer.LBFGS, FP32)
    with pytest.raises(InsufficientMemoryError) as raised:
        engine.stylize(content_image, [style_image], settings, memory_budget=budget)
    error = raised.value
    assert 40 <= error.largest_size < 64
    assert f"{error.largest_size} pixels" in str(error)
    fitting_h = round(48 * error.largest_size / 64)
    plan_stage(fitting_h, error.largest_size, settings, budget, arithmetic=FP32)  # fits (in tiles if need be)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"style_weight": float("nan")}, "style_weight"),
        ({"content_weight": -1.0}, "content_weight"),
        ({"iterations": 0}, "iterations"),
        ({"style_layers": ("relu9_9",)}, "style_layers"),
        ({"style_layer_weights": (1.0,)}, "style_layer_weights"),
        ({"style_blend_weights": (1.0, 1.0)}, "style_blend_weights"),
        ({"size": 64, "scales": 4}, "size"),
    ],
)
def test_bad_settings_name_the_field(engine, content_image, style_image, overrides, field):
    with pytest.raises(InvalidSettingsError, match=field):
        engine.stylize(content_image, [style_image], StyleSettings(**{**TINY, **overrides}))


def test_bad_images_are_refused(engine, content_image, style_image):
    with pytest.raises(InvalidSettingsError, match="content"):
        engine.stylize(content_image[:2], [style_image], StyleSettings(**TINY))
    nan_style = style_image.clone()
    nan_style[0, 0, 0] = float("nan")
    with pytest.raises(InvalidSettingsError, match="style image 1"):
        engine.stylize(content_image, [nan_style], StyleSettings(**TINY))


def test_gram_cache_skips_the_style_pass_and_gives_the_same_result(engine, content_image, style_image):
    cache: dict = {}
    settings = StyleSettings(**{**TINY, "iterations": 3})
    first = engine.stylize(content_image, [style_image], settings, style_keys=["style-a"], gram_cache=cache)
    assert len(cache) == 1
    style_passes = []
    original = engine.style_grams
    engine.style_grams = lambda *args, **kwargs: style_passes.append(1) or original(*args, **kwargs)
    try:
        second = engine.stylize(content_image, [style_image], settings, style_keys=["style-a"], gram_cache=cache)
    finally:
        del engine.style_grams
    assert style_passes == [] and torch.equal(first, second)


# -- bf16 against fp32 (nst_engine.quality says what the check guarantees and why) -------------------
@pytest.mark.skipif(not cpu_has_native_bf16(),
                    reason="this CPU has no native bf16 (AVX512-BF16 or AMX); the emulated path is checked below")
def test_native_bf16_is_as_good_as_fp32(engine):
    """bf16 with the CPU's own bf16 arithmetic, the nearest stand-in for a GPU's tensor cores."""
    report = bf16_quality(engine)
    assert report.failures() == [], report.to_dict()


def test_emulated_bf16_is_as_good_as_fp32():
    """bf16 with oneDNN held to AVX2, which has no bf16 instructions (on CPUs without native bf16,
    PyTorch's own emulation): the setting takes effect only before torch loads, hence a process of
    its own."""
    environment = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run([sys.executable, "-m", "tests.bf16_check"], cwd=REPO_ROOT, env=environment,
                               capture_output=True, text=True, timeout=1200)
    assert completed.returncode == 0, completed.stderr
    report = PrecisionQuality.from_dict(json.loads(completed.stdout))
    assert report.failures() == [], report.to_dict()


def test_the_check_fails_bf16_that_was_not_used(engine):
    content, style = check_inputs()
    fp32_result = engine.stylize(content, [style], dataclasses.replace(CHECK_SETTINGS, precision=Precision.FP32))
    failures = judge_precision(engine, content, [style], CHECK_SETTINGS, fp32_result).failures()
    assert len(failures) == 1 and "was not used" in failures[0]


def test_the_check_fails_a_run_whose_image_is_held_in_bf16(engine, monkeypatch):
    """A degraded "bf16 path" that rounds the optimised image itself to bf16 before each evaluation:
    updates smaller than bf16's step are lost and L-BFGS's line search stalls."""
    content, style = check_inputs()
    evaluate = Objective.loss_and_grad

    def image_in_bf16(objective, image):
        with torch.no_grad():
            image.copy_(image.to(torch.bfloat16))
        return evaluate(objective, image)

    monkeypatch.setattr(Objective, "loss_and_grad", image_in_bf16)
    degraded = engine.stylize(content, [style], dataclasses.replace(CHECK_SETTINGS, precision=Precision.FP32))
    monkeypatch.undo()
    report = judge_precision(engine, content, [style], CHECK_SETTINGS, degraded)
    assert len(report.failures()) == 1 and "ended at" in report.failures()[0]
    assert report.loss_ratio > 2 * report.bound_ratio


def test_tf32_is_fp32_on_the_cpu(engine, content_image, style_image):
    """(What auto resolves to per device and CPU kind: tests/test_bf16.py.)"""
    assert resolve_precision(Precision.TF32, torch.device("cpu")) is Precision.TF32
    # TF32 exists only on CUDA: elsewhere it is plain fp32, bit for bit.
    fp32, tf32 = (run(engine, content_image, style_image, iterations=3, precision=p)[0]
                  for p in (Precision.FP32, Precision.TF32))
    assert torch.equal(fp32, tf32)


@pytest.mark.parametrize("tile_size", [0, 64])
def test_strength_multiplies_the_style_weight_by_two_every_ten_points(engine, content_image, style_image, tile_size):
    """Strength 60 at β 1000 is β 2000 at strength 50, whole and in tiles; strength 40 gives another result."""
    common = {"size": 80 if tile_size else 48, "iterations": 1, "tile_size": tile_size}
    stronger, _ = run(engine, content_image, style_image, style_weight=1000.0, strength=60.0, **common)
    doubled, _ = run(engine, content_image, style_image, style_weight=2000.0, strength=50.0, **common)
    weaker, _ = run(engine, content_image, style_image, style_weight=1000.0, strength=40.0, **common)
    torch.testing.assert_close(stronger, doubled, rtol=0, atol=1e-5)
    assert (weaker - stronger).abs().max() > 1e-3


def test_a_runs_own_memory_budget_caps_the_devices(engine, content_image, style_image):
    settings = StyleSettings(size=2048, scales=1, memory_budget_mib=64)
    with pytest.raises(InsufficientMemoryError) as raised:
        engine.stylize(content_image, [style_image], settings, memory_budget=2**40)
    assert raised.value.available_bytes == 64 * 2**20
    assert "0.1 GiB is available" in str(raised.value)
