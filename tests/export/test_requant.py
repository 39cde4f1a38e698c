"""The gemmlowp requantize path of the lowering and the packed binary chains (export.optimize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seglearn.export.lower import lower_fcn
from seglearn.models.fcn import FCN
from seglearn.quant.convert import quantize_model
from seglearn.runtime import graph as G
from seglearn.runtime.bitpack import pack_bits, unpack_bits
from seglearn.runtime.checks import KernelError

from .conftest import to_tensor, train_briefly


def test_requant_kernel_matches_float_oracle_and_fast_equals_ref():
    rng = np.random.default_rng(0)
    acc = rng.integers(-5000, 5000, (5, 7, 6)).astype(np.int32)
    sign = np.array([1, -1, 1, -1, 1, 1], np.int8)
    bias = rng.integers(-20000, 20000, 6).astype(np.int32)
    m = rng.uniform(0.001, 0.02, 6)
    m[2] = 1.7  # M >= 1: a saturating left shift
    from seglearn.runtime.fixedpoint import quantize_multipliers

    m0, sh = quantize_multipliers(m)
    for k, zp, lo in ((0, 10, 0), (np.array([3, 0, 5, 1, 2, 3]), 128, 128)):
        ref = G.requant_ref(acc, sign, bias, m0, sh, zp, lo, 255, k)
        np.testing.assert_array_equal(ref, G.requant_fast(acc, sign, bias, m0, sh, zp, lo, 255, k))
        real = m * (sign * (acc.astype(np.float64) * 2**k) + bias)
        oracle = np.clip(np.round(real) + zp, lo, 255)
        near_tie = np.abs(real - np.floor(real) - 0.5) < 1e-6
        assert np.all((ref == oracle) | near_tie)
        assert 0 < np.mean(ref == 255) < 1 or 0 < np.mean(ref == lo) < 1  # the clamp is exercised
    big = np.full((1, 1, 6), 2**30, np.int32)  # (acc << 2) saturates to INT32_MAX in both kernels
    np.testing.assert_array_equal(G.requant_ref(big, sign, bias, m0, sh, 0, 0, 255, 2),
                                  G.requant_fast(big, sign, bias, m0, sh, 0, 0, 255, 2))
    with pytest.raises(KernelError, match="in_shift"):
        G.requant_ref(acc, sign, bias, m0, sh, 0, 0, 255, 40)


def test_concat_packed_equals_unpacked_concat():
    rng = np.random.default_rng(1)
    for chans in ((64, 32), (32, 40), (128, 64, 5)):
        bits = [rng.integers(0, 2, (3, 4, c)).astype(np.uint8) for c in chans]
        got = G.concat_packed([pack_bits(b) for b in bits], list(chans))
        np.testing.assert_array_equal(unpack_bits(got, sum(chans)), np.concatenate(bits, -1))


@pytest.fixture(scope="module")
def iao_model(data):
    imgs, masks = data
    torch.manual_seed(0)
    return train_briefly(quantize_model(FCN(3, width=4, depth=2), {"weight": "iao", "act": "iao"}),
                         imgs, masks, steps=12)


def test_iao_lowers_to_requant_not_thresholds(iao_model, data):
    graph, arrays, _ = lower_fcn(iao_model)
    kinds = [op["op"] for op in graph["ops"]]
    assert "threshold" not in kinds and kinds.count("conv_int8_requant") >= 4
    # the codes entering enc.0.1 equal torch's IAO codes of that conv's input on >= 99% of entries,
    # and never differ by more than one step (bias rounding and float order move only near-ties)
    first = next(op for op in graph["ops"] if op["op"] == "conv_int8_requant")
    g = dict(graph, outputs={"codes": first["out"]})
    img = data[0][0]
    codes = G.run(g, arrays, img, "ref")["codes"].astype(np.int64)
    conv = iao_model.enc[0][1][0]
    seen = {}
    h = conv.act_quant.register_forward_hook(lambda m, a, out: seen.setdefault("x", out))
    with torch.no_grad():
        iao_model(to_tensor(img))
    h.remove()
    s, z = conv.act_quant.params()
    want = np.round(seen["x"][0].numpy().transpose(1, 2, 0) / s + z).astype(np.int64)
    assert np.abs(codes - want).max() <= 1
    assert np.mean(codes == want) >= 0.99
    assert len(np.unique(want)) > 10  # the codes are not trivial


def test_binary_layers_chain_packed(data):
    imgs, masks = data
    torch.manual_seed(0)
    scheme = {"weight": "binarynet", "act": "binarynet", "first_last": "iao8"}
    model = train_briefly(quantize_model(FCN(3, width=4, depth=3), scheme), imgs[:2], masks[:2], steps=2)
    graph, arrays, _ = lower_fcn(model)
    ops = graph["ops"]
    binary = [op for op in ops if op["op"] in ("conv_binary", "conv_binary_threshold")]
    assert len(binary) == 9  # every conv but the first and the head (6 + 4 + 1 convs)
    assert all(op["attrs"].get("packed") for op in binary)  # no unpacking between binary layers
    assert not any(op["op"] == "maxpool" for op in ops)
    assert sum(op["op"] == "conv_binary_threshold" for op in ops) == 8
    # the last binary conv feeds the 8-bit head through its sign (BN + sign as one threshold op:
    # BinaryNet's classifier reads binary activations), the only unpacked threshold in the graph
    (th,) = [op for op in ops if op["op"] == "threshold"]
    assert th["in"] == [binary[-1]["out"]] and ops[-1]["in"] == [th["out"]]
    img = np.ascontiguousarray(imgs[0][:32, :32])
    np.testing.assert_array_equal(G.run(graph, arrays, img, "ref")["logits"],
                                  G.run(graph, arrays, img, "fast")["logits"])
