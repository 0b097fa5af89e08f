"""Gram products of feature matrices kept in the features' own dtype, with float32 results.

A Gram matrix is compared with its target as Ĝ − Â, which late in a run is a small part of Ĝ, so Ĝ
must be accumulated *and returned* in float32: rounding Ĝ itself to bf16 (a bf16 product's result) adds
an error of 2⁻⁹·|Ĝ| to every evaluation's Ĝ − Â.  With everything else in fp32, that alone ended a
128-px, 100-iteration run 1.8 % above fp32's loss, where fp32 from perturbed starts spreads by 0.3 %
(docs/benchmarks.md, "Precision").

- CUDA: a bf16 product with a float32 result (``torch.mm(..., out_dtype=torch.float32)``), on the
  tensor cores.
- CPU: PyTorch 2.14 has no such product on the CPU, and oneDNN rounds a bf16 product's result to bf16.
  The features are widened to float32 once and multiplied in float32: products of bf16 values are exact
  in float32, so this is the same float32-accumulated product, at fp32's rate.
"""

from __future__ import annotations

import torch

_WIDE = (torch.float32, torch.float64)


def gram(matrix: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """MMᵀ (MᵀM when ``transposed``) of a float32 or bf16 matrix, as float32 accumulated in float32."""
    if matrix.dtype not in _WIDE:
        if matrix.is_cuda:
            left, right = (matrix.T, matrix) if transposed else (matrix, matrix.T)
            return torch.mm(left, right, out_dtype=torch.float32)
        matrix = matrix.float()
    return matrix.T @ matrix if transposed else matrix @ matrix.T
