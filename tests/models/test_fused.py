"""The fused inference copy (seglearn.models.fused) against the trained module it was made from,
for every quantizer in the zoo, and its pieces against direct oracles."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seglearn.models.fcn import build_model
from seglearn.models.fused import (FusedFCN, FusedNearestUp, FusedUp, fuse_for_inference,
                                   upsampling_conv_kernel)
from seglearn.quant.base import QUANTIZERS, get_quantizer
from seglearn.quant.convert import quantize_model


def _has(name: str, kind: str) -> bool:
    try:
        get_quantizer(name, kind=kind)
    except (ValueError, KeyError, TypeError):
        return False
    return True


WEIGHT_QUANTS = [n for n in QUANTIZERS.names() if _has(n, "weight")]
ACT_QUANTS = [n for n in QUANTIZERS.names() if _has(n, "act")]


def _trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BN non-trivial statistics and affine parameters, and let every quantizer see data."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.num_features, generator=g)
            m.bias.data = 0.2 * torch.randn(m.num_features, generator=g)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model.forward_features(torch.rand(2, 3, 32, 32, generator=g))
    return model.eval()


def _compare(model: nn.Module, x: torch.Tensor):
    fused = fuse_for_inference(model)
    with torch.no_grad():
        a, fa = model.forward_features(x)
        b, fb = fused.forward_features(x)
    return fused, a, b, fa, fb


@pytest.mark.parametrize("up", ["nearest", "transpose"])
@pytest.mark.parametrize("contour", [False, True])
def test_float_fcn_fused_equals_the_module(up, contour):
    torch.manual_seed(0)
    model = _trained(build_model("fcn", width=8, depth=3, up=up, contour_head=contour))
    x = torch.rand(2, 3, 24, 40)  # not square, a multiple of 4
    fused, a, b, fa, fb = _compare(model, x)
    assert isinstance(fused, FusedFCN)
    kind = FusedNearestUp if up == "nearest" else FusedUp
    assert all(isinstance(d, kind) for d in fused.dec)
    assert a.shape == b.shape == (2, 2 if contour else 1, 24, 40)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * float(a.abs().max()))
    torch.testing.assert_close(fb, fa, rtol=0, atol=1e-5 * float(fa.abs().max()))


@pytest.mark.parametrize("weight", WEIGHT_QUANTS)
def test_weight_quantized_fcn_fused_equals_the_module(weight):
    """Weights-only schemes (the suggestive ensemble's INQ 7-bit among them): the quantized
    weight is snapshotted and the upsampling folded, the outputs match to float rounding."""
    torch.manual_seed(1)
    model = _trained(quantize_model(build_model("fcn", width=8, depth=3),
                                    {"weight": weight, "first_last": "same"}))
    fused, a, b, fa, fb = _compare(model, torch.rand(1, 3, 32, 32))
    assert all(isinstance(d, FusedNearestUp) for d in fused.dec)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * float(a.abs().max()) + 1e-7)
    torch.testing.assert_close(fb, fa, rtol=0, atol=1e-5 * float(fa.abs().max()) + 1e-7)


@pytest.mark.parametrize("act", ACT_QUANTS)
def test_activation_quantized_fcn_keeps_the_concatenation_and_matches(act):
    """With an input quantizer on the decoder convs the concatenation stays (featq's state is
    per concatenated channel); BN is still folded. A rounding-level difference may move a value
    across a quantization threshold, so almost every output, not all, must match tightly."""
    torch.manual_seed(2)
    scheme = {"weight": "dorefa", "act": act, "w_bits": 4, "first_last": "same"}  # paper a_bits
    model = _trained(quantize_model(build_model("fcn", width=8, depth=3), scheme))
    fused, a, b, _, _ = _compare(model, torch.rand(1, 3, 32, 32))
    assert all(isinstance(d, FusedUp) for d in fused.dec)
    close = (a - b).abs() <= 1e-5 * float(a.abs().max()) + 1e-6
    assert close.float().mean() >= 0.99, (act, float(close.float().mean()))


def test_folded_bn_scheme_iao():
    """IAO trains on folded weights (QuantConvBN2d, BN replaced by Identity): its eval bias is
    the layer's own folded bias."""
    torch.manual_seed(3)
    model = _trained(quantize_model(build_model("fcn", width=8, depth=3),
                                    {"weight": "iao", "w_bits": 8, "first_last": "same"}))
    fused, a, b, _, _ = _compare(model, torch.rand(1, 3, 32, 32))
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * float(a.abs().max()))


