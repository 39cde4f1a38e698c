"""TSQ (Wang et al. 2018): Gaussian-tail Lloyd levels, sparse act quant, step-2 solver."""

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm
from torch import nn

from seglearn.quant.tsq import (TSQAct, TSQWeight, gaussian_tail_lloyd, set_weight_quant_active,
                                tsq_alpha, tsq_objective, tsq_solve_layer, tsq_transform,
                                twn_rows)


@pytest.mark.parametrize("bits,theta", [(2, 0.5), (1, 0.5), (3, 0.7)])
def test_lloyd_levels_satisfy_centroid_and_midpoint_conditions(bits, theta):
    eps, levels, thr = gaussian_tail_lloyd(bits, theta)
    assert eps == pytest.approx(norm.ppf(theta)) and thr[0] == eps and levels[0] == 0
    assert len(levels) == 2**bits
    q = levels[1:]
    np.testing.assert_allclose(thr[1:], (q[1:] + q[:-1]) / 2)
    edges = np.concatenate([thr, [np.inf]])
    for i, lv in enumerate(q):  # each level is the mean of N(0,1) over its interval (quad oracle)
        mass = integrate.quad(norm.pdf, edges[i], edges[i + 1])[0]
        first = integrate.quad(lambda t: t * norm.pdf(t), edges[i], edges[i + 1])[0]
        assert lv == pytest.approx(first / mass, rel=1e-6)


def test_act_sparsity_values_and_gradient():
    torch.manual_seed(0)
    q = TSQAct(bits=2, theta=0.6)
    x = torch.randn(20000, dtype=torch.float64, requires_grad=True)
    y = q(x)
    eps, levels, thr = gaussian_tail_lloyd(2, 0.6)
    xn = x.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), levels[np.searchsorted(thr, xn, side="left")],
                               rtol=1e-6)
    assert (y == 0).double().mean().item() == pytest.approx(0.6, abs=0.02)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), ((xn > eps) & (xn <= levels[-1])).astype(float))
    info = q.export_info()
    assert info.levels.shape == (4,) and info.thresholds.shape == (3,)


def test_weight_per_row_ternary_and_inactive_passthrough():
    torch.manual_seed(1)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    y = TSQWeight()(w).detach().numpy()
    wn = w.detach().numpy().reshape(5, -1)
    for r in range(5):
        keep = np.abs(wn[r]) > 0.7 * np.abs(wn[r]).mean()
        np.testing.assert_allclose(y.reshape(5, -1)[r], np.sign(wn[r]) * keep * np.abs(wn[r][keep]).mean())
    assert torch.equal(TSQWeight(active=False)(w), w)
    info = TSQWeight().export_info(w.detach())
    np.testing.assert_allclose(info.dequantize(), y)


def test_alpha_is_the_closed_form_optimum():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 50))
    w_hat = rng.integers(-1, 2, size=(4, 8)).astype(float)
    z = rng.normal(size=(4, 50))
    alpha = tsq_alpha(z, w_hat, X)
    v = w_hat @ X
    for r in range(4):  # per row: 1-D least squares of z_r on v_r (numpy lstsq oracle)
        a_ls = np.linalg.lstsq(v[r][:, None], z[r], rcond=None)[0][0]
        assert alpha[r] == pytest.approx(a_ls)


def _problem(seed, n_in=16, n_out=6, n=400):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(n_out, n_in))
    X = np.maximum(rng.normal(size=(n_in, n)), 0)  # ReLU-like inputs
    return W, X


@pytest.mark.parametrize("with_act", [True, False])
def test_solver_beats_naive_ternarization(with_act):
    W, X = _problem(3)
    _, levels, thr = gaussian_tail_lloyd(2, 0.5)
    lv, th = (levels, thr) if with_act else (None, None)
    pre = W @ X
    pre = (pre - pre.mean(1, keepdims=True)) / pre.std(1, keepdims=True)  # BN-like targets
    Y = pre if lv is None else lv[np.searchsorted(th, pre, side="left")]
    Xs = X / (W @ X).std(1).mean()  # so Y is reachable by alpha * W_hat X
    codes, _ = twn_rows(W)
    naive = tsq_objective(Xs, Y, codes, tsq_alpha(pre, codes, Xs), lv, th)  # TWN codes, best alpha
    w_hat, alpha, info = tsq_solve_layer(Xs, Y, lv, iters=8, act_thresholds=th, W_init=W,
                                         return_info=True)
    assert set(np.unique(w_hat)) <= {-1.0, 0.0, 1.0} and np.all(alpha >= 0)
    final = tsq_objective(Xs, Y, w_hat, alpha, lv, th)
    assert final == pytest.approx(info["final"])
    # the relaxed alternation converges slowly when Q_a is coarse; plain least squares much faster
    assert final < (1.0 if with_act else 0.9) * min(naive, info["initial"])
    assert info["history"][-1] < info["history"][0]
    if lv is None:  # z = Y: the returned alpha is the closed form for the returned W_hat
        np.testing.assert_allclose(alpha, tsq_alpha(Y, w_hat, Xs))


