"""Quantization error ||x_q - x||^2 / ||x||^2 of any quantizer on given tensors."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def quant_error(quantizer: nn.Module, x: Tensor, target: Tensor | None = None) -> float:
    """||q(x) - t||^2 / ||t||^2 with t = `target`, else `quantizer.target(x)` when defined (the softmax of the
    scores for SAB and BiBERT), else x. Runs without gradients (lazy scales initialise from `x`)."""
    with torch.no_grad():
        xq = quantizer(x)
        if target is None:
            target = quantizer.target(x) if hasattr(quantizer, "target") else x
        return float(((xq - target) ** 2).sum() / (target**2).sum().clamp_min(1e-30))
