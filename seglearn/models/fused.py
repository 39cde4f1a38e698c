"""An inference-only copy of a trained (quantized) FCN with the same outputs and fewer operations.

``fuse_for_inference(model)`` snapshots every convolution's effective weight and returns a
:class:`FusedFCN` that computes ``FCN.forward_features`` with

1. **batch norm folded** into the convolution (eval mode; Jacob et al. 2018, section 3.2):
   ``W' = W s``, ``b' = beta + (b - mu) s``, ``s = gamma / sqrt(var + eps)``, where ``W`` is the
   weight the layer really uses (``quantized_weight()``: INQ's powers of two, TWN's ternary ...)
   and ``b`` its bias (QuantConvBN2d: its own eval-mode folded bias). ReLU then runs in place.
2. **nearest x2 upsampling folded into the decoder's first convolution.** With ``u = up2(x)``
   and a 3x3 kernel with taps ``k-1, k0, k+1`` along an axis, output ``o`` reads ``u[o-1],
   u[o], u[o+1]``, that is ``x[(o-1)//2], x[o//2], x[(o+1)//2]``; collecting the taps that land
   on the same ``x[i]`` gives, per axis, a stride-2 transposed convolution (padding 1, ``o = 2i
   + j - 1``) with the four taps ``K = (k+1, k0 + k+1, k-1 + k0, k-1)`` (sub-pixel convolution,
   Shi et al. 2016, read backwards), and zero padding of ``u`` is zero padding of ``x``. So
   ``conv3x3(cat(up2(x), skip)) = conv_transpose_s2(x, K) + conv3x3(skip)``: the upsampled half
   of the input costs 4 taps per output pixel instead of 9 (2.25x fewer MACs there, 19% of the
   default FCN's total), and neither the upsampled tensor nor the concatenation is ever built.
   (An earlier version ran the four output phases as 2x2 convolutions and interleaved them: the
   same MACs, measured ~2x slower than oneDNN's transposed convolution at these shapes.)
3. with ``freeze=True``, **traced and frozen** by TorchScript (:class:`FrozenFCN`) where that is
   safe: the weights become graph constants and no Python runs between the kernels.

The outputs equal the original module's up to float rounding (summation order), tested against
it for float, quantized and batch-norm-folded schemes. What is not fused stays as it was: a
decoder convolution with an activation quantizer keeps the concatenation (quantizers such as
featq have per-channel state over the concatenated channels), and transposed-convolution
upsampling (``model.up: transpose``) keeps its layer. Models other than seglearn's FCN are
returned unchanged.

The copy is a snapshot: it does not follow later changes to the trained model's weights.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from seglearn.models.fcn import FCN, ConvBNReLU, SegmenterInterface, Up, unet_forward
from seglearn.quant.iao import fold_bn
from seglearn.quant.layers import QuantConvBN2d


@torch.no_grad()
def effective_conv(conv: nn.Conv2d, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) that ``bn(conv(x))`` applies in eval mode, with the conv's quantized weight
    (its input quantizer, if any, is not included: it acts on x before the convolution)."""
    w = conv.quantized_weight() if hasattr(conv, "quantized_weight") else conv.weight
    w = w.detach().float().clone()
    if isinstance(conv, QuantConvBN2d):
        b = conv.folded()[1].detach().float().clone()
    elif conv.bias is not None:
        b = conv.bias.detach().float().clone()
    else:
        b = torch.zeros(w.shape[0], device=w.device)
    if isinstance(bn, nn.BatchNorm2d):
        ones = torch.ones(w.shape[0], device=w.device)
        gamma = bn.weight.detach().float() if bn.affine else ones
        beta = bn.bias.detach().float() if bn.affine else torch.zeros_like(ones)
        w, b = fold_bn(w, b, gamma, beta, bn.running_mean.float(), bn.running_var.float(), bn.eps)
    elif bn is not None and not isinstance(bn, nn.Identity):
        raise TypeError(f"cannot fold {type(bn).__name__} into a convolution")
    return w, b


