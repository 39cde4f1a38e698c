"""Every registered quantizer, every kind it has: the contract in seglearn/quant/base.py.

Parametrised over the registry, so a method is covered the day it is registered.
"""

import importlib.util
import io

import numpy as np
import pytest
import torch

from seglearn.quant import QUANTIZERS, get_quantizer, list_quantizers
from seglearn.quant.base import QuantInfo, Quantizer

PART_A = ["binarynet", "twn", "dorefa", "inq", "clipq", "hwgq"]
PART_B = ["elq", "featq", "iao", "syq", "tsq"]
CASES = [(name, kind) for name in list_quantizers() for kind in QUANTIZERS.get(name).kinds()]


def test_part_a_methods_are_registered():
    assert set(PART_A) <= set(list_quantizers())


@pytest.mark.parametrize("name", PART_B)
def test_part_b_method_registered_once_its_module_exists(name):
    if importlib.util.find_spec(f"seglearn.quant.{name}") is None:
        pytest.skip(f"seglearn/quant/{name}.py not written yet")
    assert name in list_quantizers()


def _weight(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(6, 4, 3, 3, generator=g) * 0.2).requires_grad_(True)


def _act(seed=0):
    g = torch.Generator().manual_seed(seed)
    # post-BN-like values plus a [0, 1]-range share, so [0,1]-clipping quantizers see signal too
    return (torch.randn(2, 4, 6, 6, generator=g) * 0.8 + 0.4).requires_grad_(True)


def _input(kind, seed=0):
    return _weight(seed) if kind == "weight" else _act(seed)


def _prepared(name, kind):
    """A quantizer that has seen one training batch (EMA ranges, lazy parameters) then in eval."""
    q = get_quantizer(name, kind=kind)
    assert isinstance(q, Quantizer) and q.kind == kind and q.method == name
    q.train()
    q(_input(kind, seed=1))
    return q.eval()


@pytest.mark.parametrize("name,kind", CASES)
def test_shape_and_gradient_reach_full_precision(name, kind):
    q = get_quantizer(name, kind=kind).train()
    x = _input(kind)
    y = q(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name,kind", [c for c in CASES if c[1] == "weight"])
def test_weight_codes_and_forward_agree_with_export(name, kind):
    q = _prepared(name, kind)
    w = _weight()
    y = q(w).detach().double().numpy()
    info = q.export_info(w)
    assert isinstance(info, QuantInfo) and info.kind == "weight" and info.bits == q.bits
    assert info.codes is not None and info.codes.shape == tuple(w.shape)
    assert np.issubdtype(info.codes.dtype, np.integer)
    assert len(np.unique(info.codes)) <= 2**info.bits
    np.testing.assert_allclose(info.dequantize(), y, rtol=1e-5, atol=1e-6)


def _group_along(a: np.ndarray, axis: int | None):
    return [a] if axis is None else [np.take(a, i, axis=axis) for i in range(a.shape[axis])]


@pytest.mark.parametrize("name,kind", [c for c in CASES if c[1] == "act"])
def test_act_values_lie_on_the_exported_grid(name, kind):
    q = _prepared(name, kind)
    x = _act()
    y = q(x).detach().double().numpy()
    info = q.export_info(x)
    assert isinstance(info, QuantInfo) and info.kind == "act" and info.bits == q.bits
    for group in _group_along(y, 1):  # per channel: at most 2^bits values
        assert len(np.unique(np.round(group, 6))) <= 2**info.bits
    if info.levels is not None and np.ndim(info.levels) == 1:
        levels = np.asarray(info.levels, dtype=np.float64)
        dist = np.abs(y[..., None] - levels).min(-1)
        assert dist.max() <= 1e-5 * max(1.0, np.abs(levels).max())
    else:  # uniform: y / scale + zero_point is an integer code (scale per channel along axis)
        scale = np.asarray(info.scale, dtype=np.float64)
        zp = np.asarray(info.zero_point, dtype=np.float64)
        if scale.ndim == 1 and info.axis is not None:
            shape = [1] * y.ndim
            shape[info.axis] = -1
            scale = scale.reshape(shape)
            zp = zp.reshape(shape) if zp.ndim == 1 else zp
        code = y / scale + zp
        np.testing.assert_allclose(code, np.round(code), atol=1e-3)


@pytest.mark.parametrize("name,kind", CASES)
def test_state_dict_round_trip(name, kind):
    q = _prepared(name, kind)
    with torch.no_grad():
        for p in q.parameters():  # move learned parameters off their initial values
            p.mul_(1.25)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    q2 = get_quantizer(name, kind=kind)
    q2.load_state_dict(torch.load(buf, weights_only=True))
    q2.eval()
    x = _input(kind, seed=2)
    assert torch.equal(q(x), q2(x))


@pytest.mark.parametrize("name,kind", CASES)
@pytest.mark.parametrize("bits", [0, -2, 2.5, "four"])
def test_bad_bits_raise_value_error(name, kind, bits):
    with pytest.raises(ValueError):
        get_quantizer(name, kind=kind, bits=bits)


@pytest.mark.parametrize("name", list_quantizers())
def test_missing_kind_names_the_kinds_it_has(name):
    kinds = QUANTIZERS.get(name).kinds()
    for missing in {"weight", "act"} - set(kinds):
        with pytest.raises(ValueError, match=kinds[0]):
            get_quantizer(name, kind=missing)
    with pytest.raises(ValueError, match="kind must be"):
        get_quantizer(name, kind="bias")


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="twn"):
        get_quantizer("no-such-method")
