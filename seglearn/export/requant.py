"""gemmlowp requantization of an int32 accumulator for a round-to-nearest affine consumer (IAO).

A lowered conv gives ``y = A acc + B`` per channel (``bnfold``); a consumer quantizer with affine
levels ``S (j - Z)``, ``j = 0 .. n-1``, that rounds to the nearest level (IAO, Jacob et al. 2018,
arXiv 1712.05877, section 2.2) gives ``code = clamp(round(y / S) + Z, 0, n - 1)``. With
``sigma = sign(A)`` and ``2^k`` fractional bits for the bias,

    y / S = M (sigma (acc << k) + bias),   M = |A| / (S 2^k),   bias = round(2^k B / |A|),

so ``code = clamp(Z + MultiplyByQuantizedMultiplier(v, M0, shift), lo, n - 1)`` with
``v = sigma (acc << k) + bias`` and ``(M0, shift) = fixedpoint.quantize_multipliers(M)``: integers
only. A ReLU before the quantizer is ``lo = Z`` (the code of 0), else ``lo = 0``.
Error: the bias rounds by at most 1/2 of ``2^-k`` acc units, i.e. ``M / 2^(k+1)`` codes, which
moves a code step past an integer acc for about that fraction of entries. Per channel, ``k = 0``
when ``M / 2 <= 2^-8`` already (typical int8 convs, ``M ~ S_x S_w / S_y`` far below 1: fusable
into ``conv2d_int8_requant``), else ``k = 24`` lowered until ``2^k bound + |bias|`` fits int32. Thresholds (``lower.step_thresholds``) stay the fallback:
non-uniform levels, a dead channel (``A = 0``), or a multiplier outside the Q31 range.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seglearn.export.encode import encode_act
from seglearn.runtime.checks import INT32_MAX
from seglearn.runtime.fixedpoint import MAX_SHIFT, quantize_multipliers

MAX_IN_SHIFT = 24
BIAS_ERROR = 2.0**-8  # largest bias rounding error accepted, in output codes, before trying k + 1


def _quant_eval(q: nn.Module, x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(1, 1, -1, 1)
    with torch.no_grad():
        return q(t).reshape(-1).double().numpy()


def affine_rounding(q: nn.Module, lv: np.ndarray) -> tuple[float, int, int] | None:
    """``(S, Z, n)`` if ``q`` is ``clamp(round(x / S) + Z, 0, n - 1)`` on its levels ``lv`` (C, n), else None.

    The levels must be affine with an integer zero point (``encode_act``) and ``n <= 256``; the
    rounding is checked on ``q`` itself at 0.1 S either side of every midpoint and beyond both ends.
    """
    if lv.shape[1] > 256:
        return None
    enc = encode_act(lv, max(1, int(np.ceil(np.log2(lv.shape[1])))))
    if not enc.kind.startswith("affine"):
        return None
    s, z, n = enc.s_x, enc.zp, lv.shape[1]
    j = np.arange(n - 1, dtype=np.float64)
    lo_side, hi_side = s * (j - z + 0.4), s * (j - z + 0.6)
    ends = np.array([s * (-z - 3.0), s * (n - 1 - z + 3.0)])
    x = np.concatenate([lo_side, hi_side, ends])
    want = np.concatenate([s * (j - z), s * (j + 1 - z), [s * -z, s * (n - 1 - z)]])
    if not np.allclose(_quant_eval(q, x), want, rtol=0, atol=1e-4 * s):
        return None
    return float(s), int(z), int(n)


def requant_params(src, q: nn.Module, lv: np.ndarray) -> dict | None:
    """attrs/arrays of a ``requant`` op reading ``src`` (a ``lower.Producer``) for consumer ``q``, or None."""
    aff = affine_rounding(q, lv)
    if aff is None:
        return None
    s, z, n = aff
    A, B = np.asarray(src.A, np.float64), np.asarray(src.B, np.float64)
    if np.any(A == 0) or not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
        return None
    absA = np.abs(A)
    m = absA / s
    need = np.maximum(0, np.ceil(np.log2(np.maximum(0.5 * m / BIAS_ERROR, 1e-300)))).astype(np.int64)
    k = np.where(need > 0, MAX_IN_SHIFT, 0)
    bias = np.zeros_like(B)
    for _ in range(MAX_IN_SHIFT + 2):  # lower k per channel until (bound << k) + |bias| fits int32
        bias = np.round(B * 2.0**k / absA)
        over = (src.bound * 2.0**k + np.abs(bias)) > INT32_MAX
        if not over.any():
            break
        if np.any(over & (k == 0)):
            return None
        k = np.where(over, k - 1, k)
    mk = m / 2.0**k
    if np.any(mk >= 2.0**MAX_SHIFT):
        return None
    m0, shift = quantize_multipliers(mk)
    arrays = {"sign": np.where(A < 0, -1, 1).astype(np.int8), "bias": bias.astype(np.int32),
              "M0": m0, "shift": shift, "in_shift": k.astype(np.int8)}
    attrs = {"zp": z, "lo": z if src.relu else 0, "hi": n - 1}
    return {"attrs": attrs, "arrays": arrays}
