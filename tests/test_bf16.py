"""The bf16 path (issue #19): a VGG converted once to bf16, bf16 activations, float32 Gram matrices and
losses; what ``auto`` resolves to, and where the command line and the daemon say so.

This machine's CPU may emulate bf16 (about 20× slower than fp32), so every bf16 run here is tiny.  The
quality of whole bf16 runs is the subject of tests/test_transfer.py's bf16 checks.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from daemon.server.devices import precision_status
from nst_engine import Precision, StyleSettings
from nst_engine import device as device_module
from nst_engine.cli import main as cli_main
from nst_engine.cli.image_files import write_image
from nst_engine.device import choose_precision, cpu_has_native_bf16, resolve_precision
from nst_engine.products import gram
from nst_engine.tiling import TilePlan

from .daemon_harness import start_daemon
from .stand_ins import smooth_image

CPU = torch.device("cpu")
SIZE = 32
BF16 = StyleSettings(size=SIZE, scales=1, precision=Precision.BF16)
FP32 = StyleSettings(size=SIZE, scales=1, precision=Precision.FP32)
# bf16 against fp32 for one evaluation, measured at 32–64 px, whole, guided and tiled: gradients 4–6.5 %
# apart (relative norm of the difference; cosine 0.998), loss terms within 0.3 %: bf16 rounds every
# activation to 8 significant bits.  A gradient missing a term, a guide or a layer is tens of percent off.
GRADIENT_TOLERANCE = 0.10
LOSS_TOLERANCE = 0.01


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend this CPU has (True) or lacks (False) native bf16 (conftest pretends it lacks it)."""

    def pretend(has_it: bool) -> None:
        monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: has_it)

    return pretend


