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
  float32, so this is the same float32-accumulated product, at fp32's rate.  A large matrix is widened
  a block of positions at a time into one 16 MiB buffer, each block's product added to the sum
  (issue #30): a widened copy over 32 MiB is a fresh mapping from the kernel on every evaluation
  (glibc maps such blocks and unmaps them when freed), whose page faults cost more than the product.
"""

from __future__ import annotations

import torch

_WIDE = (torch.float32, torch.float64)


# Widened positions per block: at most glibc's largest mmap threshold (32 MiB), so that the buffer is
# reused from the heap, and large enough that each product still runs near its peak.
_BLOCK_BYTES = 16 * 2**20


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
    block = max(1, _BLOCK_BYTES // (4 * channels))
    if positions <= block:
        wide = matrix.float()
        return wide @ wide.T
    buffer = torch.empty(block, channels, dtype=torch.float32, device=matrix.device).T
    product: torch.Tensor | None = None
    for start in range(0, positions, block):
        part = matrix[:, start:start + block]
        wide = buffer[:, :part.shape[1]].copy_(part)
        product = wide @ wide.T if product is None else product.addmm_(wide, wide.T)
    assert product is not None
    return product
