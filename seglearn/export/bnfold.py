"""The real pre-activation of a lowered conv as a per-channel affine map of its int32 accumulator.

A conv whose input codes have real value ``s_x * v`` (``v`` the integer operand the kernel sees)
and whose weights are ``s_w[o] * W_int[o]`` computes ``conv = s_x s_w[o] acc + bias[o]`` exactly;
an eval-mode BatchNorm after it gives (Ioffe & Szegedy 2015; folding as Jacob et al. 2018, 3.2)

    y = gamma (conv - mu) / sqrt(var + eps) + beta = A[o] acc + B[o]
    A = s_x s_w gamma / sigma,  B = beta + gamma (bias - mu) / sigma,  sigma = sqrt(var + eps).

``A`` and ``B`` are export-time floats only: they become integer thresholds (``lower``).
"""

from __future__ import annotations

import numpy as np
from torch import nn


def conv_bias(conv: nn.Module) -> np.ndarray:
    """The additive bias of ``conv`` in eval mode (QuantConvBN2d: its folded bias)."""
    if hasattr(conv, "folded") and hasattr(conv, "bn"):
        return conv.folded()[1].detach().double().cpu().numpy()
    cout = conv.out_channels
    if getattr(conv, "bias", None) is None:
        return np.zeros(cout)
    return conv.bias.detach().double().cpu().numpy()


def affine_of_acc(s_x: float, s_w: np.ndarray, bias: np.ndarray, bn: nn.Module | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)`` with ``y = A acc + B`` per output channel (see the module docstring)."""
    a = float(s_x) * np.asarray(s_w, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    if isinstance(bn, nn.BatchNorm2d):
        if not bn.track_running_stats or bn.running_var is None:
            raise ValueError("export needs BatchNorm2d layers with running statistics")
        var = bn.running_var.detach().double().cpu().numpy()
        mu = bn.running_mean.detach().double().cpu().numpy()
        g = bn.weight.detach().double().cpu().numpy() if bn.affine else np.ones_like(var)
        be = bn.bias.detach().double().cpu().numpy() if bn.affine else np.zeros_like(var)
        k = g / np.sqrt(var + bn.eps)
        a, b = a * k, be + (b - mu) * k
    return a, b
