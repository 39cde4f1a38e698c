"""TSQ: two-step quantization (Wang et al., CVPR 2018).

Step 1, code learning (:class:`TSQAct`): sparse activation quantization of batch-normalised
pre-activations, modelled as N(0, 1)::

    epsilon = Phi^-1(theta)                      # theta = 0.6 (sparsity ratio) -> epsilon = 0.253
    y = 0                 if x <= epsilon
    y = q_i               for the Lloyd interval of x above epsilon

``q_1 < ... < q_(2^k - 1)`` are the Lloyd-Max levels of the Gaussian tail ``X | X > epsilon``
(centroid and midpoint conditions; computed once with scipy, :func:`gaussian_tail_lloyd`). The
code of x is ``#(x > t)`` with thresholds ``t = (epsilon, midpoints of q)``. Backward: clipped
straight-through, ``dy/dx = 1{epsilon < x <= q_max}``. Weights stay full precision in this step:
``set_weight_quant_active(model, False)``. The default theta = 0.6 makes step 1 sparser than the
ReLU alone (theta = 0.5, epsilon = 0, zeroes only the negative half); the paper studies ratios above
0.5, its per-network choice is not reproduced. theta < 0.5 (epsilon < 0) is refused by the
schedule: behind a ReLU it would give every zero the code of q_1.

Step 2, transformation-function learning (:func:`tsq_solve_layer`, :func:`tsq_transform`), layer
by layer with the codes fixed: minimise ``sum_r ||y_r - Q_a(alpha_r w_r X)||^2`` with ``w_r`` in
the low-bit levels (ternary by default) and ``alpha_r`` a per-row scale. With an auxiliary ``z``
for the pre-quantization output the relaxed problem
``||y - Q_a(z)||^2 + lam ||z - alpha w X||^2`` is solved by alternation:

(a) z fixed: ``alpha = <z, w X> / ||w X||^2`` (closed form, :func:`tsq_alpha`) and ``w`` by
    coordinate descent over its levels (exact per coordinate);
(b) alpha, w fixed: ``z`` per element, the best over the intervals of Q_a of
    ``(y - l_k)^2 + lam (clip(v, interval_k) - v)^2`` with ``v = alpha w X``.

The solver keeps the best (alpha, w) by the true objective, starting from the TWN ternarization,
so it never returns anything worse than the naive ternarization. With ``act_levels=None`` Q_a is
the identity and the problem is plain least squares (z = Y).

Over a model (:func:`tsq_transform`) X is a layer's quantized input and Y its step-1 output codes
``Q_a(BN(conv))`` (the batch norm folded into the solve as a per-row scale and offset), so each
layer is fitted to the codes the next layer reads; with the codes fixed the layers are independent.
Training (:class:`seglearn.quant.schedules.TSQSchedule`, wired into ``fit`` through
``TSQWeight.make_callback``; :func:`check_schedule_args` checks its settings): step 1
for the first ``step1`` (0.75) of the steps, the layer-wise solve, then step 2 fine-tunes the
solved ternary weights for the rest.

The step-2 weight quantizer (:class:`TSQWeight`): per-row ternary ``alpha_r w_r`` with TWN's rule
(``Delta_r = 0.7 mean|W_r|``, ``alpha_r`` the mean kept magnitude, the least-squares scale for that
assignment). :func:`tsq_transform` writes the solved ``alpha ⊙ w`` into the layer's weight, which
this rule maps exactly back to the same ``(w, alpha)``, and switches the quantizer on.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

from seglearn.quant.base import QuantInfo, Quantizer, moved_to, register_quantizer

PAPER = "Wang et al., Two-Step Quantization for Low-bit Neural Networks, CVPR 2018"


# ---------------------------------------------------------------- step 1: sparse act quantization

@lru_cache(maxsize=32)
def _lloyd_cached(bits: int, theta: float, iters: int) -> tuple[float, tuple, tuple]:
    eps = float(norm.ppf(theta))
    n = 2**bits - 1
    # start from the tail's quantiles: centres of n equal-probability slices above epsilon
    p = norm.sf(eps) * (1 - (np.arange(n) + 0.5) / n)
    q = norm.isf(p)
    for _ in range(iters):
        b = np.concatenate([[eps], (q[1:] + q[:-1]) / 2, [np.inf]])
        mass = norm.sf(b[:-1]) - norm.sf(b[1:])
        q_new = (norm.pdf(b[:-1]) - norm.pdf(b[1:])) / mass
        if np.max(np.abs(q_new - q)) < 1e-12:
            q = q_new
            break
        q = q_new
    levels = np.concatenate([[0.0], q])
    thresholds = np.concatenate([[eps], (q[1:] + q[:-1]) / 2])
    return eps, tuple(levels), tuple(thresholds)


def gaussian_tail_lloyd(bits: int = 2, theta: float = 0.5,
                        iters: int = 1000) -> tuple[float, np.ndarray, np.ndarray]:
    """``(epsilon, levels, thresholds)``: ``levels = [0, q_1..q_n]`` (n = 2^bits - 1 Lloyd levels of
    N(0,1) restricted to ``x > epsilon``), ``thresholds = [epsilon, midpoints]``."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"tsq act bits must be an integer in [1, 8], not {bits!r}")
    if not 0.0 < float(theta) < 1.0:
        raise ValueError(f"tsq sparsity ratio theta must be in (0, 1), not {theta!r}")
    eps, levels, thresholds = _lloyd_cached(bits, float(theta), iters)
    return eps, np.array(levels), np.array(thresholds)