def _act_quant(conv: nn.Module) -> nn.Module | None:
    return getattr(conv, "act_quant", None)


class FusedConv(nn.Module):
    """``relu?(conv(act_quant?(x), W') + b')``: one ConvBNReLU (or a bare conv) with BN folded."""

    def __init__(self, conv: nn.Conv2d, bn: nn.Module | None = None, relu: bool = False):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError("FusedConv supports groups=1 and zero padding only")
        w, b = effective_conv(conv, bn)
        self.register_buffer("weight", w)
        self.register_buffer("bias", b)
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.act_quant = _act_quant(conv)
        self.relu = relu

    @classmethod
    def from_block(cls, block: nn.Sequential) -> "FusedConv":
        conv, bn, act = block[0], block[1], block[2]
        return cls(conv, bn, relu=isinstance(act, nn.ReLU))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quant is not None:
            x = self.act_quant(x)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return torch.relu_(y) if self.relu else y


def upsampling_conv_kernel(w: torch.Tensor) -> torch.Tensor:
    """The (C_in, C_out, 4, 4) stride-2 transposed-convolution kernel (padding 1) that equals a
    3x3 convolution (padding 1) applied after nearest x2 upsampling (see the module docstring):
    per axis, taps ``(k+1, k0 + k+1, k-1 + k0, k-1)`` of the 3x3 kernel's ``(k-1, k0, k+1)``."""
    if w.shape[-2:] != (3, 3):
        raise ValueError(f"the upsampling kernel needs a 3x3 kernel, not {tuple(w.shape[-2:])}")

    def taps(k: torch.Tensor, dim: int) -> torch.Tensor:
        km, k0, kp = k.select(dim, 0), k.select(dim, 1), k.select(dim, 2)
        return torch.stack([kp, k0 + kp, km + k0, km], dim)

    return taps(taps(w, 2), 3).transpose(0, 1).contiguous()


class FusedNearestUp(nn.Module):
    """``DoubleConv(cat(up2_nearest(x), skip))`` with the upsampling folded into the first conv:
    ``conv_transpose_s2(x, K) + conv3x3(skip)``."""

    def __init__(self, up: Up):
        super().__init__()
        first, second = up.conv[0], up.conv[1]
        conv = first[0]
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or \
                conv.dilation != (1, 1) or _act_quant(conv) is not None:
            raise ValueError("FusedNearestUp needs a plain 3x3, padding-1 conv without an "
                             "input quantizer")
        w, b = effective_conv(conv, first[1])
        cin = conv.in_channels - up.skip_channels  # cat order: upsampled x first, then skip
        self.register_buffer("w_up", upsampling_conv_kernel(w[:, :cin]))
        self.register_buffer("w_skip", w[:, cin:].contiguous())
        self.register_buffer("bias", b)
        self.relu = isinstance(first[2], nn.ReLU)
        self.second = FusedConv.from_block(second)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if skip.shape[-2:] != (2 * h, 2 * w):
            raise ValueError(f"skip is {tuple(skip.shape[-2:])}, expected {(2 * h, 2 * w)}")
        y = F.conv2d(skip, self.w_skip, self.bias, padding=1)            # (B, C, 2h, 2w)
        y += F.conv_transpose2d(x, self.w_up, stride=2, padding=1)       # (B, C, 2h, 2w)
        if self.relu:
            torch.relu_(y)
        return self.second(y)


class FusedUp(nn.Module):
    """An :class:`Up` stage that keeps its upsampling and concatenation, with BN folded."""

    def __init__(self, up: Up):
        super().__init__()
        self.up = up.up
        self.first = FusedConv.from_block(up.conv[0])
        self.second = FusedConv.from_block(up.conv[1])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(torch.cat([self.up(x), skip], dim=1)))


