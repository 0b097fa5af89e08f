#!/usr/bin/env python3
"""Engine speed against a naive, PyTorch-tutorial-style baseline, in one run on the same machine and weights.

Prints, per size: seconds per objective evaluation (one forward + backward to the image) of each, the
achieved GFLOP/s against the machine's measured matrix-multiply throughput in each precision (fp32, and
bf16 or TF32 for those modes: the share of that precision's own peak), and the time each needs to reach
the loss the baseline reaches after --evals evaluations, judged by the same loss function.  --profile
adds, per precision, a split of one evaluation into convolutions, Gram products, casts and the rest
(always in --json, under each precision's "profile_ms_per_eval", in ms per evaluation).

    .venv/bin/python benchmarks/engine_speed.py --random-weights          # no real weights needed
    .venv/bin/python benchmarks/engine_speed.py --weights vgg19.pth --sizes 128 256
    .venv/bin/python benchmarks/engine_speed.py --random-weights --size 256 --precisions fp32 bf16 \
        --evals 0 --profile                                                # bf16 against fp32, with profiles
    .venv/bin/python benchmarks/engine_speed.py --random-weights --device cuda --size 512 \
        --precisions fp32 tf32 bf16 --evals 0 --json                       # one JSON object
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from evaluation_profile import profile_evaluations
from torch import nn

from nst_engine import CancelledError, CancelToken, Precision, StyleSettings, StyleTransfer
from nst_engine.device import compute_dtype, cpu_has_native_bf16, fp32_arithmetic, resolve_precision
from nst_engine.layers import LAYER_NAMES, VGG19_CONVS
from nst_engine.vgg import IMAGENET_MEAN, IMAGENET_STD

SETTINGS = StyleSettings()


# ---------------------------------------------------------------------------------------------------
# The naive baseline, written the way the PyTorch tutorial writes it: loss modules inserted into a copy
# of VGG19's features, plain fp32, autograd for everything, L-BFGS with its defaults and clamping in
# the closure.  It optimises the same objective as the engine (same layers, normalisation and weights).
# ---------------------------------------------------------------------------------------------------
class Normalization(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(-1, 1, 1))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return (img - self.mean) / self.std


def naive_gram(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.size()
    features = x.view(a * b, c * d)
    return torch.mm(features, features.t())


class ContentLoss(nn.Module):
    def __init__(self, target: torch.Tensor, weight: float) -> None:
        super().__init__()
        self.target = target.detach()
        self.weight = weight
        self.loss = torch.tensor(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = self.weight * 0.5 * F.mse_loss(x, self.target)
        return x


class StyleLoss(nn.Module):
    def __init__(self, target_feature: torch.Tensor, weight: float) -> None:
        super().__init__()
        self.target = naive_gram(target_feature).detach()
        self.weight = weight
        self.loss = torch.tensor(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, n, h, w = x.shape
        self.loss = self.weight * ((naive_gram(x) - self.target) ** 2).sum() / (4 * n**2 * (h * w) ** 2)
        return x


def build_naive_model(state: dict[str, torch.Tensor], content: torch.Tensor, style: torch.Tensor):
    """The tutorial's model on the device of ``content``."""
    cnn = torchvision.models.vgg19().features
    cnn.load_state_dict(state)
    cnn.to(content.device).eval()
    model = nn.Sequential(Normalization().to(content.device))
    content_losses, style_losses = [], []
    layer_weights = SETTINGS.layer_weights()
    names = iter(LAYER_NAMES)
    last_loss_index = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            name = next(names)
        elif isinstance(layer, nn.ReLU):
            name = next(names)
            layer = nn.ReLU(inplace=False)
        else:
            name = f"pool_{len(model)}"
        model.add_module(name, layer)
        if name == SETTINGS.content_layer:
            loss = ContentLoss(model(content).detach(), SETTINGS.content_weight)
            model.add_module(f"content_loss_{name}", loss)
            content_losses.append(loss)
        if name in layer_weights:
            loss = StyleLoss(model(style).detach(), SETTINGS.effective_style_weight * layer_weights[name])
            model.add_module(f"style_loss_{name}", loss)
            style_losses.append(loss)
        if isinstance(model[-1], (ContentLoss, StyleLoss)):
            last_loss_index = len(model)
    model = model[:last_loss_index]
    model.requires_grad_(False)
    return model, content_losses, style_losses