def test_upsampling_kernel_equals_a_3x3_conv_after_nearest_upsampling():
    """Direct oracle: conv3x3(up2(x)) (padding 1) against one stride-2 transposed convolution,
    and the kernel's taps against the closed form (k+1, k0 + k+1, k-1 + k0, k-1) per axis."""
    g = torch.Generator().manual_seed(4)
    x, w = torch.randn(2, 5, 6, 7, generator=g), torch.randn(3, 5, 3, 3, generator=g)
    want = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
    k = upsampling_conv_kernel(w)
    assert k.shape == (5, 3, 4, 4)
    got = F.conv_transpose2d(x, k, stride=2, padding=1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    axis = np.array([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], np.float64)  # 4 taps x (k-1, k0, k+1)
    oracle = np.einsum("ar,bc,oirc->ioab", axis, axis, w.double().numpy())
    np.testing.assert_allclose(k.double().numpy(), oracle, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="3x3"):
        upsampling_conv_kernel(torch.zeros(3, 5, 2, 2))


def test_fusing_leaves_the_trained_model_alone():
    torch.manual_seed(5)
    model = _trained(quantize_model(build_model("fcn", width=8, depth=3), {"weight": "inq"}))
    model.train()
    before = copy.deepcopy(model.state_dict())
    fused = fuse_for_inference(model)
    assert model.training and not fused.training
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a snapshot: changing the trained weights later does not change the fused copy
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y0 = fused(x)
        for p in model.parameters():
            p.add_(1.0)
        assert torch.equal(fused(x), y0)


def test_other_models_are_returned_unchanged():
    other = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    assert fuse_for_inference(other) is other


def test_nearest_up_rejects_a_skip_of_the_wrong_size():
    model = _trained(build_model("fcn", width=4, depth=2))
    up = fuse_for_inference(model).dec[0]
    with pytest.raises(ValueError, match="skip"):
        up(torch.rand(1, 8, 4, 4), torch.rand(1, 4, 7, 8))


def test_fused_copy_is_fewer_macs():
    """The 19% claim of the module docstring, counted over every convolution call: 9 MACs per
    output pixel for the upsampled half become the transposed convolution's 4."""
    from seglearn.models.macs import conv2d_macs

    model = build_model("fcn").eval()
    x = torch.rand(1, 3, 128, 128)
    trained, _ = conv2d_macs(model, x)
    fused, _ = conv2d_macs(fuse_for_inference(model), x)
    # the upsampled part of decoder stage i (output side s, input channels c_up, outputs c):
    # 9 c_up c s^2 as trained; transposed: c_up (s/2)^2 inputs x c x 16 taps = 4 c_up c s^2
    saved = 0
    for side, c_up, c in ((32, 128, 64), (64, 64, 32), (128, 32, 16)):
        saved += 9 * c_up * c * side * side - 4 * c_up * c * side * side
    assert trained - fused == saved
    assert 0.78 < fused / trained < 0.84


def test_mac_counter_against_a_closed_form():
    from seglearn.models.macs import conv2d_macs

    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    macs, y = conv2d_macs(conv, torch.rand(2, 3, 10, 12))
    assert y.shape == (2, 8, 10, 12)
    assert macs == 2 * 8 * 10 * 12 * 3 * 9
    up = nn.ConvTranspose2d(3, 8, 2, stride=2, bias=False)
    macs, y = conv2d_macs(up, torch.rand(2, 3, 10, 12))
    assert y.shape == (2, 8, 20, 24)
    assert macs == 2 * 8 * 20 * 24 * 3  # 2x2 stride 2: each output pixel meets one tap


def test_frozen_copy_equals_the_module_at_sizes_other_than_the_trace():
    from seglearn.models.fused import FrozenFCN

    torch.manual_seed(6)
    model = _trained(quantize_model(build_model("fcn", width=8, depth=3),
                                    {"weight": "inq", "w_bits": 7, "first_last": "same"}))
    frozen = fuse_for_inference(model, freeze=True)
    assert isinstance(frozen, FrozenFCN) and frozen.multiple == model.multiple
    for shape in [(1, 3, 16, 16), (2, 3, 24, 40), (1, 3, 64, 32)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            a, fa = model.forward_features(x)
            b, fb = frozen.forward_features(x)
        assert b.shape == a.shape and fb.shape == fa.shape
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * float(a.abs().max()))
        torch.testing.assert_close(fb, fa, rtol=0, atol=1e-5 * float(fa.abs().max()))


def test_activation_quantized_models_are_not_frozen():
    """Tracing would bake a quantizer's Python-side range (IAO before calibration) into the graph."""
    model = quantize_model(build_model("fcn", width=4, depth=2),
                           {"weight": "iao", "act": "iao", "first_last": "same"}).eval()
    assert isinstance(fuse_for_inference(model, freeze=True), FusedFCN)


@pytest.mark.parametrize("scheme", [None, {"weight": "inq", "w_bits": 7, "first_last": "same"}])
def test_ensemble_runs_its_fused_copies_with_the_members_results(scheme):
    from seglearn.models.checkpoint import make_model
    from seglearn.models.ensemble import Ensemble
    from seglearn.config import ModelConfig

    torch.manual_seed(7)
    members = [_trained(make_model(ModelConfig(width=4, depth=3), scheme), seed=i) for i in range(3)]
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    plain = Ensemble(members, [], 1, "suggestive", fuse=False)
    fast = Ensemble(members, [], 1, "suggestive")
    for scale in (1.0, 0.5):
        p0, d0 = plain.predict(image, scale=scale)
        p1, d1 = fast.predict(image, scale=scale)
        assert p0.shape == p1.shape == (3, 1, 40, 56) and d1.shape == (16,)
        np.testing.assert_allclose(p1, p0, rtol=0, atol=1e-5)
        np.testing.assert_allclose(d1, d0, rtol=1e-5, atol=1e-6)
    assert plain.inference_members() is members
    assert all(type(m).__name__ == "FrozenFCN" for m in fast.inference_members())
    assert fast.inference_members() is fast.inference_members()  # made once
