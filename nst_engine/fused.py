"""VGG19's passes on the CPU through oneDNN with each ReLU fused into its convolution, and a backward
pass written by hand (issue #30).

Autograd's own backward through conv → ReLU → pool allocates a fresh tensor for every ReLU gradient
and every sum of gradients, and the forward pass spends a separate read and write of every activation
on its ReLU.  On the CPU these memory passes, and the page faults of the fresh allocations, were 40 %
of a bf16 evaluation.  Here the ReLU is a post-op of the convolution, and the backward pass zeroes the
ReLU's gradient and adds each feature's gradient in place, in one buffer that flows from the deepest
layer to the image.  The kernels are the ones autograd calls (oneDNN's convolution and its backward,
ATen's pooling backward): float32 results are bit for bit those of the plain path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import VGG19_CONVS, Pooling

_ONES = [1, 1]
_WINDOW = [2, 2]


@dataclass(frozen=True)
class FusedPlan:
    """The layers one pass runs: convolutions 0..count-1, each followed by its ReLU, and which ReLU
    outputs are returned (``outputs[i]``: the position of conv i's ReLU among the returned features, or
    -1)."""

    count: int
    outputs: tuple[int, ...]
    pooling: Pooling


def usable(image: torch.Tensor, weight: torch.Tensor, layers: Sequence[str]) -> bool:
    """Whether :func:`features` can compute ``layers`` for ``image`` with convolutions holding ``weight``
    (the first one's): on a CPU whose oneDNN does their dtype natively (bf16 needs AVX512-BF16 or
    AMX: emulated bf16 takes the plain path), with channels_last weights (the engine's layout, the
    one these kernels are checked in), and only ReLU outputs (a convolution's own output has no ReLU
    to fuse)."""
    if image.device.type != "cpu" or not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    if not weight.is_contiguous(memory_format=torch.channels_last):
        return False
    dtype = weight.dtype
    if dtype == torch.bfloat16:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    elif dtype != torch.float32:
        return False
    return all(name.startswith("relu") for name in layers)


def plan_for(layers: Sequence[str], pooling: Pooling) -> FusedPlan:
    """The plan that returns the ReLU outputs named in ``layers``, in that order."""
    position = {name: index for index, name in enumerate(layers)}
    wanted = [position.get(spec.relu_name, -1) for spec in VGG19_CONVS]
    count = max(index for index, spec in enumerate(VGG19_CONVS) if spec.relu_name in position) + 1
    return FusedPlan(count, tuple(wanted[:count]), pooling)


def features(convs: nn.ModuleList, plan: FusedPlan, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The ReLU outputs the plan names, of the normalised image ``x`` already in the weights' dtype;
    differentiable with respect to ``x`` when it requires a gradient."""
    x = x.contiguous(memory_format=torch.channels_last)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FusedVGG.apply(x, convs, plan)
    return _forward(convs, plan, x, keep=False)[0]


def _pool(x: torch.Tensor, pooling: Pooling, keep: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if pooling is Pooling.MAX:
        if keep:
            return torch.ops.aten.max_pool2d_with_indices(x, _WINDOW, _WINDOW, [0, 0], _ONES, False)
        return F.max_pool2d(x, 2), None
    return F.avg_pool2d(x, 2), None


# PyTorch sends a float32 convolution of a single image with no more input values than this to its
# own im2col kernel instead of oneDNN (Convolution.cpp, use_mkldnn): so do we, to stay bit for bit.
_ONEDNN_MIN_FP32_INPUT = 20480


def _conv_relu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    if x.dtype == torch.float32 and x.numel() <= _ONEDNN_MIN_FP32_INPUT:
        return F.relu_(conv(x))
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, _ONES, _ONES, _ONES, 1, "relu", [None], "")


def _forward(convs: nn.ModuleList, plan: FusedPlan, x: torch.Tensor, keep: bool) -> tuple[
        tuple[torch.Tensor, ...], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor | None]]:
    """(returned features, each conv's input, each conv's ReLU output, each conv's pooling indices);
    without ``keep``, only the returned features are kept (the lists are empty), so that a pass
    without gradients frees each activation as the plain path does."""
    returned: list[torch.Tensor | None] = [None] * (max(plan.outputs) + 1)
    inputs: list[torch.Tensor] = []
    activations: list[torch.Tensor] = []
    indices: list[torch.Tensor | None] = []
    for index in range(plan.count):
        spec = VGG19_CONVS[index]
        pooled = None
        if spec.position == 1 and spec.block > 1:
            x, pooled = _pool(x, plan.pooling, keep)
        if keep:
            inputs.append(x)
            indices.append(pooled)
        x = _conv_relu(x, convs[index])
        if keep:
            activations.append(x)
        if plan.outputs[index] >= 0:
            returned[plan.outputs[index]] = x
    return tuple(returned), inputs, activations, indices  # type: ignore[arg-type]


