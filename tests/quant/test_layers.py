"""Quantized layers against torch's float layers with explicitly quantized weights / inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seglearn.quant import get_quantizer
from seglearn.quant.layers import QuantAct, QuantConv2d, QuantConvBN2d, QuantConvTranspose2d


def test_quant_conv2d_equals_conv_of_quantized_weight_and_input():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True)
    wq, aq = get_quantizer("twn", kind="weight"), get_quantizer("dorefa", kind="act", bits=2)
    qc = QuantConv2d.from_float(conv, wq, aq)
    assert isinstance(qc, nn.Conv2d) and qc.weight is conv.weight
    x = torch.rand(2, 3, 8, 8) * 1.4 - 0.2
    expect = F.conv2d(aq(x), wq(conv.weight), conv.bias, padding=1)
    torch.testing.assert_close(qc(x), expect, rtol=0, atol=0)
    # float when no quantizers
    assert torch.equal(QuantConv2d.from_float(conv)(x), conv(x))
    assert set(qc.state_dict()) >= {"weight", "bias"}


def test_quant_conv_transpose_quantizes_per_output_channel():
    torch.manual_seed(1)
    conv = nn.ConvTranspose2d(4, 6, 2, stride=2, bias=False)  # weight (in=4, out=6, 2, 2)
    wq = get_quantizer("twn", kind="weight", per_channel=True)
    qc = QuantConvTranspose2d.from_float(conv, wq)
    x = torch.randn(1, 4, 5, 5)
    w_view = conv.weight.transpose(0, 1)  # (out, in, kh, kw)
    expect = F.conv_transpose2d(x, wq(w_view).transpose(0, 1), stride=2)
    torch.testing.assert_close(qc(x), expect, rtol=0, atol=0)
    assert qc(x).shape == conv(x).shape == (1, 6, 10, 10)
    info = qc.export_weight_info()
    assert info.codes.shape == (6, 4, 2, 2) and np.shape(info.scale) == (6,)


def test_quant_act_module():
    qa = QuantAct(get_quantizer("hwgq", kind="act"))
    x = torch.randn(3, 4)
    assert torch.equal(qa(x), qa.quant(x))
    assert qa.export_info().method == "hwgq"


def _conv_bn_pair(seed=0, bias=False):
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=bias)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return conv, bn


@pytest.mark.parametrize("bias", [False, True])
def test_conv_bn_without_quantizer_matches_conv_then_bn(bias):
    conv, bn = _conv_bn_pair(bias=bias)
    ref_conv, ref_bn = _conv_bn_pair(bias=bias)
    # float64: scaling by s and back is exact up to ~1e-16, so the comparison can be tight
    conv, bn, ref_conv, ref_bn = conv.double(), bn.double(), ref_conv.double(), ref_bn.double()
    fused = QuantConvBN2d.from_conv_bn(conv, bn)
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    fused.train(), ref_conv.train(), ref_bn.train()
    torch.testing.assert_close(fused(x), ref_bn(ref_conv(x)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused.bn.running_mean, ref_bn.running_mean)  # stats still update
    torch.testing.assert_close(fused.bn.running_var, ref_bn.running_var)
    fused.eval(), ref_conv.eval(), ref_bn.eval()
    torch.testing.assert_close(fused(x), ref_bn(ref_conv(x)), rtol=1e-10, atol=1e-10)


def test_conv_bn_fake_quantizes_the_folded_weight():
    conv, bn = _conv_bn_pair(seed=3)
    wq = get_quantizer("dorefa", kind="weight", bits=3)
    fused = QuantConvBN2d.from_conv_bn(conv, bn, wq).eval()
    gamma, beta = bn.weight.detach(), bn.bias.detach()
    s = gamma / torch.sqrt(bn.running_var + bn.eps)
    w_f = conv.weight.detach() * s[:, None, None, None]  # numpy-style fold, by hand
    b_f = beta - bn.running_mean * s
    x = torch.randn(2, 3, 5, 5)
    expect = F.conv2d(x, wq(w_f), b_f, padding=1)
    torch.testing.assert_close(fused(x), expect, rtol=1e-6, atol=1e-6)
    info = fused.export_weight_info()
    np.testing.assert_allclose(info.dequantize(), wq(w_f).numpy(), atol=1e-6)
    # gradients reach the float weight and the BN affine parameters in training
    fused.train()
    fused(x).sum().backward()
    assert conv.weight.grad.abs().sum() > 0 and bn.weight.grad is not None


def test_conv_bn_rejects_mismatched_bn():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="BatchNorm2d with 4"):
        QuantConvBN2d.from_conv_bn(conv, nn.BatchNorm2d(5))
