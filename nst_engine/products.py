"""Gram products of feature matrices kept in the features' own dtype, with float32 results."""

from __future__ import annotations

import torch

_WIDE = (torch.float32, torch.float64)


def gram(matrix: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """MMᵀ (MᵀM when ``transposed``) of a float32 or bf16 matrix, as float32 accumulated in float32."""
    left, right = (matrix.T, matrix) if transposed else (matrix, matrix.T)
    if matrix.dtype in _WIDE:
        return left @ right
    if matrix.is_cuda:
        return torch.mm(left, right, out_dtype=torch.float32)
    return _cpu_gram(left, right)


def _widened_gram(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return left.float() @ right.float()


def _rounded_gram(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    return (left @ right).float()


_cpu_gram = _rounded_gram
