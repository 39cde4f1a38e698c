"""Mixed precision: bfloat16 autocast only where the hardware makes it faster."""

from __future__ import annotations

import warnings

import torch


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast speeds training up on ``device`` rather than slowing it down.

    CUDA: the GPU supports bf16. CPU: oneDNN has bf16 convolution kernels, i.e. AVX-512 (BW, VL,
    DQ) or AMX. Without them torch falls back to ``_slow_conv2d`` for bf16 convolutions: on an
    AVX2-only CPU (measured on an AMD EPYC here) a training step was 10x *slower* in bf16 than
    in float32, where on AVX-512/AMX machines it is about 2x faster.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private op; absent in some builds
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


_BF16_WARNED: set[str] = set()


def autocast_context(device: torch.device, enabled: bool):
    """bfloat16 autocast where it is fast (:func:`bf16_is_fast`); float32 with one warning elsewhere.

    ``train.bf16: true`` asks for the speed-up, not for bf16 at any cost, so a machine without
    bf16 kernels trains in float32 (same results up to rounding, several times sooner).
    """
    if enabled and not bf16_is_fast(device):
        if device.type not in _BF16_WARNED:
            _BF16_WARNED.add(device.type)
            warnings.warn(f"train.bf16 is on but this {device.type.upper()} has no fast bfloat16 "
                          "kernels (no AVX-512/AMX); training in float32 instead, which is faster "
                          "here (set train.bf16=false to silence this)", stacklevel=2)
        enabled = False
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