# The bits of a bf16 value as a 16-bit integer.  ATen's threshold on bf16 widens every value to float32
# and rounds it back; on the bits it is a plain integer select, several times faster.
_BITS = {torch.bfloat16: torch.int16}


def _relu_backward(grad: torch.Tensor, output: torch.Tensor, in_place: bool) -> torch.Tensor:
    """The ReLU's gradient: ``grad`` where the ReLU's ``output`` is above 0, else 0 (autograd's kernel,
    in place into ``grad`` when ``in_place``).

    For bf16 the same select runs on the values' bits: a bf16 value is above 0 exactly when its bits,
    read as a signed 16-bit integer, are (+0 is 0; -0 and negative values are negative), so the result
    is the same bit for bit.  Only a negative NaN is told apart differently (zeroed here, kept by the
    float compare), and a NaN has spoilt the loss by then."""
    bits = _BITS.get(grad.dtype)
    if bits is not None and output.dtype == grad.dtype:
        result = _relu_backward(grad.view(bits), output.view(bits), in_place)
        return result.view(grad.dtype)
    if in_place:
        return torch.ops.aten.threshold_backward.grad_input(grad, output, 0, grad_input=grad)
    return torch.ops.aten.threshold_backward(grad, output, 0)


class _FusedVGG(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, convs: nn.ModuleList, plan: FusedPlan):  # type: ignore[override]
        returned, inputs, activations, indices = _forward(convs, plan, x, keep=True)
        ctx.convs, ctx.plan = convs, plan
        ctx.save_for_backward(*inputs, *activations, *(pooled for pooled in indices if pooled is not None))
        ctx.set_materialize_grads(False)
        return returned

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):  # type: ignore[override]
        plan: FusedPlan = ctx.plan
        saved = ctx.saved_tensors
        inputs, activations = saved[:plan.count], saved[plan.count:2 * plan.count]
        pool_indices = iter(reversed(saved[2 * plan.count:]))
        grad: torch.Tensor | None = None
        owned = False  # whether ``grad`` is this pass's own buffer, free to be changed in place
        skip_relu = False
        for index in reversed(range(plan.count)):
            output = plan.outputs[index]
            incoming = grads[output] if output >= 0 else None
            if incoming is not None:
                if grad is None:
                    grad, owned = incoming, False
                else:
                    grad = grad.add_(incoming) if owned else grad + incoming
                    owned = True
            if grad is None:
                continue
            # The ReLU's gradient: zero where its output is (autograd's kernel, see _relu_backward).  Below a
            # max-pooling with nothing else to add (see the pooling below), that was done already.
            if not (skip_relu and incoming is None):
                grad = _relu_backward(grad, activations[index], in_place=owned)
            skip_relu = False
            conv = ctx.convs[index]
            grad = torch.ops.aten.convolution_backward(
                grad, inputs[index], conv.weight, None, _ONES, _ONES, _ONES, False, [0, 0], 1,
                [True, False, False])[0]
            if VGG19_CONVS[index].position == 1 and index > 0:
                below = activations[index - 1]
                if plan.pooling is Pooling.MAX:
                    # Max-pooling passes each gradient to the one position its output came from, whose
                    # ReLU output is that pooled value: so the ReLU below can zero the gradient here,
                    # where the pooled value (this convolution's input) is 0, on a quarter as many
                    # values, with the same result bit for bit.
                    _relu_backward(grad, inputs[index], in_place=True)
                    skip_relu = True
                    # Nothing reads that ReLU output again unless it is a returned feature (its own
                    # gradient then needs its values): its memory takes the pooling's gradient, which
                    # saves a fresh full-size tensor (over 32 MiB, page-faulted in each time).  The
                    # kernel reads only the indices and the gradient; ``below`` gives the shape.
                    reuse = plan.outputs[index - 1] < 0
                    grad = torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                        grad, below, _WINDOW, _WINDOW, [0, 0], _ONES, False, next(pool_indices),
                        grad_input=below if reuse else torch.empty_like(below))
                else:
                    grad = torch.ops.aten.avg_pool2d_backward(grad, below, _WINDOW, _WINDOW, [0, 0], False, True, None)
            owned = True
        return grad, None, None
