"""Gram products of feature matrices kept in the features' own dtype, with float32 results.

A Gram matrix is compared with its target as Ĝ − Â, which late in a run is a small part of Ĝ, so Ĝ
must be accumulated *and returned* in float32: rounding Ĝ itself to bf16 (a bf16 product's result) adds
an error of 2⁻⁹·|Ĝ| to every evaluation's Ĝ − Â.  With everything else in fp32, that alone ended a
128-px, 100-iteration run 1.8 % above fp32's loss, where fp32 from perturbed starts spreads by 0.3 %
(docs/benchmarks.md, "Precision").

- CUDA: a bf16 product with a float32 result (``torch.mm(..., out_dtype=torch.float32)``), on the
  tensor cores.
- CPU: PyTorch 2.14 has no such product on the CPU, and oneDNN rounds a bf16 product's result to bf16.
  The features are widened to float32 and multiplied in float32: products of bf16 values are exact in
  float32, so this is the same float32-accumulated product, at fp32's rate.  The widened copy goes into
  a 16 MiB buffer kept by each thread, a block of positions at a time for a larger matrix, each block's
  product added to the sum (issue #30): a fresh copy of that size was a fresh mapping from the kernel
  on every evaluation (glibc maps large blocks and unmaps them when freed), whose page faults cost as
  much as the product.
"""

from __future__ import annotations

import threading

import torch

_WIDE = (torch.float32, torch.float64)


# The widening buffer's size: large enough that each block's product still runs near its peak, small
# enough to keep one per thread for good.
WIDENING_BYTES = 16 * 2**20
_scratch = threading.local()


def gram(matrix: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """MMᵀ (MᵀM when ``transposed``) of a float32 or bf16 matrix, as float32 accumulated in float32."""
    if matrix.dtype not in _WIDE:
        if matrix.is_cuda:
            left, right = (matrix.T, matrix) if transposed else (matrix, matrix.T)
            return torch.mm(left, right, out_dtype=torch.float32)
        return _widened_gram(matrix.T if transposed else matrix)
    return matrix.T @ matrix if transposed else matrix @ matrix.T


def _widened_gram(matrix: torch.Tensor) -> torch.Tensor:
    """MMᵀ of a channels × positions matrix in a narrower dtype, widened to float32 block by block."""
    channels, positions = matrix.shape
    block = max(1, WIDENING_BYTES // (4 * channels))
    product: torch.Tensor | None = None
    for start in range(0, max(positions, 1), block):  # once for an empty matrix: a zero product
        part = matrix[:, start:start + block]
        wide = _widening_buffer(part).copy_(part)
        product = wide @ wide.T if product is None else product.addmm_(wide, wide.T)
    assert product is not None
    return product


def _widening_buffer(part: torch.Tensor) -> torch.Tensor:
    """A float32 view of this thread's buffer with the shape and the order of ``part`` (positions outer,
    channels inner, or the other way round), so that copying into it is a plain widening, and its
    product the one a widened copy of ``part`` would give."""
    buffer: torch.Tensor | None = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.device != part.device or buffer.numel() < part.numel():
        buffer = torch.empty(max(part.numel(), WIDENING_BYTES // 4), dtype=torch.float32, device=part.device)
        _scratch.buffer = buffer
    flat = buffer[:part.numel()]
    rows, columns = part.shape
    return flat.view(columns, rows).T if part.stride(0) == 1 and rows > 1 else flat.view(rows, columns)
