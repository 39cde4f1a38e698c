"""Integer encodings of a quantized conv's weights and of its input activation codes.

Weights: every quantizer in the zoo yields fake-quantized weights ``W_fq`` that are
``s_w[o] * W_int[o]`` with small integers ``W_int`` (``QuantInfo`` codes minus zero point, scale per
output channel or per layer). The candidate is checked against ``W_fq`` (the tensor the torch model
really uses); if the check fails (SYQ's per-position alpha, CLIP-Q's bin means, float weights) the
weights are *re-encoded*: ``W_int = round(W_fq / s_o)``, ``s_o = max|W_fq[o]| / qmax`` with the
largest ``qmax <= 2^15 - 1`` whose worst-case accumulator still fits int32 (documented
approximation; measured agreement in tests/export). INQ powers of two whose exponents span more
than the int32 budget allows (7-bit INQ spans 2^31) get an exponent floor ``e_min`` raised until the
bound fits; weights below ``2^(e_min - 1)`` then round to 0 (also measured).

The kernel is chosen from the integer values: all +-1 -> binary, {-1, 0, 1} -> ternary, DoReFa's
odd offset codes ``2u - (2^m - 1)`` -> bit-plane offset, powers of two beyond int8 -> shift-and-add,
|W_int| <= 127 -> int8, anything else -> the general table conv.

Activations: the consumer's quantizer gives real levels per channel (C, L). Affine levels
``s (j - z)`` with integer z (IAO, DoReFa, SYQ, HWGQ) are used as codes with zero point z; the
two levels ``{-a, +a}`` (BinaryNet sign) are +-1 bits; anything else (TSQ's Lloyd levels, featq's
per-channel steps, featq power) goes through a per-channel table ``v = round(level / delta)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from seglearn.runtime.checks import INT32_MAX

QMAX_REENCODE = 2**15 - 1
LUT_BITS = 14  # table values span +-2^14: relative error <= 2^-15 of the largest level


@dataclass
class WeightEnc:
    """``W_real[o] = s_w[o] * w_int[o]``; ``w_int`` (Cout, Cin, kh, kw) int64; ``exact`` False if re-encoded."""

    w_int: np.ndarray
    s_w: np.ndarray
    exact: bool
    note: str = ""
    kind: str = "int"  # binary | ternary | offset | pow2 | int8 | lut
    extra: dict = field(default_factory=dict)


def fake_quant_weight(conv) -> torch.Tensor:
    """The weight the torch forward uses, laid out (out, in, kh, kw)."""
    with torch.no_grad():
        if hasattr(conv, "quant_weight_view"):
            view = conv.quant_weight_view()
            return (conv.weight_quant(view) if conv.weight_quant is not None else view).detach()
        w = conv.weight.detach()
        return w.transpose(0, 1) if isinstance(conv, torch.nn.ConvTranspose2d) else w


def _per_channel(v, cout: int) -> np.ndarray | None:
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        return np.full(cout, float(a))
    if a.shape == (cout,):
        return a
    return None


def _from_info(conv, w_fq: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact ``(w_int, s_w)`` from the weight quantizer's QuantInfo, or None."""
    if getattr(conv, "weight_quant", None) is None:
        return None
    try:
        info = conv.export_weight_info()
    except (ValueError, NotImplementedError):
        return None
    if info.codes is None:
        return None
    codes = np.asarray(info.codes, dtype=np.float64)
    if codes.shape != w_fq.shape:
        return None
    cout = w_fq.shape[0]
    if info.levels is not None and np.ndim(info.levels) == 1 and info.method != "dorefa":
        vals = np.asarray(info.levels, dtype=np.float64)[codes.astype(np.int64)]
        nz = np.abs(vals[vals != 0])
        if nz.size == 0:
            return np.zeros_like(codes, dtype=np.int64), np.zeros(cout)
        m, e = np.frexp(nz)
        if not np.all(m == 0.5):  # not powers of two (CLIP-Q bin means): no exact integer form
            return None
        s = 2.0 ** (int(e.min()) - 1)
        return np.round(vals / s).astype(np.int64), np.full(cout, s)
    if info.axis not in (0, None):
        return None
    s = _per_channel(info.scale, cout)
    zp = _per_channel(info.zero_point, cout)
    if s is None or zp is None:
        return None
    twice = np.round(2 * zp)
    if not np.allclose(twice, 2 * zp):
        return None
    if np.all(twice % 2 == 0):
        return np.round(codes - (twice / 2)[:, None, None, None]).astype(np.int64), s
    return np.round(2 * codes - twice[:, None, None, None]).astype(np.int64), s / 2


