"""DoReFa: tanh weight mapping, 1-bit weights, [0,1] activations, gradient quantization."""

import numpy as np
import pytest
import torch

from seglearn.quant import get_quantizer
from seglearn.quant.dorefa import DoReFaGrad, dorefa_quantize_grad


@pytest.mark.parametrize("k", [2, 3, 4])
def test_weight_tanh_mapping_and_level_count(k):
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    n = 2**k - 1
    t = np.tanh(w.numpy())
    wp = t / (2 * np.abs(t).max()) + 0.5
    expect = 2 * np.round(n * wp) / n - 1
    q = get_quantizer("dorefa", kind="weight", bits=k)
    y = q(w).numpy()
    np.testing.assert_allclose(y, expect, atol=1e-12)
    assert len(np.unique(y)) <= 2**k and y.min() >= -1 and y.max() <= 1
    # the extreme weight maps to +-1 exactly
    assert np.isclose(np.abs(y).max(), 1.0)
    info = q.export_info(w)
    assert info.codes.min() >= 0 and info.codes.max() <= n
    np.testing.assert_allclose(info.dequantize(), expect, atol=1e-12)
    # the signed odd-code form used by the kernels: (2u - n) * (1/n)
    np.testing.assert_allclose((2 * info.codes - n) / n, expect, atol=1e-12)


def test_weight_one_bit_is_sign_times_mean_abs():
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    y = get_quantizer("dorefa", kind="weight", bits=1)(w)
    e = np.abs(w.detach().numpy()).mean()
    np.testing.assert_allclose(y.detach().numpy(), np.where(w.detach().numpy() >= 0, e, -e))
    g = torch.randn_like(y)
    (y * g).sum().backward()
    # E is a constant (stop_gradient) and the sign is identity-STE: dW = E * g
    np.testing.assert_allclose(w.grad.numpy(), e * g.numpy())


@pytest.mark.parametrize("k", [1, 2, 4])
def test_act_quantizes_clipped_input(k):
    x = (torch.randn(2, 3, 5, 5, dtype=torch.float64) * 0.8 + 0.5).requires_grad_(True)
    y = get_quantizer("dorefa", kind="act", bits=k)(x)
    n = 2**k - 1
    xn = x.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), np.round(n * np.clip(xn, 0, 1)) / n)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), ((xn >= 0) & (xn <= 1)).astype(float))


