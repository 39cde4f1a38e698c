"""Quantized layers: drop-in subclasses of torch's convolutions that fake-quantize weights and input.

Every layer has two optional quantizer submodules, ``weight_quant`` and ``act_quant`` (None = float):
``forward(x) = conv(act_quant(x), weight_quant(W)) + b``. A third, ``grad_quant`` (None unless the
scheme sets ``g_bits``: DoReFa's gradient quantizer), is the identity on the conv output and
quantizes the gradient flowing back into it in training. Each subclasses the float layer, so
code that inspects ``isinstance(m, nn.Conv2d)``, ``m.weight`` or ``m.stride`` keeps working, and
``state_dict`` keys are the float layer's plus the quantizers' own state.

Quantizers always see weights laid out (out, in, kh, kw) so that "per output channel" means dim 0:
:class:`QuantConvTranspose2d` hands them ``weight.transpose(0, 1)`` (torch stores (in, out, kh, kw)).
``quant_weight_view()`` returns that view and ``export_weight_info()`` the quantizer's QuantInfo of it.

:class:`QuantConvBN2d` is conv + batch norm trained with the folded weight
``w_f = gamma W / sqrt(var + eps)`` fake-quantized (Jacob et al. 2018, section 3.2 / fig. C.8),
in the form of Krishnamoorthi 2018 (and torch.ao's ConvBn2d): with ``s = gamma / sqrt(running_var
+ eps)``, training computes ``BN_batch(conv(x, Q(s W)) / s + b)`` so batch statistics still train
BN, and eval computes ``conv(x, Q(s W)) + (beta + (b - running_mean) s)``, exactly the folded
integer layer export emits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglearn.quant.base import QuantInfo


class _QuantMixin:
    """Shared helpers; the concrete classes register ``weight_quant`` and ``act_quant``."""

    weight: nn.Parameter

    def _init_quant(self, weight_quant: nn.Module | None, act_quant: nn.Module | None) -> None:
        self.add_module("weight_quant", weight_quant)
        self.add_module("act_quant", act_quant)
        self.add_module("grad_quant", None)  # DoReFa's G on the output (training only), g_bits

    def quantize_output_grad(self, y: torch.Tensor) -> torch.Tensor:
        """Identity forward; the gradient flowing back into the conv output is quantized by
        ``grad_quant`` when set (``quantize_model`` with a scheme's ``g_bits``)."""
        gq = getattr(self, "grad_quant", None)
        return gq(y) if gq is not None else y

    def quant_weight_view(self) -> torch.Tensor:
        """The weight as the quantizer sees it, (out, in, kh, kw)."""
        return self.weight

    def _from_view(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def quantized_weight(self) -> torch.Tensor:
        """The fake-quantized weight in the layer's own layout (float when no weight quantizer)."""
        view = self.quant_weight_view()  # QuantConvBN2d: the folded weight
        return self._from_view(self.weight_quant(view) if self.weight_quant is not None else view)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_quant(x) if self.act_quant is not None else x

    def export_weight_info(self) -> QuantInfo:
        """The weight quantizer's QuantInfo of :meth:`quant_weight_view` (layout (out, in, kh, kw))."""
        if self.weight_quant is None:
            raise ValueError(f"{type(self).__name__} has no weight quantizer to export")
        info = self.weight_quant.export_info(self.quant_weight_view().detach())
        info.extra.setdefault("layout", "out,in,kh,kw")
        return info


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight and input pass through the given quantizers."""

    def __init__(self, *args, weight_quant: nn.Module | None = None,
                 act_quant: nn.Module | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_quant(weight_quant, act_quant)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize_output_grad(
            self._conv_forward(self.quantize_input(x), self.quantized_weight(), self.bias))

    @classmethod
    def from_float(cls, conv: nn.Conv2d, weight_quant: nn.Module | None = None,
                   act_quant: nn.Module | None = None) -> "QuantConv2d":
        """A quantized copy of ``conv`` that shares its weight and bias Parameters."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode,
                  device=conv.weight.device, dtype=conv.weight.dtype,
                  weight_quant=weight_quant, act_quant=act_quant)
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new


class QuantConvTranspose2d(_QuantMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with quantized weight (seen as (out, in, kh, kw)) and input."""

    def __init__(self, *args, weight_quant: nn.Module | None = None,
                 act_quant: nn.Module | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.groups != 1:
            raise ValueError("QuantConvTranspose2d supports groups=1 only "
                             "(per-output-channel quantization needs the (out, in) layout)")
        self._init_quant(weight_quant, act_quant)

    def quant_weight_view(self) -> torch.Tensor:
        return self.weight.transpose(0, 1)

    def _from_view(self, w: torch.Tensor) -> torch.Tensor:
        return w.transpose(0, 1)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("only 'zeros' padding is supported for ConvTranspose2d")
        output_padding = self._output_padding(x, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return self.quantize_output_grad(
            F.conv_transpose2d(self.quantize_input(x), self.quantized_weight(), self.bias,
                               self.stride, self.padding, output_padding, self.groups,
                               self.dilation))

    @classmethod
    def from_float(cls, conv: nn.ConvTranspose2d, weight_quant: nn.Module | None = None,
                   act_quant: nn.Module | None = None) -> "QuantConvTranspose2d":
        """A quantized copy of ``conv`` that shares its weight and bias Parameters."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, output_padding=conv.output_padding, groups=conv.groups,
                  bias=conv.bias is not None, dilation=conv.dilation,
                  padding_mode=conv.padding_mode, device=conv.weight.device,
                  dtype=conv.weight.dtype, weight_quant=weight_quant, act_quant=act_quant)
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new


class QuantAct(nn.Module):
    """An activation quantizer as a standalone layer (``forward = quant(x)``)."""

    def __init__(self, quant: nn.Module):
        super().__init__()
        self.quant = quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant(x)

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        return self.quant.export_info(x)


class QuantConvBN2d(QuantConv2d):
    """Conv2d + BatchNorm2d trained on the fake-quantized folded weight; see the module docstring.

    ``bn`` is the (shared) BatchNorm2d; its affine parameters default to gamma = 1, beta = 0 when
    ``bn.affine`` is False.
    """

    def __init__(self, *args, bn: nn.BatchNorm2d, weight_quant: nn.Module | None = None,
                 act_quant: nn.Module | None = None, **kwargs):
        super().__init__(*args, weight_quant=weight_quant, act_quant=act_quant, **kwargs)
        if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != self.out_channels:
            raise ValueError(f"QuantConvBN2d needs a BatchNorm2d with {self.out_channels} features")
        if not bn.track_running_stats:
            raise ValueError("QuantConvBN2d folds running statistics; the BatchNorm2d must track them")
        self.bn = bn

    def _bn_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.affine else torch.zeros_like(bn.running_var)
        return gamma / torch.sqrt(bn.running_var + bn.eps), beta

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_f, b_f) = (s W, beta + (b - running_mean) s), s = gamma / sqrt(running_var + eps)."""
        s, beta = self._bn_scale()
        b = self.bias if self.bias is not None else torch.zeros_like(s)
        return self.weight * s.reshape(-1, 1, 1, 1), beta + (b - self.bn.running_mean) * s

    def quant_weight_view(self) -> torch.Tensor:
        return self.folded()[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quantize_input(x)
        w_q = self.quantized_weight()
        if not self.training:
            return self._conv_forward(x, w_q, self.folded()[1])
        s, _ = self._bn_scale()
        # gamma == 0 gives w_f == 0; dividing by 1 there keeps the output 0 instead of NaN
        s = torch.where(s == 0, torch.ones_like(s), s).reshape(1, -1, 1, 1)
        y = self.quantize_output_grad(self._conv_forward(x, w_q, None)) / s
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return self.bn(y)

    @classmethod
    def from_conv_bn(cls, conv: nn.Conv2d, bn: nn.BatchNorm2d, weight_quant: nn.Module | None = None,
                     act_quant: nn.Module | None = None) -> "QuantConvBN2d":
        """Fuse ``conv`` followed by ``bn``; shares their Parameters and running statistics."""
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                  padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None, padding_mode=conv.padding_mode,
                  device=conv.weight.device, dtype=conv.weight.dtype, bn=bn,
                  weight_quant=weight_quant, act_quant=act_quant)
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        return new