def _matches(w_int, s_w, w_fq) -> bool:
    rec = s_w[:, None, None, None] * w_int
    tol = 1e-6 * max(float(np.abs(w_fq).max()), 1e-30)
    return bool(np.all(np.abs(rec - w_fq) <= tol))


def exact_codes(conv, w_fq: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(w_int, s_w)`` with ``s_w[o] w_int[o] == W_fq[o]`` from the QuantInfo, or None.

    The QuantInfo's codes are recomputed in float64, while the forward pass rounds ``W / S`` in
    float32: a weight at a rounding tie can land one code apart (IAO, large layers). Then the codes
    are taken from ``W_fq`` itself, ``round(W_fq / s_w)``, accepted only if they reproduce ``W_fq``
    and stay within the QuantInfo's own code range.
    """
    cand = _from_info(conv, w_fq)
    if cand is None:
        return None
    if _matches(cand[0], cand[1], w_fq):
        return cand
    s = np.where(cand[1] > 0, cand[1], 1.0)
    w2 = np.round(w_fq / s[:, None, None, None]).astype(np.int64)
    if _matches(w2, cand[1], w_fq) and np.abs(w2).max() <= np.abs(cand[0]).max():
        return w2, cand[1]
    return None


def reencode(w_fq: np.ndarray, xmax: int) -> WeightEnc:
    """``W_int = round(W / s_o)``, ``s_o = max|W_o| / qmax``, qmax as large as int32 allows."""
    k = int(np.prod(w_fq.shape[1:]))
    qmax = int(min(QMAX_REENCODE, INT32_MAX // max(1, xmax * k)))
    if qmax < 1:
        raise ValueError(f"a conv with {k} inputs per output cannot be re-encoded within int32")
    m = np.abs(w_fq).reshape(w_fq.shape[0], -1).max(1)
    s = np.where(m > 0, m / qmax, 1.0)
    w_int = np.round(w_fq / s[:, None, None, None]).astype(np.int64)
    return WeightEnc(w_int, s, exact=False, note=f"re-encoded to {qmax.bit_length() + 1}-bit integers",
                     kind="lut")


def pow2_floor(w_int: np.ndarray, s_w: np.ndarray, xmax: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Raise the exponent floor of power-of-two weights until ``xmax sum|w| <= int32`` and shifts <= 30.

    Returns ``(w, s_w * 2^shift, shift == 0)``: ``w = sign * floor(|w_int| / 2^shift + 1/2)``, so
    the exponents below the floor round to 0 or up to it (a 7-bit INQ layer spans ~31 exponents;
    with 3x3x64 taps of uint8 codes only the top ~15 fit int32)."""
    shift = 0
    while True:
        w = np.sign(w_int) * np.floor(np.abs(w_int) / 2.0**shift + 0.5).astype(np.int64)
        top = int(np.abs(w).max()) if w.size else 0
        bound = xmax * int(np.abs(w).reshape(w.shape[0], -1).sum(1).max()) if w.size else 0
        if top <= 2**30 and bound <= INT32_MAX:
            return w, s_w * 2.0**shift, shift == 0
        shift += 1


def encode_weight(conv, xmax: int, input_kind: str, bits_in: int) -> WeightEnc:
    """Integer weights of ``conv`` and the kernel to run them with (see the module docstring).

    ``xmax``: largest |integer operand| of the input; ``input_kind``: affine0 (codes, zero point 0),
    affine (zero point != 0), pm1 (+-1 bits) or lut; ``bits_in``: code bit width.
    """
    w_fq = fake_quant_weight(conv).double().cpu().numpy()
    cand = exact_codes(conv, w_fq)
    if cand is None:
        return reencode(w_fq, xmax)
    w_int, s_w = cand
    vals = np.unique(w_int)
    k = int(np.prod(w_fq.shape[1:]))
    if set(vals.tolist()) <= {-1, 1} and input_kind in ("pm1", "affine0"):
        return WeightEnc(w_int, s_w, True, kind="binary")
    if set(vals.tolist()) <= {-1, 0, 1} and input_kind == "affine0":
        return WeightEnc(w_int, s_w, True, kind="ternary")
    if input_kind in ("pm1", "lut"):
        if lut_fits(w_int, xmax):
            return WeightEnc(w_int, s_w, True, kind="lut")
        return reencode(w_fq, xmax)
    amax = int(np.abs(vals).max()) if vals.size else 0
    m = max(1, amax.bit_length())
    k_pad = 64 * -(-w_fq.shape[1] // 64) * w_fq.shape[2] * w_fq.shape[3]  # the kernel's own bound
    if (input_kind == "affine0" and np.all(vals % 2 != 0) and amax == 2**m - 1 and m <= 8
            and k_pad * (2**bits_in - 1) * 2 * (2**m - 1) <= INT32_MAX):
        u = (w_int + amax) // 2
        return WeightEnc(w_int, s_w, True, kind="offset", extra={"u": u, "m": m})
    if amax <= 127 and 255 * int(np.abs(w_int).reshape(w_int.shape[0], -1).sum(1).max()) <= INT32_MAX:
        return WeightEnc(w_int, s_w, True, kind="int8")
    nz = np.abs(w_int[w_int != 0])
    if nz.size and np.all((nz & (nz - 1)) == 0):  # powers of two: shift-and-add
        w2, s2, exact = pow2_floor(w_int, s_w, 255)
        note = "" if exact else "power-of-two exponent floor raised to fit int32"
        return WeightEnc(w2, s2, exact, note=note, kind="pow2")
    if lut_fits(w_int, xmax):
        return WeightEnc(w_int, s_w, True, kind="lut")
    return reencode(w_fq, xmax)


def lut_fits(w_int: np.ndarray, xmax: int) -> bool:
    return xmax * int(np.abs(w_int).reshape(w_int.shape[0], -1).sum(1).max()) <= INT32_MAX


# ----------------------------------------------------------------------------- activations

@dataclass
class ActEnc:
    """How the consumer's input codes become kernel operands: real = ``s_x * table[c, code]``."""

    kind: str  # affine0 | affine | pm1 | lut
    s_x: float
    zp: int
    bits: int
    table: np.ndarray  # (C, L) int64 operand per code
    exact: bool = True


def encode_act(levels: np.ndarray, bits: int) -> ActEnc:
    """Classify per-channel ``levels`` (C, L) ascending (see the module docstring)."""
    levels = np.asarray(levels, dtype=np.float64)
    c, n = levels.shape
    j = np.arange(n, dtype=np.float64)
    same = np.allclose(levels, levels[:1], rtol=0, atol=1e-12 * max(1.0, np.abs(levels).max()))
    if same and n >= 2:
        row = levels[0]
        s = row[1] - row[0]
        if s > 0:
            z = -row[0] / s
            zi = int(np.round(z))
            if abs(z - zi) < 1e-6 and 0 <= zi < n and np.allclose(row, s * (j - zi), rtol=1e-9, atol=1e-12):
                table = np.broadcast_to(np.arange(n) - zi, (c, n)).astype(np.int64)
                return ActEnc("affine0" if zi == 0 else "affine", float(s), zi, bits, table)
        if n == 2 and np.isclose(row[0], -row[1]) and row[1] > 0:
            table = np.broadcast_to(np.array([-1, 1]), (c, 2)).astype(np.int64)
            return ActEnc("pm1", float(row[1]), 0, 1, table)
    top = float(np.abs(levels).max())
    delta = top / 2**LUT_BITS if top > 0 else 1.0
    table = np.round(levels / delta).astype(np.int64)
    exact = bool(np.allclose(table * delta, levels, rtol=0, atol=1e-12 * max(top, 1.0)))
    return ActEnc("lut", delta, 0, bits, table, exact)