class TSQAct(Quantizer):
    """Sparse Gaussian-Lloyd activation quantization (see the module docstring)."""

    method, kind = "tsq", "act"

    def __init__(self, bits: int = 2, theta: float = 0.6):
        super().__init__()
        self.eps, levels, thresholds = gaussian_tail_lloyd(bits, theta)
        self.bits, self.theta = bits, float(theta)
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=torch.float32),
                             persistent=False)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """``#(x > t)`` for the thresholds ``t``."""
        x, t = x.detach(), self.thresholds.to(x.dtype)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # bucketize wants a contiguous input: the NHWC view of a channels-last tensor is one
            return torch.bucketize(x.permute(0, 2, 3, 1), t, right=False).permute(0, 3, 1, 2)
        return torch.bucketize(x, t, right=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.levels.to(x.dtype)[self.codes(x)]
        keep = ((x > self.eps) & (x <= float(self.levels[-1]))).to(x.dtype)
        return y + (x - x.detach()) * keep.detach()

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        return QuantInfo(method="tsq", kind="act", bits=self.bits, codes=None,
                         levels=self.levels.double().cpu().numpy(),
                         thresholds=self.thresholds.double().cpu().numpy(), signed=False,
                         extra={"epsilon": self.eps, "theta": self.theta})

    def extra_repr(self) -> str:
        return super().extra_repr() + f", theta={self.theta}, epsilon={self.eps:.4f}"


# ---------------------------------------------------------------- step 2: the weight quantizer

def twn_rows(w: np.ndarray | torch.Tensor):
    """Per-row TWN: ``Delta_r = 0.7 mean|W_r|``, codes in {-1, 0, 1}, ``alpha_r`` = mean kept |W|."""
    lib = torch if isinstance(w, torch.Tensor) else np
    rows = w.reshape(w.shape[0], -1)
    a = lib.abs(rows)
    keep = a > 0.7 * a.mean(1, keepdims=True) if lib is np else a > 0.7 * a.mean(1, keepdim=True)
    codes = lib.sign(rows) * keep
    nk = keep.sum(1)
    alpha = (a * keep).sum(1) / lib.where(nk > 0, nk, lib.ones_like(nk))
    return codes.reshape(w.shape), alpha


def check_schedule_args(step1: float = 0.75, solve_iters: int = 10, solve_batches: int = 4,
                        max_cols: int = 2048) -> dict:
    """The settings of TSQ's two-step schedule (a TSQWeight's ``weight_args``), checked: ``step1``
    in (0, 1], ``solve_iters >= 0``, ``solve_batches >= 1``, ``max_cols >= 1`` (integers)."""
    if not 0.0 < float(step1) <= 1.0:
        raise ValueError(f"tsq weight_args step1 (the fraction of training spent in step 1) "
                         f"must be in (0, 1], not {step1!r}")
    for key, v, lo in (("solve_iters", solve_iters, 0), ("solve_batches", solve_batches, 1),
                       ("max_cols", max_cols, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"tsq weight_args {key} must be an integer >= {lo}, not {v!r}")
    return {"step1": float(step1), "solve_iters": int(solve_iters),
            "solve_batches": int(solve_batches), "max_cols": int(max_cols)}


class TSQWeight(Quantizer):
    """Per-row ternary weights ``alpha_r w_r`` (TWN rule per row), straight-through to W.

    ``active=False`` passes weights through unchanged (TSQ step 1 trains full-precision weights).
    Under ``fit`` the schedule (:meth:`make_callback`, ``schedules.TSQSchedule``) switches it: off
    for step 1, on after the step-2 solve. ``step1``, ``solve_iters``, ``solve_batches`` and
    ``max_cols`` are the schedule's settings (the scheme's ``weight_args``); outside ``fit`` the
    quantizer is on.
    """

    method, kind = "tsq", "weight"

    def __init__(self, bits: int = 2, active: bool = True, step1: float = 0.75,
                 solve_iters: int = 10, solve_batches: int = 4, max_cols: int = 2048):
        super().__init__()
        if bits != 2:
            raise ValueError(f"tsq weights are ternary (bits=2), not {bits!r}")
        self.bits, self.active = 2, bool(active)
        self.schedule_args = {"step1": step1, "solve_iters": solve_iters,
                              "solve_batches": solve_batches, "max_cols": max_cols}
        check_schedule_args(**self.schedule_args)  # here: a bad scheme fails at quantize_model

    def make_callback(self):
        """TSQ's two-step schedule (one per model: equal settings share the callback key)."""
        # imported here: schedules.py imports this module (its schedules find quantizers by class)
        # lazy: cycle, seglearn.quant.schedules imports this module
        from seglearn.quant.schedules import TSQSchedule

        return TSQSchedule(**self.schedule_args)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return w
        codes, alpha = twn_rows(w.detach())
        q = codes * alpha.reshape((-1,) + (1,) * (w.ndim - 1))
        return w + (q - w).detach()

    def export_info(self, x: torch.Tensor | None = None) -> QuantInfo:
        if x is None:
            raise ValueError("tsq weight export_info needs the weight tensor")
        codes, alpha = twn_rows(x.detach().double().cpu())
        return QuantInfo(method="tsq", kind="weight", bits=2, codes=codes.to(torch.int8).numpy(),
                         scale=alpha.numpy(), zero_point=0, axis=0, signed=True)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", active={self.active}"


def set_weight_quant_active(model: nn.Module, active: bool) -> int:
    """Switch every TSQWeight in ``model`` on/off (off = TSQ step 1); returns how many were found."""
    qs = [m for m in model.modules() if isinstance(m, TSQWeight)]
    for q in qs:
        q.active = bool(active)
    return len(qs)


# ---------------------------------------------------------------- step 2: the solver

def quantize_act(v: np.ndarray, levels: np.ndarray | None, thresholds: np.ndarray | None):
    """``Q_a(v) = levels[#(v > t)]``; identity when ``levels`` is None."""
    if levels is None:
        return v
    return np.asarray(levels)[np.searchsorted(np.asarray(thresholds), v, side="left")]


def tsq_alpha(z: np.ndarray, w_hat: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Closed-form per-row scale for fixed ``z`` and ``w_hat``: ``alpha_r = <z_r, v_r> / ||v_r||^2``,
    ``v = w_hat X`` (0 for a row with ``v_r = 0``)."""
    v = w_hat @ X
    den = np.einsum("rn,rn->r", v, v)
    num = np.einsum("rn,rn->r", z, v)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def tsq_objective(X, Y, w_hat, alpha, levels=None, thresholds=None, offset=None) -> float:
    """``sum_r ||y_r - Q_a(alpha_r w_r X + t_r)||^2`` (``t = offset``, default 0)."""
    pre = alpha[:, None] * (w_hat @ X)
    if offset is not None:
        pre = pre + offset[:, None]
    pred = quantize_act(pre, levels, thresholds)
    return float(((Y - pred) ** 2).sum())


def _z_step(Y, v, levels, thresholds, lam):
    """Per element: the best z over Q_a's intervals of ``(y - l_k)^2 + lam (z - v)^2``."""
    lo = np.concatenate([[-np.inf], thresholds])
    hi = np.concatenate([thresholds, [np.inf]])
    best_z, best_c = None, None
    for k, l in enumerate(levels):
        # interval k is (lo_k, hi_k]; nudge the open end so Q_a(z) really is l_k
        z = np.clip(v, np.nextafter(lo[k], np.inf), hi[k])
        c = (Y - l) ** 2 + lam * (z - v) ** 2
        if best_c is None:
            best_z, best_c = z, c
        else:
            better = c < best_c
            best_z, best_c = np.where(better, z, best_z), np.where(better, c, best_c)
    return best_z


def _cd_step(z, X, w_hat, alpha, w_levels):
    """One sweep of exact coordinate descent on ``||z - alpha (w X)||^2`` over ``w``'s levels."""
    w_hat = w_hat.copy()
    E = z - alpha[:, None] * (w_hat @ X)
    for j in range(X.shape[0]):
        xj = X[j]
        ex, xx = E @ xj, float(xj @ xj)
        if xx == 0.0:
            continue
        delta = w_levels[None, :] - w_hat[:, j:j + 1]                 # (rows, levels)
        gain = -2 * alpha[:, None] * delta * ex[:, None] + (alpha[:, None] * delta) ** 2 * xx
        pick = np.argmin(gain, axis=1)
        d = delta[np.arange(len(pick)), pick]
        if np.any(d != 0):
            w_hat[:, j] += d
            E -= (alpha * d)[:, None] * xj[None, :]
    return w_hat


def _initial(X, Y, w_levels, W_init):
    if W_init is None:  # least-squares fit of Y on X as the full-precision starting point
        W_init = np.linalg.lstsq(X.T, Y.T, rcond=None)[0].T
    W0 = np.asarray(W_init, dtype=np.float64).reshape(Y.shape[0], X.shape[0])
    if tuple(w_levels) == (-1.0, 0.0, 1.0):
        return twn_rows(W0)
    s = np.abs(W0).max(1) / np.abs(w_levels).max()
    s = np.where(s > 0, s, 1.0)
    idx = np.argmin(np.abs(W0[:, :, None] / s[:, None, None] - w_levels[None, None, :]), axis=2)
    return w_levels[idx], s


def tsq_solve_layer(X, Y, act_levels=None, w_levels: Sequence[float] = (-1, 0, 1), iters: int = 10,
                    act_thresholds=None, W_init=None, lam: float = 1.0, return_info: bool = False,
                    offset=None):
    """Solve ``min sum_r ||y_r - Q_a(alpha_r w_r X + t_r)||^2``; returns ``(W_hat, alpha)``.

    X: (n_in, N) inputs (im2col columns), Y: (n_out, N) targets. ``act_levels`` (sorted, with
    ``act_thresholds`` of length L-1; default midpoints) define Q_a; None means identity.
    ``offset`` (n_out,) is a fixed per-row shift ``t`` in front of Q_a (a conv bias, or the shift of
    a batch norm folded into the layer: :func:`tsq_transform`); default 0. With it the closed forms
    of the module docstring read ``alpha_r = <z_r - t_r, v_r> / ||v_r||^2`` and the coordinate
    descent fits ``z - t``.
    ``W_init`` (n_out, n_in) seeds the TWN start (default: least squares of Y - t on X).
    ``return_info=True`` also returns ``{"initial": obj, "final": obj, "history": [...]}``.
    """
    X, Y = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(f"tsq_solve_layer needs X (n_in, N) and Y (n_out, N) with the same N, got "
                         f"{X.shape} and {Y.shape}")
    wl = np.array(sorted(float(v) for v in w_levels))
    if wl.size < 2 or 0.0 not in wl:
        raise ValueError(f"w_levels must hold 0 and at least one other level, not {w_levels!r}")
    if not lam > 0:
        raise ValueError(f"lam must be positive, not {lam!r}")
    levels = thresholds = None
    if act_levels is not None:
        levels = np.asarray(act_levels, dtype=np.float64)
        if levels.ndim != 1 or np.any(np.diff(levels) <= 0):
            raise ValueError("act_levels must be a strictly increasing 1-D sequence")
        thresholds = (levels[1:] + levels[:-1]) / 2 if act_thresholds is None else \
            np.asarray(act_thresholds, dtype=np.float64)
        if thresholds.shape != (levels.size - 1,) or np.any(np.diff(thresholds) <= 0):
            raise ValueError("act_thresholds must be increasing with len(act_levels) - 1 entries")

    t = np.zeros(Y.shape[0]) if offset is None else np.asarray(offset, dtype=np.float64)
    if t.shape != (Y.shape[0],):
        raise ValueError(f"offset must have one entry per row of Y ({Y.shape[0]}), not {t.shape}")
    w_hat, alpha = _initial(X, Y - t[:, None], wl, W_init)
    best = [tsq_objective(X, Y, w_hat, alpha, levels, thresholds, t), w_hat, alpha]
    history = [best[0]]
    for _ in range(int(iters)):
        v = alpha[:, None] * (w_hat @ X) + t[:, None]
        z = Y if levels is None else _z_step(Y, v, levels, thresholds, lam)
        zt = z - t[:, None]  # what alpha * (w X) must fit
        alpha = tsq_alpha(zt, w_hat, X)
        w_hat = _cd_step(zt, X, w_hat, alpha, wl)
        alpha = tsq_alpha(zt, w_hat, X)
        obj = tsq_objective(X, Y, w_hat, alpha, levels, thresholds, t)
        history.append(obj)
        if obj < best[0]:
            best = [obj, w_hat, alpha]
    _, w_hat, alpha = best
    if np.allclose(wl, -wl[::-1]):  # symmetric levels: report alpha >= 0
        flip = alpha < 0
        w_hat = np.where(flip[:, None], -w_hat, w_hat)
        alpha = np.abs(alpha)
    if return_info:
        return w_hat, alpha, {"initial": history[0], "final": best[0], "history": history}
    return w_hat, alpha


# ---------------------------------------------------------------- step 2 over a model

def _columns(module: nn.Module, inp: torch.Tensor, out: torch.Tensor):
    """(X, U) columns of one call, or None for a layer type the solver does not handle.

    X: the layer's im2col input *after its own input quantizer* (the step-1 codes of the layer
    below); U: its output, (out channels, N)."""
    if callable(getattr(module, "folded", None)):  # conv+BN folding: weight is not what is quantized
        return None
    act_quant = getattr(module, "act_quant", None)
    if isinstance(act_quant, nn.Module):  # a quantized layer multiplies its quantized input
        inp = act_quant(inp)
    if isinstance(module, nn.Conv2d):  # ConvTranspose2d is not a Conv2d subclass
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
            return None
        X = F.unfold(inp, module.kernel_size, module.dilation, module.padding, module.stride)
        X = X.permute(1, 0, 2).reshape(X.shape[1], -1)
        U = out.permute(1, 0, 2, 3).reshape(out.shape[1], -1)
    elif isinstance(module, nn.Linear):
        X, U = inp.reshape(-1, inp.shape[-1]).T, out.reshape(-1, out.shape[-1]).T
    else:
        return None
    return X, U


def _bn_affine(model: nn.Module, name: str, layer: nn.Module):
    """``(s, t)`` with ``BN(y) = s y + t`` for the BatchNorm2d right after ``name`` (running
    statistics: step 2 solves the eval-mode network), or None when no batch norm follows."""
    # lazy: cycle, seglearn.quant.convert imports this module (through quant.schedules)
    from seglearn.quant.convert import _next_bn

    parent_name, _, child = name.rpartition(".")
    parent = dict(model.named_modules())[parent_name]
    loc = _next_bn(parent, child, getattr(layer, "out_channels", -1))
    if loc is None:
        return None
    bn = getattr(*loc)

    def f64(v):
        return v.detach().double().cpu().numpy()

    s = 1.0 / np.sqrt(f64(bn.running_var) + bn.eps)
    if bn.affine:
        s = f64(bn.weight) * s
    return s, (f64(bn.bias) if bn.affine else 0.0) - f64(bn.running_mean) * s


def _input_of(batch):
    return batch["image"] if isinstance(batch, dict) else \
        batch[0] if isinstance(batch, (tuple, list)) else batch


def consumer_quantizers(model: nn.Module, x: torch.Tensor, producers: Iterable[str]) -> dict:
    """``{producer name: [input quantizers of the layers that read its output]}``.

    Found on the autograd graph of one forward pass: from each quantized layer's input, walk back
    through the element-wise and spatial ops (batch norm, ReLU, pooling, upsampling, concat) to
    the nearest convolution outputs. Works for any model built from convolutions (the FCN's U-Net
    skips give a producer two consumers)."""
    producers = set(producers)
    convs = {m: n for n, m in model.named_modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))}
    node_of: dict = {}
    found: dict[str, list] = {name: [] for name in producers}

    def out_hook(module, args, out):
        if out.grad_fn is not None:
            node_of[out.grad_fn] = convs[module]

    def in_hook(module, args):
        q = getattr(module, "act_quant", None)
        root = args[0].grad_fn if isinstance(args[0], torch.Tensor) else None
        stack, seen = ([root] if root is not None else []), set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in node_of:  # a conv output: stop, this is a producer of `module`'s input
                if node_of[node] in producers:
                    found[node_of[node]].append(q)
                continue
            stack.extend(nxt for nxt, _ in node.next_functions if nxt is not None)

    handles = [m.register_forward_hook(out_hook) for m in convs]
    handles += [m.register_forward_pre_hook(in_hook) for m in convs]
    try:
        with torch.enable_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def _target_quantizer(consumers: list):
    """The consumers' common TSQAct (the layer's step-1 output codes), or None (float target)."""
    acts = [q for q in consumers if isinstance(q, TSQAct)]
    if not consumers or len(acts) != len(consumers):
        return None
    if any(not torch.equal(q.thresholds, acts[0].thresholds) or
           not torch.equal(q.levels, acts[0].levels) for q in acts[1:]):
        return None
    return acts[0]


def tsq_transform(model: nn.Module, batches: Iterable, iters: int = 10, max_cols: int = 2048,
                  act_levels=None, act_thresholds=None, lam: float = 1.0, seed: int = 0) -> dict:
    """TSQ step 2 over every layer whose ``weight_quant`` is a :class:`TSQWeight`.

    One pass of the step-1 network (full-precision weights, eval mode) over ``batches`` (tensors,
    or tuples/dicts whose first item / "image" is the input) collects, per layer, up to
    ``max_cols`` random im2col columns per batch of its quantized input X and its output. The
    layer's target Y is its step-1 output *codes*: ``Y = Q(BN(conv))`` with BN the batch norm that
    follows the layer (running statistics, ``s y + t``) and Q the TSQAct of the layers that read the
    output (:func:`consumer_quantizers`; ``act_levels`` overrides it). Since ``epsilon >= 0`` for
    ``theta >= 0.5``, ``Q(ReLU(u)) = Q(u)``, so the ReLU between them changes nothing. A layer read by
    anything other than one TSQ quantizer (the FCN's last decoder conv feeds the 8-bit head) gets
    the float ``BN(conv)`` as target and Q = identity (plain least squares).

    Each layer is solved independently with the codes fixed (:func:`tsq_solve_layer` in the
    batch-normalised domain: weight ``s ⊙ W``, offset ``t + s b``), its weight set to
    ``(alpha / s) ⊙ W_hat`` (so ``BN(conv)`` is ``alpha ⊙ W_hat X + offset``) and its quantizer
    switched on. Layers the solver does not handle (transposed or grouped convs, BN-folded layers)
    keep TSQ's TWN-per-row quantizer. Returns ``{layer name: {"initial", "final", "target"}}`` or
    ``{"skipped": reason}``.
    """
    layers = {name: m for name, m in model.named_modules()
              if isinstance(getattr(m, "weight_quant", None), TSQWeight)
              and isinstance(getattr(m, "weight", None), torch.Tensor)}
    if not layers:
        raise ValueError("tsq_transform: no module with a TSQWeight `weight_quant` in the model")
    batches = [_input_of(b) for b in batches]
    if not batches:
        raise ValueError("tsq_transform: no batches to collect the step-1 codes from")
    set_weight_quant_active(model, False)
    rng = torch.Generator().manual_seed(seed)
    cols: dict[str, list] = {name: [] for name in layers}
    report: dict[str, dict] = {}

    def hook(name):
        def fn(module, args, out):
            xy = _columns(module, args[0].detach(), out.detach())
            if xy is None:
                report[name] = {"skipped": f"{type(module).__name__} is not supported"}
                return
            X, U = xy
            if X.shape[1] > max_cols:
                pick = torch.randperm(X.shape[1], generator=rng)[:max_cols].to(X.device)
                X, U = X[:, pick], U[:, pick]
            cols[name].append((X.double().cpu().numpy(), U.double().cpu().numpy()))
        return fn

    was_training = model.training
    model.eval()
    try:
        consumers = consumer_quantizers(model, batches[0], layers)
        handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
        try:
            with torch.no_grad():
                for x in batches:
                    model(x)
        finally:
            for h in handles:
                h.remove()
    finally:
        model.train(was_training)
    for name, m in layers.items():
        if name not in report and not cols[name]:
            report[name] = {"skipped": "the layer saw no data"}
        if name in report:
            continue
        X = np.concatenate([c[0] for c in cols[name]], axis=1)
        U = np.concatenate([c[1] for c in cols[name]], axis=1)
        w = m.weight.detach()
        rows = w.reshape(w.shape[0], -1).double().cpu().numpy()
        s, t = _bn_affine(model, name, m) or (np.ones(w.shape[0]), np.zeros(w.shape[0]))
        bias = getattr(m, "bias", None)
        offset = t + s * (bias.detach().double().cpu().numpy() if bias is not None else 0.0)
        u = s[:, None] * U + t[:, None]  # BN(conv): the pre-activation the codes are taken of
        q = _target_quantizer(consumers.get(name, []))
        if act_levels is not None:
            lv, th = np.asarray(act_levels, dtype=np.float64), act_thresholds
        elif q is not None:
            lv, th = q.levels.double().cpu().numpy(), q.thresholds.double().cpu().numpy()
        else:
            lv = th = None
        Y = u if lv is None else quantize_act(
            u, lv, (lv[1:] + lv[:-1]) / 2 if th is None else np.asarray(th, dtype=np.float64))
        w_hat, alpha, info = tsq_solve_layer(X, Y, lv, iters=iters, act_thresholds=th,
                                             W_init=s[:, None] * rows, lam=lam, return_info=True,
                                             offset=offset)
        safe = np.where(s != 0, s, 1.0)  # gamma = 0: a dead channel, any scale reproduces it
        new = torch.from_numpy((alpha / safe)[:, None] * w_hat).reshape(w.shape)
        with torch.no_grad():
            m.weight.copy_(new.to(device=w.device, dtype=w.dtype))
        report[name] = {"initial": info["initial"], "final": info["final"],
                        "target": "float" if lv is None else "tsq codes"}
    set_weight_quant_active(model, True)
    return report


__getattr__ = moved_to(__name__, "seglearn.quant.schedules", "TSQSchedule")

register_quantizer("tsq", PAPER, weight=TSQWeight, act=TSQAct,
                   default_bits={"weight": 2, "act": 2})