def images(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Content, style and a start image that is neither."""
    return smooth_image(size, size, seed=1), smooth_image(size, size, seed=2), smooth_image(size, size, seed=3)


def evaluate(objective, start: torch.Tensor, engine) -> tuple[torch.Tensor, torch.Tensor]:
    """(terms, gradient) of one evaluation at ``start``."""
    image = engine.to_device(start[None]).requires_grad_(True)
    _, terms = objective.loss_and_grad(image)
    return terms, image.grad


def assert_close_to_fp32(bf16: tuple[torch.Tensor, torch.Tensor], fp32: tuple[torch.Tensor, torch.Tensor]) -> None:
    (bf16_terms, bf16_grad), (fp32_terms, fp32_grad) = bf16, fp32
    assert bf16_terms.dtype == bf16_grad.dtype == torch.float32
    assert torch.allclose(bf16_terms, fp32_terms, rtol=LOSS_TOLERANCE, atol=0.0)
    assert (bf16_grad - fp32_grad).norm() <= GRADIENT_TOLERANCE * fp32_grad.norm()


# -- the path ----------------------------------------------------------------------------------------
def test_bf16_runs_a_vgg_converted_once_to_bf16(engine):
    content, style, start = images()
    objective = engine.objective(content, [style], BF16, SIZE, SIZE)
    model = objective.model
    assert model is engine.model_for(Precision.BF16) and model is not engine.model
    assert engine.model.dtype == torch.float32  # the fp32 model is untouched
    weight = model.convs[1].weight
    assert weight.dtype == torch.bfloat16 and weight.is_contiguous(memory_format=torch.channels_last)
    features = model(engine.to_device(start[None]), BF16.layers)
    assert {tensor.dtype for tensor in features.values()} == {torch.bfloat16}
    assert objective.content_target.dtype == torch.float32
    # A second objective (another stage, another run) reuses the converted model.
    assert engine.objective(content, [style], BF16, SIZE, SIZE).model is model


def test_a_bf16_evaluation_casts_no_weights(engine):
    """What is cast in one evaluation: the image and its gradient, the content layer's features and
    their gradient, and per style layer at most its feature matrix (widened for the Gram product on the
    CPU) and the N×N difference the gradient is pulled through.  Autocast re-cast all sixteen weights."""
    content, style, start = images()
    objective = engine.objective(content, [style], BF16, SIZE, SIZE)
    image = engine.to_device(start[None]).requires_grad_(True)
    objective.loss_and_grad(image)  # first-call work out of the way
    image.grad = None
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as profiler:
        objective.loss_and_grad(image)
    cast_shapes = [tuple(event.input_shapes[0]) for event in profiler.events()
                   if event.name == "aten::_to_copy" and event.input_shapes and event.input_shapes[0]]
    weight_shapes = {tuple(conv.weight.shape) for conv in engine.model.convs}
    assert not weight_shapes & set(cast_shapes), cast_shapes
    assert 0 < len(cast_shapes) <= 4 + 2 * len(BF16.style_layers), cast_shapes


def test_bf16_gradients_are_close_to_fp32s(engine):
    content, style, start = images()
    bf16 = evaluate(engine.objective(content, [style], BF16, SIZE, SIZE), start, engine)
    fp32 = evaluate(engine.objective(content, [style], FP32, SIZE, SIZE), start, engine)
    assert_close_to_fp32(bf16, fp32)
    assert (bf16[1] != fp32[1]).any()  # really computed in another precision


def regions_and_masks(size: int) -> dict[str, list[torch.Tensor]]:
    left = torch.zeros(size, size)
    left[:, : size // 2 + 3] = 1.0
    soft = torch.linspace(0, 1, size)[None, :].expand(size, size).contiguous()
    style_mask = torch.ones(size, size)
    style_mask[: size // 4] = 0.0
    return {"regions": [left, soft], "style_image_masks": [style_mask, soft]}


def test_guided_bf16_gradients_are_close_to_fp32s(engine):
    size = 48
    content, style, start = images(size)
    styles = [style, smooth_image(size, size, seed=4)]
    guided = regions_and_masks(size)
    bf16 = engine.objective(content, styles, BF16, size, size, **guided)
    assert all(guide.dtype == torch.bfloat16 for term in bf16.style_terms for guide in term.guides.values())
    fp32 = engine.objective(content, styles, FP32, size, size, **guided)
    assert_close_to_fp32(evaluate(bf16, start, engine), evaluate(fp32, start, engine))


def test_tiled_guided_bf16_gradients_are_close_to_fp32s(engine):
    """The same tiles in both precisions (small ones, for speed: this compares precisions, not tiling)."""
    size, plan = 48, TilePlan(32, margin=16)
    content, style, start = images(size)
    styles = [style, smooth_image(size, size, seed=4)]
    guided = regions_and_masks(size)
    bf16 = engine.tiled_objective(content, styles, BF16, size, size, plan, **guided)
    assert bf16.model.dtype == torch.bfloat16 and bf16.content_target.dtype == torch.float32
    fp32 = engine.tiled_objective(content, styles, FP32, size, size, plan, **guided)
    assert_close_to_fp32(evaluate(bf16, start, engine), evaluate(fp32, start, engine))


def test_gram_products_of_bf16_features_are_float32_accumulated_in_float32():
    """Rounding the Gram matrix to bf16 (what a bf16 product returns on the CPU) would be 2⁻⁹ off; a
    bf16 accumulation over 16384 positions far more."""
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(64, 16384, generator=generator).bfloat16()
    exact = features.double() @ features.double().T
    for matrix, transposed in ((features, False), (features.T, True)):
        product = gram(matrix, transposed)
        assert product.dtype == torch.float32
        assert ((product.double() - exact).abs() / exact).max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_gram_products_on_cuda_are_float32_accumulated_in_float32():
    features = torch.rand(64, 16384, device="cuda").bfloat16()
    exact = features.double() @ features.double().T
    product = gram(features)
    assert product.dtype == torch.float32 and ((product.double() - exact).abs() / exact).max() < 1e-5


# -- auto --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("device", "native", "expected", "reason"), [
    ("cpu", True, Precision.BF16, "this CPU has native bf16"),
    ("cpu", False, Precision.FP32, "this CPU has no native bf16"),
    ("cuda", True, Precision.TF32, "the CUDA default: tensor cores with fp32's picture"),
    ("cuda", False, Precision.TF32, "the CUDA default: tensor cores with fp32's picture"),
    ("mps", True, Precision.FP32, "the mps default"),
])
def test_auto_resolves_per_device_and_cpu_kind(native_bf16, device, native, expected, reason):
    native_bf16(native)
    choice = choose_precision(Precision.AUTO, torch.device(device))
    assert (choice.precision, choice.reason) == (expected, reason)
    assert resolve_precision(Precision.AUTO, torch.device(device)) is expected


def test_an_explicit_precision_is_kept_and_emulated_bf16_is_named(native_bf16):
    native_bf16(False)
    for precision in (Precision.FP32, Precision.TF32):
        assert choose_precision(precision, CPU) == device_module.PrecisionChoice(precision, "as asked")
    emulated = choose_precision(Precision.BF16, CPU)
    assert emulated.precision is Precision.BF16 and "emulated" in emulated.reason
    native_bf16(True)
    assert choose_precision(Precision.BF16, CPU).reason == "as asked"


def test_a_cpu_whose_onednn_is_held_below_bf16_has_no_native_bf16(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (the emulated quality check's setting) makes bf16 emulated on any CPU."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    cpu_has_native_bf16.cache_clear()  # the real detection, imported before conftest's stand-in
    try:
        assert cpu_has_native_bf16() is False
    finally:
        cpu_has_native_bf16.cache_clear()


def test_auto_runs_the_bf16_model_on_a_cpu_with_native_bf16(engine, native_bf16):
    native_bf16(True)
    assert engine.model_for(Precision.AUTO).dtype == torch.bfloat16
    native_bf16(False)
    assert engine.model_for(Precision.AUTO) is engine.model


# -- where it is reported ----------------------------------------------------------------------------
@pytest.mark.parametrize(("native", "first_line"), [
    (False, "Running on cpu in fp32 (this CPU has no native bf16)"),
    (True, "Running on cpu in bf16 (this CPU has native bf16)"),
])
def test_the_command_lines_first_line_says_which_precision_runs_and_why(
        tmp_path, weights_file, capsys, native_bf16, native, first_line):
    native_bf16(native)
    content, style, out = tmp_path / "content.png", tmp_path / "style.png", tmp_path / "out.png"
    write_image(content, smooth_image(SIZE, SIZE, seed=1), bits=8)
    write_image(style, smooth_image(SIZE, SIZE, seed=2), bits=8)
    code = cli_main([str(content), str(style), "-o", str(out), "--size", str(SIZE), "--iterations", "1",
                     "--scales", "1", "--weights", str(weights_file), "--device", "cpu"])
    assert code == 0
    assert capsys.readouterr().out.splitlines()[0] == first_line


@pytest.mark.parametrize("native", [False, True])
def test_the_daemons_status_precision_is_autos_with_its_reason(native_bf16, native):
    native_bf16(native)
    choice = choose_precision(Precision.AUTO, CPU)
    assert precision_status(CPU) == {"auto": choice.precision.value, "reason": choice.reason}


def test_a_running_daemon_reports_its_precision(tmp_path, weights_file, native_bf16):
    native_bf16(cpu_has_native_bf16())  # the daemon's process sees this CPU as it is
    daemon = start_daemon(tmp_path, weights_file, "--lazy")
    try:
        with daemon.client() as client:
            assert client.status().devices[0]["precision"] == precision_status(CPU)
    finally:
        daemon.stop()