class TinyQConv(nn.Conv2d):
    """Stand-in for a quantized conv: any module with .weight and .weight_quant works."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.weight_quant = TSQWeight()

    def forward(self, x):
        return self._conv_forward(x, self.weight_quant(self.weight), self.bias)


def test_transform_solves_each_layer_and_switches_quantizers_on():
    torch.manual_seed(4)
    model = nn.Sequential(TinyQConv(2, 4, 3, padding=1, bias=False), nn.ReLU(),
                          TinyQConv(4, 3, 3, padding=1, bias=True))
    batches = [torch.randn(2, 2, 6, 6) for _ in range(2)]
    assert set_weight_quant_active(model, False) == 2
    report = tsq_transform(model, batches, iters=4)
    assert set(report) == {"0", "2"}
    for name in ("0", "2"):
        assert report[name]["final"] <= report[name]["initial"]
        layer = model[int(name)]
        assert layer.weight_quant.active
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        for row in w:  # each row is alpha_r * {-1, 0, 1}: the quantizer reproduces it exactly
            assert torch.unique(row.abs()).numel() <= 2
        torch.testing.assert_close(layer.weight_quant(layer.weight), layer.weight)
    with pytest.raises(ValueError, match="TSQWeight"):
        tsq_transform(nn.Sequential(nn.Conv2d(1, 1, 1)), batches)


def test_bad_arguments():
    with pytest.raises(ValueError, match="theta"):
        TSQAct(theta=1.0)
    with pytest.raises(ValueError, match="ternary"):
        TSQWeight(bits=3)
    with pytest.raises(ValueError, match="same N"):
        tsq_solve_layer(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="increasing"):
        tsq_solve_layer(np.zeros((3, 5)), np.zeros((2, 5)), act_levels=[0, 2, 1])


# ---------------------------------------------------------------- the two-step schedule under fit

def _oracle_solve(X, Y, levels, thresholds, W_init, offset, iters, lam):
    """Independent numpy/loop version of TSQ step 2 (Wang et al. 2018; METHODS.md section tsq):
    start from per-row TWN of W_init, then alternate (b) z per element over Q's intervals,
    (a) alpha_r = <z_r - t_r, v_r> / ||v_r||^2 with v = W_hat X, W_hat by element-wise coordinate
    descent over {-1, 0, 1} (full residual norms, no incremental bookkeeping), alpha again;
    keep the best (W_hat, alpha) by the true objective."""
    n_out = Y.shape[0]

    def Q(v):
        return v if levels is None else levels[(v[..., None] > thresholds).sum(-1)]

    def objective(w, a):
        return float(((Y - Q(a[:, None] * (w @ X) + offset[:, None])) ** 2).sum())

    def alpha_of(zt, w):
        a = np.zeros(n_out)
        for r in range(n_out):
            v = w[r] @ X
            a[r] = (zt[r] @ v) / (v @ v) if v @ v > 0 else 0.0
        return a

    w = np.zeros_like(W_init)
    a = np.zeros(n_out)
    for r in range(n_out):
        keep = np.abs(W_init[r]) > 0.7 * np.abs(W_init[r]).mean()
        w[r] = np.sign(W_init[r]) * keep
        a[r] = np.abs(W_init[r][keep]).mean() if keep.any() else 0.0
    best = (objective(w, a), w.copy(), a.copy())
    for _ in range(iters):
        v = a[:, None] * (w @ X) + offset[:, None]
        if levels is None:
            z = Y
        else:
            z = np.empty_like(Y)
            lo = np.concatenate([[-np.inf], thresholds])
            hi = np.concatenate([thresholds, [np.inf]])
            for idx in np.ndindex(*Y.shape):
                costs = [(Y[idx] - lv) ** 2 + lam * (min(max(v[idx], lo[k]), hi[k]) - v[idx]) ** 2
                         for k, lv in enumerate(levels)]
                k = int(np.argmin(costs))
                z[idx] = min(max(v[idx], lo[k]), hi[k])
        zt = z - offset[:, None]
        a = alpha_of(zt, w)
        for r in range(n_out):
            for j in range(X.shape[0]):
                costs = {}
                for lv in (-1.0, 0.0, 1.0):
                    cand = w[r].copy()
                    cand[j] = lv
                    costs[lv] = float(((zt[r] - a[r] * (cand @ X)) ** 2).sum())
                cur = costs[w[r, j]]
                lv = min(costs, key=costs.get)
                if costs[lv] < cur - 1e-9 * (1 + abs(cur)):
                    w[r, j] = lv
        a = alpha_of(zt, w)
        obj = objective(w, a)
        if obj < best[0]:
            best = (obj, w.copy(), a.copy())
    _, w, a = best
    flip = a < 0
    return np.where(flip[:, None], -w, w), np.abs(a)


def _tiny_batches(n=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(n):
        cy, cx = torch.randint(5, size - 5, (2,), generator=g).tolist()
        m = (((yy - cy) ** 2 + (xx - cx) ** 2) <= 16).float()
        img = (0.2 + 0.6 * m + 0.1 * torch.randn(3, size, size, generator=g)).float()
        out.append({"image": img[None].repeat(2, 1, 1, 1), "target": m[None, None].repeat(2, 1, 1, 1)})
    return out


def test_fit_runs_step1_float_then_layerwise_solve_then_ternary_finetune(monkeypatch):
    """The done criterion of issue 21 item 3: a spy on a real ``fit`` run of a tiny FCN."""
    import seglearn.quant.tsq as tsq_mod
    from seglearn.config import TrainConfig
    from seglearn.models import FCN
    from seglearn.quant.convert import _next_bn, quantize_model, scheme_callbacks
    from seglearn.train.callbacks import Callback
    from seglearn.train.engine import fit

    torch.manual_seed(0)
    scheme = {"weight": "tsq", "act": "tsq", "weight_args": {
        "step1": 0.5, "solve_iters": 3, "solve_batches": 2, "max_cols": 40}}
    model = quantize_model(FCN(3, width=4, depth=2), scheme)
    tsq_layers = {n: m for n, m in model.named_modules() if isinstance(getattr(m, "weight_quant", None), TSQWeight)}
    assert len(tsq_layers) == 5  # enc.0.1, enc.1.0, enc.1.1, dec.0.conv.0, dec.0.conv.1 (edges are iao8)
    calls, events = [], []
    real_solve = tsq_mod.tsq_solve_layer

    def spy_solve(X, Y, act_levels=None, **kw):
        out = real_solve(X, Y, act_levels, **kw)
        calls.append({"X": X, "Y": Y, "levels": act_levels, **kw, "out": out})
        events.append(("solve", len(events)))
        return out

    monkeypatch.setattr(tsq_mod, "tsq_solve_layer", spy_solve)

    def bn_affine(name):
        parent_name, _, child = name.rpartition(".")
        holder, bn_name = _next_bn(dict(model.named_modules())[parent_name], child,
                                   tsq_layers[name].out_channels)
        bn = getattr(holder, bn_name)
        g, b, mu, var = (v.detach().double().numpy() for v in
                         (bn.weight, bn.bias, bn.running_mean, bn.running_var))
        s = g / np.sqrt(var + bn.eps)
        return s, b - mu * s

    before = {}

    class Pre(Callback):  # runs before TSQ's schedule: sees the step-1 weights it solves from
        def after_step(self, model, step, total):
            if step == 11:
                before.update({n: (m.weight.detach().double().numpy().reshape(m.out_channels, -1),
                                   *bn_affine(n)) for n, m in tsq_layers.items()})

    class Post(Callback):  # runs after it: what each step trains with
        def extra_loss(self, model, step, total):
            ternary = [torch.unique(m.quantized_weight().detach().abs().reshape(m.out_channels, -1)[r]).numel() <= 2
                       for m in tsq_layers.values() for r in range(m.out_channels)]
            floats = [torch.equal(m.quantized_weight(), m.weight) for m in tsq_layers.values()]
            events.append(("step", step, all(floats), all(ternary)))

        def after_step(self, model, step, total):
            if step == 11:
                after.update({n: m.weight.detach().double().numpy().reshape(m.out_channels, -1)
                              for n, m in tsq_layers.items()})

    after = {}
    cbs = scheme_callbacks(model, scheme)
    # once, not once per layer (IAO's schedule comes with the 8-bit first and last layers)
    assert sorted(type(c).__name__ for c in cbs) == ["IAOSchedule", "TSQSchedule"]
    (tsq_cb,) = [c for c in cbs if type(c).__name__ == "TSQSchedule"]
    cfg = TrainConfig(steps=24, lr=1e-2, bf16=False, channels_last=False, device="cpu",
                      checkpoint_every=1000)
    fit(model, _tiny_batches(), cfg, callbacks=[Pre(), *cbs, Post()], progress=False)

    # the sequence: 12 float steps, the 5 layer solves, 12 steps on the solved ternary weights
    kinds = [e[0] for e in events]
    assert kinds == ["step"] * 12 + ["solve"] * 5 + ["step"] * 12
    steps = [e for e in events if e[0] == "step"]
    assert all(e[2] and not e[3] for e in steps[:12])  # step 1: float (and not ternary) weights
    assert all(e[3] and not e[2] for e in steps[12:])  # step 2: ternary weights
    assert tsq_cb.report and all("final" in r for r in tsq_cb.report.values())

    by_init = {}
    for name, (W, s, t) in before.items():
        by_init[name] = next(c for c in calls if c["W_init"].shape == W.shape
                             and np.allclose(c["W_init"], s[:, None] * W))
    targets = {n: tsq_cb.report[n]["target"] for n in tsq_layers}
    assert targets == {"enc.0.1.0": "tsq codes", "enc.1.0.0": "tsq codes", "enc.1.1.0": "tsq codes",
                       "dec.0.conv.0.0": "tsq codes", "dec.0.conv.1.0": "float"}  # feeds the 8-bit head
    act = next(m for m in model.modules() if isinstance(m, TSQAct))
    for name, c in by_init.items():
        W, s, t = before[name]
        # X are the layer's quantized inputs (step-1 codes: values on the levels of the act)
        assert set(np.unique(c["X"])) <= set(act.levels.double().numpy())
        # Y: the step-1 codes of the layer's own output, Q(BN(W X)), recomputed here in float64
        u = s[:, None] * (W @ c["X"]) + t[:, None]
        if targets[name] == "tsq codes":
            expect = act.levels.double().numpy()[(u[..., None] > act.thresholds.double().numpy()).sum(-1)]
            assert np.mean(c["Y"] == expect) > 0.99
            assert np.mean(c["Y"] == 0) > 0.5  # sparse: theta = 0.6 of a BN'd Gaussian is zero
        else:
            np.testing.assert_allclose(c["Y"], u, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(c["offset"], t)
        # the solver's (W_hat, alpha) equal the independent closed-form alternation
        lv = None if c["levels"] is None else np.asarray(c["levels"], dtype=np.float64)
        th = None if lv is None else np.asarray(c["act_thresholds"], dtype=np.float64)
        w_o, a_o = _oracle_solve(c["X"], c["Y"], lv, th, c["W_init"], c["offset"], c["iters"], c["lam"])
        w_hat, alpha, _ = c["out"]
        np.testing.assert_array_equal(w_hat, w_o)
        np.testing.assert_allclose(alpha, a_o, rtol=1e-9, atol=1e-12)
        # and the layer leaves the solve as (alpha / s) * W_hat: BN(conv) = alpha W_hat X + t
        np.testing.assert_allclose(after[name], (alpha / s)[:, None] * w_hat, rtol=1e-6, atol=1e-7)


def test_schedule_resumed_after_the_switch_does_not_solve_again(monkeypatch):
    import seglearn.quant.schedules as schedules  # the schedule's home: where it calls the solve

    model = nn.Sequential(TinyQConv(2, 3, 3, padding=1))
    sched = model[0].weight_quant.make_callback()
    monkeypatch.setattr(schedules, "tsq_transform", lambda *a, **k: pytest.fail("solved again"))
    sched.on_train_start(model, 8)
    assert not model[0].weight_quant.active and sched.switch_step(8) == 6
    sched.before_step(model, 7, 8)  # a checkpoint written after the solve: just switch on
    assert model[0].weight_quant.active


def test_schedule_rejects_bad_settings():
    from seglearn.models import FCN
    from seglearn.quant.convert import quantize_model, scheme_callbacks

    with pytest.raises(ValueError, match="step1"):
        TSQWeight(step1=0.0)
    scheme = {"weight": "tsq", "act": "tsq", "layers": {"enc.1.*": {"weight_args": {"step1": 0.5}}}}
    model = quantize_model(FCN(3, width=4, depth=2), scheme)
    with pytest.raises(ValueError, match="one schedule"):
        for cb in scheme_callbacks(model, scheme):
            cb.on_train_start(model, 10)
    with pytest.raises(ValueError, match="theta"):
        sched = TSQWeight().make_callback()
        sched.on_train_start(nn.Sequential(TSQAct(theta=0.3)), 10)


def test_act_codes_of_a_channels_last_tensor(recwarn):
    x = torch.randn(2, 5, 4, 3)
    q = TSQAct(bits=2)
    y = q(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, q(x), rtol=0, atol=0)
    assert not [w for w in recwarn if "non-contiguous" in str(w.message)]