def naive_evaluate(model, losses, image: torch.Tensor) -> torch.Tensor:
    model(image)
    loss = sum(module.loss for module in losses)
    loss.backward()
    return loss


def run_naive(model, losses, content: torch.Tensor, evaluations: int) -> tuple[torch.Tensor, float]:
    image = content.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image])
    count = [0]
    started = time.perf_counter()
    while count[0] < evaluations:

        def closure():
            with torch.no_grad():
                image.clamp_(0, 1)
            optimizer.zero_grad()
            loss = naive_evaluate(model, losses, image)
            count[0] += 1
            return loss

        optimizer.step(closure)
    elapsed = time.perf_counter() - started
    return image.detach().clamp(0, 1), elapsed


# ---------------------------------------------------------------------------------------------------
def conv_flops(height: int, width: int, deepest: str) -> int:
    """FLOPs of the forward convolutions up to ``deepest`` (a multiply-add counts as two)."""
    total = 0
    for spec in VGG19_CONVS:
        scale = 2 ** (spec.block - 1)
        total += 2 * spec.in_channels * spec.out_channels * 9 * (height // scale) * (width // scale)
        if deepest in (spec.conv_name, spec.relu_name):
            break
    return total


def gram_flops(height: int, width: int) -> int:
    """FLOPs of the Gram matrices and their gradients (one matrix product each way)."""
    total = 0
    for spec in VGG19_CONVS:
        if spec.relu_name in SETTINGS.style_layers:
            scale = 2 ** (spec.block - 1)
            total += 2 * 2 * spec.out_channels**2 * (height // scale) * (width // scale)
    return total


def evaluation_flops(height: int, width: int) -> int:
    """Useful work of one evaluation: the forward convolutions, the same again for the gradient with
    respect to their inputs (no weight gradients are needed), and the Gram products."""
    deepest = max(SETTINGS.style_layers + (SETTINGS.content_layer,), key=LAYER_NAMES.index)
    return 2 * conv_flops(height, width, deepest) + gram_flops(height, width)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_gemm_gflops(device: torch.device, precision: Precision = Precision.FP32, size: int = 2048,
                        repeats: int = 10) -> float:
    """Matrix-multiply throughput in a resolved ``precision``: IEEE float32 for fp32, TF32 for tf32 (on
    CUDA; fp32 elsewhere), bf16 inputs for bf16."""
    dtype = compute_dtype(precision)
    if device.type == "cuda":
        size *= 4  # a GPU needs a larger product to reach its peak
    elif dtype == torch.bfloat16 and not cpu_has_native_bf16():
        size, repeats = 512, 2  # emulated at about 1 GFLOP/s: a 2048³ product would take 20 s
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    with fp32_arithmetic(device, precision):
        for _ in range(repeats + 1):
            synchronize(device)
            started = time.perf_counter()
            a @ b
            synchronize(device)
            best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def seconds_per_call(function: Callable[[], object], repeats: int, device: torch.device) -> float:
    function()  # warm-up: first-call allocations, kernel selection, cuDNN autotuning
    function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def engine_time_to_loss(engine: StyleTransfer, content, style, size: int, target_loss: float, scales: int,
                        coarse_iterations: int, max_iterations: int, precision: Precision) -> tuple[float, float]:
    """Seconds until the engine's final stage first reaches ``target_loss``, and the loss reached."""
    token = CancelToken()
    reached: list[tuple[float, float]] = []

    def on_progress(progress):
        if progress.stage == progress.stages and progress.losses.total <= target_loss and not reached:
            reached.append((progress.elapsed_s, progress.losses.total))
            token.cancel()

    settings = StyleSettings(size=size, scales=scales, iterations=max_iterations, coarse_iterations=coarse_iterations,
                             precision=precision)
    try:
        engine.stylize(content, [style], settings, on_progress=on_progress, cancel=token)
    except CancelledError:
        pass
    return reached[0] if reached else (float("inf"), float("nan"))


def pink_noise_image(size: int, seed: int) -> torch.Tensor:
    """3×size×size image with a natural image's 1/f amplitude spectrum: its statistics look alike at
    every scale, as photographs' do (white noise would favour or punish multi-scale unfairly)."""
    generator = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    frequency = torch.sqrt(fx**2 + fy**2)
    frequency[0, 0] = 1.0
    spectrum = torch.randn((3, size, size // 2 + 1), generator=generator, dtype=torch.complex64) / frequency
    spectrum[:, 0, 0] = 0
    image = torch.fft.irfft2(spectrum, s=(size, size))
    image = (image - image.mean(dim=(1, 2), keepdim=True)) / image.std(dim=(1, 2), keepdim=True)
    return (0.5 + 0.18 * image).clamp(0, 1)


def random_normalised_state(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Seeded random VGG19 whose layers are rescaled so that each mean ReLU activation over ``images``
    is 1, as Gatys et al. normalised theirs: raw random layers give losses so small that L-BFGS's
    default tolerances in the baseline stop it from moving at all."""
    from nst_engine.vgg import VGGFeatures

    torch.manual_seed(0)
    state = torchvision.models.vgg19().features.state_dict()
    with torch.no_grad():
        for spec in VGG19_CONVS:
            mean_activation = VGGFeatures(state)(images, [spec.relu_name])[spec.relu_name].mean().item()
            state[f"{spec.features_index}.weight"] /= mean_activation
            state[f"{spec.features_index}.bias"] /= mean_activation
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--weights", help="VGG19 state dict (default: torchvision's cached ImageNet weights)")
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random VGG19: speed does not depend on the weights")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    sizes.add_argument("--size", type=int, help="one size (same as --sizes N)")
    parser.add_argument("--precisions", nargs="+", choices=[p.value for p in Precision], default=["auto"],
                        help="engine precision modes to time (the first one also runs the time-to-loss comparison)")
    parser.add_argument("--evals", type=int, default=300,
                        help="baseline evaluations that set the target loss; 0 = skip the time-to-loss comparison")
    parser.add_argument("--repeats", type=int, default=5, help="timed evaluations per measurement (median)")
    parser.add_argument("--scales", type=int, default=2, help="engine stages for the time-to-loss run")
    parser.add_argument("--coarse-iterations", type=int, default=50, help="engine iterations at each coarser stage")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true",
                        help="per precision, split an evaluation into convolutions, Gram products, casts and the rest")
    parser.add_argument("--profile-evals", type=int, default=3, help="evaluations profiled per precision")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the first size at top level, every size under 'sizes'); "
                             "implies --profile: each precision's 'profile_ms_per_eval' holds its parts")
    args = parser.parse_args()
    args.profile = args.profile or args.json
    device = torch.device(args.device)
    size_list = [args.size] if args.size else args.sizes
    precisions = [resolve_precision(Precision(p), device) for p in args.precisions]
    say = (lambda *_: None) if args.json else print

    images = {size: (pink_noise_image(size, seed=1), pink_noise_image(size, seed=2)) for size in size_list}
    if args.random_weights:
        state = random_normalised_state(torch.stack(images[min(size_list)]))
        weights_label = "seeded random VGG19, normalised to mean activation 1 (not the ImageNet weights)"
    else:
        from nst_engine.weights import load_vgg19_state_dict

        state = load_vgg19_state_dict(args.weights)
        weights_label = args.weights or "torchvision IMAGENET1K_V1"
    from nst_engine.vgg import VGGFeatures

    engine = StyleTransfer(VGGFeatures(state), device)
    peaks = {precision: measure_gemm_gflops(device, precision)
             for precision in dict.fromkeys([Precision.FP32, *precisions])}
    gemm = peaks[Precision.FP32]
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        bf16_kind = "native bf16" if cpu_has_native_bf16() else "no native bf16"
        name = f"{torch.get_num_threads()} CPU threads, {bf16_kind}"
    say(f"torch {torch.__version__}, device {args.device} ({name}); weights: {weights_label}")
    for precision, peak in peaks.items():
        say(f"{precision.value} matrix multiply: {peak:.1f} GFLOP/s")

    figures = []
    for size in size_list:
        content, style = images[size]
        flops = evaluation_flops(size, size)
        naive_model, content_losses, style_losses = build_naive_model(
            state, content[None].to(device), style[None].to(device))
        naive_losses = content_losses + style_losses
        naive_image = content[None].to(device).requires_grad_(True)

        def naive_eval(image=naive_image, model=naive_model, losses=naive_losses):
            image.grad = None
            naive_evaluate(model, losses, image)

        with fp32_arithmetic(device, Precision.FP32):
            naive_s = seconds_per_call(naive_eval, args.repeats, device)
        record = {"size": size, "device": args.device, "device_name": name, "gemm_gflops": gemm,
                  "gemm_gflops_by_precision": {precision.value: peak for precision, peak in peaks.items()},
                  "gflop_per_eval": flops / 1e9, "naive_s_per_eval": naive_s, "naive_gflops": flops / naive_s / 1e9,
                  "precisions": {}}
        say(f"\n{size}×{size}: {flops / 1e9:.1f} GFLOP per evaluation")
        say(f"  naive (fp32):  {naive_s * 1000:8.2f} ms/eval  {flops / naive_s / 1e9:8.1f} GFLOP/s  "
            f"({100 * flops / naive_s / 1e9 / gemm:.0f} % of matrix multiply)")
        for precision in precisions:
            settings = StyleSettings(precision=precision)
            objective = engine.objective(content, [style], settings, size, size)
            image = engine.to_device(content[None]).requires_grad_(True)

            def engine_eval(image=image, objective=objective):
                image.grad = None
                objective(image)[0].backward()

            with fp32_arithmetic(device, precision):
                engine_s = seconds_per_call(engine_eval, args.repeats, device)
                profiled = profile_evaluations(engine_eval, args.profile_evals, device) if args.profile else None
            gflops = flops / engine_s / 1e9
            record["precisions"][precision.value] = {
                "s_per_eval": engine_s, "gflops": gflops, "share_of_own_peak": gflops / peaks[precision],
                **({"profile_ms_per_eval": profiled.to_dict()} if profiled else {}),
            }
            own = (f", {100 * gflops / peaks[precision]:.0f} % of {precision.value}'s"
                   if precision is not Precision.FP32 else "")
            say(f"  engine ({precision.value}): {engine_s * 1000:7.2f} ms/eval  {gflops:8.1f} GFLOP/s  "
                f"({100 * gflops / gemm:.0f} % of fp32 matrix multiply{own})")
            if profiled:
                say(f"    profile per evaluation: {profiled.summary()}")
        first = record["precisions"][precisions[0].value]
        record.update(engine_precision=precisions[0].value, engine_s_per_eval=first["s_per_eval"],
                      engine_gflops=first["gflops"])

        if args.evals:
            naive_result, naive_seconds = run_naive(naive_model, naive_losses, content[None].to(device), args.evals)
            judge = engine.objective(content, [style], StyleSettings(precision=Precision.FP32), size, size)
            with torch.no_grad():
                target_loss = judge(engine.to_device(naive_result))[0].item()
            # Up to three times the baseline's evaluations: the question is how long the engine takes, and
            # capping it at the baseline's count reported "never" for runs a few iterations short.
            engine_seconds, engine_loss = engine_time_to_loss(
                engine, content, style, size, target_loss, args.scales, args.coarse_iterations,
                max_iterations=3 * args.evals, precision=precisions[0],
            )
            record.update(naive_target_loss=target_loss, naive_seconds=naive_seconds,
                          engine_seconds_to_loss=engine_seconds)
            say(f"  naive reaches loss {target_loss:.4g} after {args.evals} evaluations in {naive_seconds:.1f} s")
            say(f"  engine ({precisions[0].value}, {args.scales} scales, {args.coarse_iterations} coarse iterations) "
                f"reaches {engine_loss:.4g} in {engine_seconds:.1f} s: {engine_seconds / naive_seconds:.2f}× "
                f"the baseline's time")
        figures.append(record)

    if args.json:
        print(json.dumps({**figures[0], "weights": weights_label, "sizes": figures}))


if __name__ == "__main__":
    main()
