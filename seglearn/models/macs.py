"""Count the multiply-accumulates of the 2D convolutions a call runs.

Every convolution a model runs goes through ``torch.nn.functional.conv2d`` or
``conv_transpose2d`` (``nn.Conv2d``, the quantized layers, ``nn.ConvTranspose2d`` and the fused
inference copies alike), so one ``TorchFunctionMode`` counts them all. Per call:
``conv2d``: output elements x (in_channels / groups) x kh x kw, which is ``out.numel()`` x the
weight's ``shape[1:]`` product; ``conv_transpose2d`` (weight ``(C_in, C_out / groups, kh, kw)``):
every input element meets ``C_out / groups x kh x kw`` weights, ``x.numel()`` x that product
(taps that land in the cropped padding included: the nominal count).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_CONV2D = {F.conv2d, torch.conv2d}
_CONV_TRANSPOSE2D = {F.conv_transpose2d, torch.conv_transpose2d}


class _CountConv2d(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.macs = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _CONV2D or func in _CONV_TRANSPOSE2D:
            x = args[0] if args else kwargs["input"]
            w = args[1] if len(args) > 1 else kwargs["weight"]
            counted = out if func in _CONV2D else x
            self.macs += counted.numel() * w.shape[1] * w.shape[2] * w.shape[3]
        return out


def conv2d_macs(fn: Callable[..., Any], *args, **kwargs) -> tuple[int, Any]:
    """``(MACs of every conv2d and conv_transpose2d that fn(*args, **kwargs) ran, its result)``."""
    counter = _CountConv2d()
    with torch.no_grad(), counter:
        result = fn(*args, **kwargs)
    return counter.macs, result