def test_gradient_quantization_grid_and_unbiasedness():
    g = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    k = 4
    n = 2**k - 1
    gen = torch.Generator().manual_seed(1)
    gq = dorefa_quantize_grad(g, k, gen).numpy()
    m = np.abs(g.numpy()).reshape(3, -1).max(1)[:, None, None, None]
    u = (gq / (2 * m) + 0.5) * n  # must be integer codes 0..n
    np.testing.assert_allclose(u, np.round(u), atol=1e-9)
    assert u.min() > -1e-9 and u.max() < n + 1e-9
    # stochastic rounding: the average over many draws approaches the gradient
    mean = np.mean([dorefa_quantize_grad(g, k, gen).numpy() for _ in range(300)], axis=0)
    assert np.abs(mean - g.numpy()).max() < 0.15 * m.max()
    # as a module: identity forward, quantized backward
    x = torch.randn(2, 4, requires_grad=True)
    mod = DoReFaGrad(bits=2, seed=0)
    y = mod(x)
    assert torch.equal(y, x)
    y.backward(torch.tensor([[0.5, -1.0, 0.2, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    assert x.grad[1].tolist() == [1.0, 1.0, 1.0, 1.0]  # a constant row is already on the grid
    assert set(np.round(x.grad[0].numpy() * 3 / 2, 6)) <= {-1.5, -0.5, 0.5, 1.5}


def test_bad_bits():
    with pytest.raises(ValueError, match="dorefa"):
        get_quantizer("dorefa", kind="act", bits=0)


@pytest.mark.parametrize("k", [2, 4])
def test_grad_module_backward_matches_numpy_oracle_with_fixed_noise(k):
    """METHODS.md dorefa: dr_q = 2 m [quantize_k(dr / (2 m) + 1/2 + N(k)) - 1/2], m = max|dr| per
    sample, N(k) ~ U(-0.5, 0.5) / (2^k - 1); the noise is the seeded generator's first draw."""
    torch.manual_seed(0)
    g = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    g[1] *= 7.0  # a different max per sample
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    mod = DoReFaGrad(bits=k, seed=11).train()
    mod(x).backward(g)
    u01 = torch.rand(g.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64).numpy()
    n = 2**k - 1
    gn = g.numpy()
    m = np.abs(gn).reshape(3, -1).max(1)[:, None, None, None]
    r = np.clip(gn / (2 * m) + 0.5 + (u01 - 0.5) / n, 0.0, 1.0)
    expect = 2 * m * (np.round(n * r) / n - 0.5)
    np.testing.assert_allclose(x.grad.numpy(), expect, rtol=0, atol=1e-12)
    assert not np.allclose(x.grad.numpy(), gn)  # it really quantized
    # eval mode (export, inference): the identity, no gradient change
    x.grad = None
    mod.eval()(x).backward(g)
    assert torch.equal(x.grad, g)


def test_grad_generator_lives_on_the_tensor_device():
    mod = DoReFaGrad(bits=4, seed=3)
    assert mod.generator("cpu").device.type == "cpu"
    assert DoReFaGrad(bits=4).generator("cpu") is None  # unseeded: torch's default generator
    if torch.cuda.is_available():
        x = torch.randn(2, 3, 4, 4, device="cuda", requires_grad=True)
        mod.train()(x).sum().backward()
        assert mod.generator("cuda").device.type == "cuda" and x.grad.device.type == "cuda"


def test_scheme_g_bits_inserts_grad_quant_on_scheme_convs_only():
    from seglearn.models import FCN
    from seglearn.quant.convert import quantize_model

    model = quantize_model(FCN(3, width=4, depth=2), {"weight": "dorefa", "act": "dorefa", "g_bits": 6})
    convs = {n: m for n, m in model.named_modules() if hasattr(m, "grad_quant")}
    edges = {"enc.0.0.0", "head"}  # first_last iao8: DoReFa leaves the first and last layers alone
    assert {n for n, m in convs.items() if m.grad_quant is None} == edges
    assert all(isinstance(m.grad_quant, DoReFaGrad) and m.grad_quant.bits == 6
               for n, m in convs.items() if n not in edges)
    plain = quantize_model(FCN(3, width=4, depth=2), {"weight": "dorefa", "act": "dorefa"})
    assert all(m.grad_quant is None for m in plain.modules() if hasattr(m, "grad_quant"))
    assert set(model.state_dict()) == set(plain.state_dict())  # no new state: checkpoints unchanged
    over = quantize_model(FCN(3, width=4, depth=2), {"weight": "dorefa", "g_bits": 6,
                                                     "layers": {"enc.1.*": {"g_bits": None}}})
    assert over.get_submodule("enc.1.0.0").grad_quant is None
    assert over.get_submodule("enc.0.1.0").grad_quant is not None
    for bad in (0, 2.5, "8"):
        with pytest.raises(ValueError, match="g_bits"):
            quantize_model(FCN(3, width=4, depth=2), {"weight": "dorefa", "g_bits": bad})


def test_fit_with_g_bits_quantizes_every_scheme_conv_gradient(monkeypatch):
    import seglearn.quant.dorefa as dorefa_mod
    from seglearn.config import TrainConfig
    from seglearn.models import FCN
    from seglearn.quant.convert import quantize_model
    from seglearn.train.engine import fit

    k = 3
    seen = []
    real = dorefa_mod.dorefa_quantize_grad

    def spy(g, bits, generator=None):
        out = real(g, bits, generator)
        seen.append((g.shape, bits))
        m = g.abs().reshape(g.shape[0], -1).amax(1).reshape(-1, *([1] * (g.dim() - 1)))
        codes = (out / (2 * m) + 0.5) * (2**bits - 1)  # on the k-bit grid of each sample's max
        assert torch.allclose(codes, codes.round(), atol=1e-4)
        return out

    monkeypatch.setattr(dorefa_mod, "dorefa_quantize_grad", spy)
    torch.manual_seed(0)
    model = quantize_model(FCN(3, width=4, depth=2), {"weight": "dorefa", "act": "dorefa", "g_bits": k})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.rand(2, 3, 16, 16)
    batches = [{"image": x, "target": (x[:, :1] > 0.5).float()}]
    cfg = TrainConfig(steps=3, lr=1e-2, bf16=False, channels_last=False, device="cpu",
                      checkpoint_every=1000)
    res = fit(model, batches, cfg, progress=False)
    assert len(seen) == 3 * 5 and all(b == k for _, b in seen)  # 5 scheme convs x 3 steps
    assert np.isfinite(res.losses).all()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
