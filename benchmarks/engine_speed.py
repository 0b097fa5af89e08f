#!/usr/bin/env python3
"""Engine speed against a naive, PyTorch-tutorial-style baseline, in one run on the same machine and weights.

Prints, per size: seconds per objective evaluation (one forward + backward to the image) of each, the
achieved GFLOP/s against the machine's measured fp32 matrix-multiply throughput, and the time each needs
to reach the loss the baseline reaches after --evals evaluations, judged by the same loss function.

    .venv/bin/python benchmarks/engine_speed.py --random-weights          # no real weights needed
    .venv/bin/python benchmarks/engine_speed.py --weights vgg19.pth --sizes 128 256
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from nst_engine import CancelledError, CancelToken, StyleSettings, StyleTransfer
from nst_engine.vgg import IMAGENET_MEAN, IMAGENET_STD, LAYER_NAMES, VGG19_CONVS

SETTINGS = StyleSettings()


# ---------------------------------------------------------------------------------------------------
# The naive baseline, written the way the PyTorch tutorial writes it: loss modules inserted into a copy
# of VGG19's features, plain fp32, autograd for everything, L-BFGS with its defaults and clamping in
# the closure.  It optimises the same objective as the engine (same layers, normalisation and weights).
# ---------------------------------------------------------------------------------------------------
class Normalization(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(-1, 1, 1)

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
    cnn = torchvision.models.vgg19().features
    cnn.load_state_dict(state)
    cnn.eval()
    model = nn.Sequential(Normalization())
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
            loss = StyleLoss(model(style).detach(), SETTINGS.style_weight * layer_weights[name])
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


def measure_gemm_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def seconds_per_call(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def engine_time_to_loss(engine: StyleTransfer, content, style, size: int, target_loss: float, scales: int,
                        coarse_iterations: int, max_iterations: int) -> tuple[float, float]:
    """Seconds until the engine's final stage first reaches ``target_loss``, and the loss reached."""
    token = CancelToken()
    reached: list[tuple[float, float]] = []

    def on_progress(progress):
        if progress.stage == progress.stages and progress.losses.total <= target_loss and not reached:
            reached.append((progress.elapsed_s, progress.losses.total))
            token.cancel()

    settings = StyleSettings(size=size, scales=scales, iterations=max_iterations, coarse_iterations=coarse_iterations)
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
    weights.add_argument("--random-weights", action="store_true", help="seeded random VGG19: speed does not depend on the weights")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--evals", type=int, default=300, help="baseline evaluations that set the target loss; 0 = skip the time-to-loss comparison")
    parser.add_argument("--repeats", type=int, default=5, help="timed evaluations per measurement (median)")
    parser.add_argument("--scales", type=int, default=2, help="engine stages for the time-to-loss run")
    parser.add_argument("--coarse-iterations", type=int, default=50, help="engine iterations at each coarser stage")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    images = {size: (pink_noise_image(size, seed=1), pink_noise_image(size, seed=2)) for size in args.sizes}
    if args.random_weights:
        state = random_normalised_state(torch.stack(images[min(args.sizes)]))
        weights_label = "seeded random VGG19, normalised to mean activation 1 (not the ImageNet weights)"
    else:
        from nst_engine.weights import load_vgg19_state_dict

        state = load_vgg19_state_dict(args.weights)
        weights_label = args.weights or "torchvision IMAGENET1K_V1"
    from nst_engine.vgg import VGGFeatures

    engine = StyleTransfer(VGGFeatures(state), torch.device(args.device))
    gemm = measure_gemm_gflops()
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; weights: {weights_label}")
    print(f"fp32 matrix multiply (2048³): {gemm:.1f} GFLOP/s")

    for size in args.sizes:
        content, style = images[size]
        flops = evaluation_flops(size, size)

        objective = engine.objective(content, [style], SETTINGS, size, size)
        image = engine.to_device(content[None]).requires_grad_(True)

        def engine_eval():
            image.grad = None
            objective(image)[0].backward()

        naive_model, content_losses, style_losses = build_naive_model(state, content[None], style[None])
        naive_losses = content_losses + style_losses
        naive_image = content[None].clone().requires_grad_(True)

        def naive_eval():
            naive_image.grad = None
            naive_evaluate(naive_model, naive_losses, naive_image)

        engine_s = seconds_per_call(engine_eval, args.repeats)
        naive_s = seconds_per_call(naive_eval, args.repeats)
        print(f"\n{size}×{size}: {flops / 1e9:.1f} GFLOP per evaluation")
        print(f"  engine: {engine_s * 1000:8.1f} ms/eval  {flops / engine_s / 1e9:6.1f} GFLOP/s  "
              f"({100 * flops / engine_s / 1e9 / gemm:.0f} % of matrix multiply)")
        print(f"  naive:  {naive_s * 1000:8.1f} ms/eval  {flops / naive_s / 1e9:6.1f} GFLOP/s  "
              f"({100 * flops / naive_s / 1e9 / gemm:.0f} % of matrix multiply)")

        if args.evals == 0:
            continue
        naive_result, naive_seconds = run_naive(naive_model, naive_losses, content[None], args.evals)
        judge = engine.objective(content, [style], SETTINGS, size, size)
        with torch.no_grad():
            target_loss = judge(engine.to_device(naive_result))[0].item()
        engine_seconds, engine_loss = engine_time_to_loss(
            engine, content, style, size, target_loss, args.scales, args.coarse_iterations, max_iterations=args.evals
        )
        print(f"  naive reaches loss {target_loss:.4g} after {args.evals} evaluations in {naive_seconds:.1f} s")
        print(f"  engine ({args.scales} scales, {args.coarse_iterations} coarse iterations) reaches {engine_loss:.4g} "
              f"in {engine_seconds:.1f} s: {engine_seconds / naive_seconds:.2f}× the baseline's time")


if __name__ == "__main__":
    main()
