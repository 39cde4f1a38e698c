"""Training engine: loss decreases, checkpoints are weights-only and resumable, bad files are refused."""

import numpy as np
import pytest
import torch

from seglearn.config import TrainConfig
from seglearn.models import FCN
from seglearn.train.engine import CheckpointError, fit, load_checkpoint
from seglearn.train.losses import segmentation_loss, soft_dice_loss


def disc_batches(n=8, size=32, seed=0, contour=False):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(4, 8)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)
        img = np.stack([0.8 - 0.5 * m, 0.3 + 0.2 * m, 0.5 + 0.1 * m]) + rng.normal(0, 0.05, (3, size, size))
        t = [m]
        if contour:
            t.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32)
                     - ((yy - cy) ** 2 + (xx - cx) ** 2 <= (r - 2) ** 2).astype(np.float32))
        out.append((img.astype(np.float32), np.stack(t)))
    batches = []
    for i in range(0, n, 4):
        chunk = out[i:i + 4]
        batches.append({"image": torch.tensor(np.stack([c[0] for c in chunk])),
                        "target": torch.tensor(np.stack([c[1] for c in chunk]))})
    return batches


def test_soft_dice_closed_form():
    logits = torch.tensor([[[[10.0, -10.0], [10.0, -10.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    p = torch.sigmoid(logits)
    want = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert torch.allclose(soft_dice_loss(logits, target), want)


def test_contour_head_needs_contour_target():
    with pytest.raises(ValueError, match="contour"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("contour", [False, True])
def test_loss_decreases(contour):
    torch.manual_seed(0)
    m = FCN(width=8, depth=2, contour_head=contour)
    cfg = TrainConfig(steps=40, lr=2e-2, bf16=True)
    res = fit(m, disc_batches(contour=contour), cfg, progress=False)
    assert np.mean(res.losses[-5:]) < 0.6 * np.mean(res.losses[:5])


def test_checkpoint_resume(tmp_path):
    torch.manual_seed(0)
    ck = tmp_path / "m.pt"
    cfg = TrainConfig(steps=6, checkpoint_every=3, bf16=False)
    fit(FCN(width=4, depth=2), disc_batches(), cfg, steps=6, checkpoint=ck, progress=False)
    state = load_checkpoint(ck)
    assert state["step"] == 6
    # Resume asks for more steps: it starts from step 6, not 0.
    res = fit(FCN(width=4, depth=2), disc_batches(), cfg, steps=9, checkpoint=ck, resume=True,
              progress=False)
    assert res.resumed_from == 6 and len(res.losses) == 3
    assert load_checkpoint(ck)["step"] == 9


def test_bad_checkpoints(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(p)):
        load_checkpoint(p)
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="not a seglearn checkpoint"):
        load_checkpoint(p)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": {"a": Evil()}}, p)  # a pickle that would run code
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(p)


def test_bf16_autocast_only_where_it_is_fast(monkeypatch):
    """bf16 on a CPU without bf16 conv kernels is ~10x slower (torch's _slow_conv2d): fall back."""
    import warnings

    from seglearn.models import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: False)
    monkeypatch.setattr(precision, "_BF16_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with precision.autocast_context(cpu, True):
            assert not torch.is_autocast_enabled("cpu")
        with precision.autocast_context(cpu, True):  # warned once, not every step
            pass
    assert len([w for w in caught if "float32 instead" in str(w.message)]) == 1
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: True)
    with precision.autocast_context(cpu, True):
        assert torch.is_autocast_enabled("cpu")
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
        assert y.dtype == torch.bfloat16
    with precision.autocast_context(cpu, False):
        assert not torch.is_autocast_enabled("cpu")