class FusedFCN(SegmenterInterface, nn.Module):
    """:class:`FCN`'s ``forward_features`` on fused layers (see the module docstring)."""

    def __init__(self, fcn: FCN):
        super().__init__()
        self.depth, self.out_channels = fcn.depth, fcn.out_channels
        self.feature_channels, self.contour_head = fcn.feature_channels, fcn.contour_head
        self.enc = nn.ModuleList(
            nn.Sequential(*(FusedConv.from_block(b) for b in stage)) for stage in fcn.enc)
        self.pool = fcn.pool
        self.dec = nn.ModuleList(_fuse_up(up) for up in fcn.dec)
        self.head = FusedConv(fcn.head)
        self.eval()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return unet_forward(self.enc, self.pool, self.dec, self.head, x)


def _fuse_up(up: Up) -> nn.Module:
    if up.mode == "nearest" and _act_quant(up.conv[0][0]) is None:
        return FusedNearestUp(up)
    return FusedUp(up)


def _is_fusable(model: nn.Module) -> bool:
    if not isinstance(model, FCN):
        return False
    blocks = [b for stage in model.enc for b in stage] + \
             [b for up in model.dec for b in up.conv]
    return all(isinstance(b, ConvBNReLU) and isinstance(b[0], nn.Conv2d) and b[0].groups == 1
               for b in blocks)


class FrozenFCN(SegmenterInterface, nn.Module):
    """A :class:`FusedFCN` traced and frozen by TorchScript (``torch.jit.trace`` +
    ``torch.jit.freeze``): the weights become graph constants, and the forward runs without the
    Python interpreter between its ~70 kernels. Measured here, one thread, default FCN at 128^2:
    16.1 ms vs 22.6 ms eager fused.

    Only for fused FCNs without activation quantizers: tracing records Python-side values as
    constants, and some quantizers (IAO, featq before they have seen data) compute their range
    from the input in Python. Shapes stay dynamic (tested on sizes other than the trace's).
    ``torch.jit`` is deprecated in favour of ``torch.compile``, which needs a C++ toolchain at run
    time and compiles for tens of seconds; :func:`fuse_for_inference` falls back to the eager
    fused module if tracing fails.
    """

    def __init__(self, fused: FusedFCN, example: torch.Tensor):
        super().__init__()
        self.depth, self.out_channels = fused.depth, fused.out_channels
        self.feature_channels, self.contour_head = fused.feature_channels, fused.contour_head
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice, and the skip-size guard
            traced = torch.jit.trace(_Features(fused), example, check_trace=False)
            self.graph_module = torch.jit.freeze(traced.eval())
        self.eval()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.graph_module(x)


class _Features(nn.Module):
    def __init__(self, fused: FusedFCN):
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fused.forward_features(x)


def _has_act_quant(model: nn.Module) -> bool:
    return any(getattr(m, "act_quant", None) is not None for m in model.modules())


@torch.no_grad()
def fuse_for_inference(model: nn.Module, freeze: bool = False) -> nn.Module:
    """An eval-mode :class:`FusedFCN` snapshot of ``model`` (an FCN, float or quantized); any other
    model is returned as it is. The trained model is not modified. With ``freeze``, also traced
    and frozen (:class:`FrozenFCN`) when the model has no activation quantizer (CPU only)."""
    if not _is_fusable(model):
        return model
    was_training = model.training
    model.eval()  # quantizers and BN in eval mode while the weights are snapshotted
    try:
        fused = FusedFCN(model)
    finally:
        model.train(was_training)
    if freeze and not _has_act_quant(model) and fused.head.weight.device.type == "cpu":
        example = torch.zeros(1, model.in_channels, 2 * fused.multiple, 2 * fused.multiple)
        try:
            return FrozenFCN(fused.to(memory_format=torch.channels_last),
                             example.contiguous(memory_format=torch.channels_last))
        except Exception as err:  # noqa: BLE001 - any tracing failure: the eager copy is correct
            warnings.warn(f"could not freeze the fused FCN ({type(err).__name__}: {err}); "
                          "running it eagerly", stacklevel=2)
    return fused
