"""Issue 19, items 9 and 10: nothing is skipped silently, and every parameter is checked before any
work starts.

Skips: an entry of an input folder that is not read (another file type, a dangling symbolic link,
a folder named like an image, a GlaS image without its annotation) is named, with a count, in one
``warning: ...`` line on stderr; ``label --masks`` reads every type ``init`` reads (.jpg and .gif
too); ``predict`` on a folder with no image is an error unless ``--allow-empty``.
Parameters: a bad config value exits 2 with one line naming the key, what it accepts and the value,
and leaves the workspace byte for byte unchanged (nothing ran); a loss that becomes NaN or explodes
stops training with the step and a lower train.lr to try, and nothing is saved as finished.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage as ndi
from typer.testing import CliRunner

from .helpers import TINY, scalar, write_png
from .test_bad_inputs import copy_ws, digest, rgb

TYPES = ".png, .bmp, .tif, .tiff, .jpg, .jpeg, .gif, .nii, .nii.gz"


@pytest.fixture(scope="module")
def trained_ws(tmp_path_factory):
    """A tiny synthetic workspace with a trained suggestive ensemble (copied per test)."""
    from seglearn.cli.app import app

    root = tmp_path_factory.mktemp("base") / "ws"
    runner = CliRunner()
    r = runner.invoke(app, ["init", str(root), "--synthetic", "8", *TINY])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(root), "--no-progress"])
    assert r.exit_code == 0, r.output
    return root


def cli(argv: list, monkeypatch) -> tuple[int, str]:
    from seglearn.cli.app import app

    monkeypatch.setenv("COLUMNS", "1000")  # one message per line, not wrapped
    r = CliRunner().invoke(app, [str(a) for a in argv])
    assert "Traceback" not in r.output
    if r.exception is not None:
        assert isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.output


def stderr_lines(log) -> list[str]:
    return [x for x in log.read_text().splitlines() if x.startswith(("warning: ", "error: "))]


def disc_mask(h: int, w: int, seed: int) -> np.ndarray:
    """Two separate discs, 0/255: two objects whatever the file type keeps of the edges."""
    yy, xx = np.mgrid[:h, :w]
    rng = np.random.default_rng(seed)
    out = np.zeros((h, w), bool)
    for cy, cx in ((h // 4, w // 4), (3 * h // 4, 3 * w // 4)):
        cy, cx = cy + int(rng.integers(-1, 2)), cx + int(rng.integers(-1, 2))
        out |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (min(h, w) // 6) ** 2
    return out


# ----------------------------------------------------------------------------- item 9: skips
def test_init_names_what_it_does_not_read(zygote, tmp_path):
    """Through the real entry point: one warning line with the count, every name and why."""
    im = tmp_path / "im"
    write_png(im / "a.png", rgb())
    Image.fromarray(rgb(seed=1)).save(im / "b.gif")          # GIF is an image type now
    (im / "notes.txt").write_text("not an image")
    (im / "sub.png").mkdir()                                  # a folder named like an image
    os.symlink(tmp_path / "deleted.png", im / "gone.png")     # a dangling symbolic link
    (im / ".DS_Store").write_bytes(b"x")                      # hidden: not reported
    status, _ = zygote.run(["init", tmp_path / "ws", "--images", im], tmp_path / "log")
    assert status == 0, (tmp_path / "log").read_text()
    assert stderr_lines(tmp_path / "log") == [
        f"warning: images folder {im}: 3 entries not read: a symbolic link to a missing file: "
        f"gone.png; not a type seglearn reads ({TYPES}): notes.txt; a folder (subfolders are not "
        "read): sub.png"]
    from seglearn.store import Workspace

    with Workspace.open(tmp_path / "ws") as w:
        assert sorted(it.name for it in w.items()) == ["a", "b"]


def test_init_glas_names_an_image_without_annotation(monkeypatch, tmp_path):
    g = tmp_path / "glas"
    for name in ("train_1", "train_2", "testA_1"):
        write_png(g / f"{name}.png", rgb(seed=len(name)))
    for name in ("train_1", "testA_1"):
        write_png(g / f"{name}_anno.png", disc_mask(24, 32, 0).astype(np.uint8))
    with pytest.warns(UserWarning) as rec:
        code, out = cli(["init", tmp_path / "ws", "--glas", g], monkeypatch)
    assert code == 0, out
    assert [str(w.message) for w in rec] == [
        f"GlaS folder {g}: 1 entry not read: a GlaS image without its annotation "
        "(train_2_anno.bmp/png): train_2.png"]
    from seglearn.store import Workspace

    with Workspace.open(tmp_path / "ws") as w:  # train_2 would have been a pool image the
        assert sorted(it.name for it in w.items()) == ["testA_1", "train_1"]  # oracle cannot label


def test_label_reads_jpg_and_gif_masks_and_names_the_rest(zygote, trained_ws, tmp_path):
    """A .jpg and a .gif mask beside a .png one: all three imported (they used to be skipped while
    `label` reported success); the one file it cannot read is named, with the count."""
    ws = copy_ws(trained_ws, tmp_path)
    from seglearn.store import Workspace

    with Workspace.open(ws) as w:
        items = w.unlabeled("pool")[:3]
    assert len(items) == 3
    m = tmp_path / "m"
    m.mkdir()
    truth = {}
    for it, ext in zip(items, (".png", ".jpg", ".gif")):
        fg = disc_mask(it.height, it.width, it.id)
        truth[it.id] = fg
        img = Image.fromarray(fg.astype(np.uint8) * 255)
        img.save(m / f"{it.name}{ext}", **({"quality": 95} if ext == ".jpg" else {}))
    (m / "readme.txt").write_text("masks from the expert")
    status, _ = zygote.run(["label", ws, "--masks", m], tmp_path / "log")
    log = (tmp_path / "log").read_text()
    assert status == 0, log
    assert "labeled 3 item(s)" in log
    assert stderr_lines(tmp_path / "log") == [
        f"warning: mask folder {m}: 1 entry not read: not a type seglearn reads ({TYPES}): "
        "readme.txt"]
    with Workspace.open(ws) as w:
        for iid, fg in truth.items():
            lab = w.read_label(iid)
            _, n = ndi.label(fg, structure=np.ones((3, 3)))  # 8-connected, as read_mask
            assert lab.max() == n == 2 and (lab > 0).sum() == pytest.approx(fg.sum(), rel=0.05)


def test_label_folder_without_a_readable_mask_is_refused(monkeypatch, trained_ws, tmp_path):
    ws = copy_ws(trained_ws, tmp_path)
    before = digest(ws)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.webp").write_bytes(b"x")
    (tmp_path / "m" / "notes.txt").write_text("x")
    code, out = cli(["label", ws, "--masks", tmp_path / "m"], monkeypatch)
    assert code == 2
    assert (f"error: mask folder {tmp_path}/m contains no mask images (looked for {TYPES}); "
            f"2 entries not read: not a type seglearn reads ({TYPES}): a.webp, notes.txt") in out
    assert digest(ws) == before


@pytest.fixture(scope="module")
def slq(tmp_path_factory):
    """A tiny exported model (an untrained quantized FCN: predict only has to run)."""
    from seglearn.export import export_model
    from seglearn.models.fcn import FCN
    from seglearn.quant.convert import quantize_model

    torch.manual_seed(0)
    model = quantize_model(FCN(3, width=4, depth=2), {"weight": "twn", "act": "dorefa"})
    model.train()
    model(torch.rand(2, 3, 16, 16))  # the activation quantizers see one batch
    model.eval()
    path = tmp_path_factory.mktemp("model") / "m.slq"
    export_model(model, path)
    return path


def test_predict_on_a_folder_without_images(monkeypatch, slq, tmp_path):
    (tmp_path / "empty").mkdir()
    code, out = cli(["predict", slq, tmp_path / "empty", "--out", tmp_path / "out"], monkeypatch)
    assert code == 2
    assert (f"error: images folder {tmp_path}/empty holds no images (looked for {TYPES}); pass "
            "--allow-empty if that is expected") in out
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="holds no images"):
        code, out = cli(["predict", slq, tmp_path / "empty", "--out", tmp_path / "out",
                         "--allow-empty", "--no-progress"], monkeypatch)
    assert code == 0 and "wrote 0 instance-label PNG(s)" in out, out


def test_predict_names_what_a_folder_holds_besides_images(monkeypatch, slq, tmp_path):
    write_png(tmp_path / "in" / "a.png", rgb())
    (tmp_path / "in" / "a.psd").write_bytes(b"x")
    with pytest.warns(UserWarning) as rec:
        code, out = cli(["predict", slq, tmp_path / "in", "--out", tmp_path / "out",
                         "--no-progress"], monkeypatch)
    assert code == 0 and "wrote 1 instance-label PNG(s)" in out, out
    assert [str(w.message) for w in rec] == [
        f"images folder {tmp_path}/in: 1 entry not read: not a type seglearn reads ({TYPES}): a.psd"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png"]


# ----------------------------------------------------------------------------- item 10: parameters
STRATEGIES = "coreset, random, representative, suggestive, uncertainty"
REFUSED = [
    (["--strategy", "bogus"],
     f"--strategy: active.strategy must be one of {STRATEGIES}, not 'bogus'"),
    (["--budget", "0"], "--budget: active.budget must be at least 1, not 0"),
    (["--set", "postprocess.fg_threshold=1.5"],
     "--set: postprocess.fg_threshold must be in [0, 1], not 1.5"),
    (["--set", "active.score=stdev"],
     "--set: active.score must be one of bald, entropy, std, variance, not 'stdev'"),
    (["--set", "train.lr=.nan"], "--set train.lr=.nan: train.lr must be a finite number, not nan"),
    (["--set", "ensemble.quant.weight=twn"],
     "--set: ensemble.quant.w_bits=7 does not fit ensemble.quant.weight=twn: twn: bits must be "
     "one of (2,), not 7"),
]


@pytest.mark.parametrize("args,message", REFUSED, ids=[a[-1] for a, _ in REFUSED])
def test_refused_select_writes_nothing(args, message, monkeypatch, trained_ws, tmp_path):
    """A bad value is refused before the pool is scored (an unknown strategy used to fail only
    after every pool image was scored and stored)."""
    ws = copy_ws(trained_ws, tmp_path)
    before = digest(ws)
    code, out = cli(["select", ws, "--no-progress", *args], monkeypatch)
    assert code == 2, out
    assert f"error: {message}" in out, out
    assert digest(ws) == before


def test_simulate_unknown_strategy_fails_before_the_first_one_runs(monkeypatch, tmp_path):
    code, out = cli(["simulate", "--out", tmp_path / "sim", "--no-progress", *TINY, "--set",
                     "simulate.strategies=[random, suggestiv]"], monkeypatch)
    assert code == 2
    assert (f"error: --set: simulate.strategies: 'suggestiv' is not a strategy; each must be one "
            f"of {STRATEGIES}") in out, out
    assert not (tmp_path / "sim").exists()


def test_exponent_float_is_accepted_end_to_end(monkeypatch, trained_ws, tmp_path):
    """`--set train.lr=1e-3`: YAML 1.1 reads 1e-3 as text; a float key takes it."""
    ws = copy_ws(trained_ws, tmp_path)
    (tmp_path / "c.yaml").write_text("train:\n  lr: 5e-4\n")
    code, out = cli(["select", ws, "--no-progress", "--strategy", "random", "--set",
                     "train.lr=1e-3"], monkeypatch)
    assert code == 0, out
    from seglearn.config import load_config

    assert load_config(tmp_path / "c.yaml", ["train.weight_decay=1E-5"]).train.lr == 5e-4


# ----------------------------------------------------------------------------- divergence
def test_nan_loss_stops_train_and_saves_nothing_as_finished(monkeypatch, trained_ws, tmp_path):
    """The loss turns NaN at step 3 of 4 of the first member: `train` exits 2 naming the step and
    a lower train.lr; no model row, the round unfinished, the step-2 checkpoint kept and finite."""
    import seglearn.train.engine as engine

    ws = copy_ws(trained_ws, tmp_path)
    real = engine.segmentation_loss
    calls = [0]

    def nan_from_third(logits, target, weight=1.0):
        calls[0] += 1
        loss = real(logits, target, weight)
        return loss * float("nan") if calls[0] >= 3 else loss

    monkeypatch.setattr(engine, "segmentation_loss", nan_from_third)
    models_before = scalar(ws, "SELECT COUNT(*) FROM models")
    code, out = cli(["train", ws, "--no-progress", "--set", "ensemble.steps=4", "--set",
                     "train.checkpoint_every=2"], monkeypatch)
    assert code == 2, out
    assert ("error: training stopped at step 3 of 4: the loss is nan; train.lr=0.002 is probably "
            "too high: try a lower one (e.g. --set train.lr=0.0002). Nothing was saved as a "
            "finished model; the checkpoint of step 2 is kept (`seglearn train --resume` "
            "continues from it)") in out, out
    assert scalar(ws, "SELECT COUNT(*) FROM models") == models_before
    newest = max((ws / "models").glob("round_*"), key=lambda p: p.name)
    ckpts = sorted(newest.rglob("member_*.pt"))
    assert [p.name for p in ckpts] == ["member_0.pt"] and not list(newest.rglob("*.json"))
    state = engine.load_checkpoint(ckpts[0])
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


class _Batches:
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            yield {"image": torch.rand(2, 3, 16, 16, generator=g),
                   "target": (torch.rand(2, 1, 16, 16, generator=g) > 0.5).float()}


def _fit(callback, steps: int, tmp_path, every: int = 2):
    from seglearn.config import TrainConfig
    from seglearn.models.fcn import FCN
    from seglearn.train.engine import fit

    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, lr=1e-3, bf16=False, device="cpu", checkpoint_every=every)
    return fit(FCN(3, width=4, depth=2), _Batches(), cfg, callbacks=[callback],
               checkpoint=tmp_path / "c.pt", progress=False)


def test_exploding_loss_stops_training(tmp_path):
    """A loss that grows 10x a step (an extra term of 10**step) stops at the first step above
    EXPLODED (1000) times the first loss: first ~ 1 + 1; step 4 ~ 1 + 1000 (below), step 5 above."""
    from seglearn.train.callbacks import Callback
    from seglearn.train.engine import EXPLODED, TrainingDiverged

    class Grows(Callback):
        def extra_loss(self, model, step, total):
            return torch.tensor(10.0 ** step)

    assert EXPLODED == 1000.0
    with pytest.raises(TrainingDiverged, match=r"^training stopped at step 5 of 8: the loss "
                       r"exploded to 1(\.\d+)?e\+04 \(it started at [\d.]+\); train\.lr=0\.001 .*"
                       r"the checkpoint of step 4 is kept"):
        _fit(Grows(), 8, tmp_path)


def test_non_finite_weights_are_never_saved(tmp_path):
    """An update that leaves NaN weights behind a finite loss (an infinite gradient): caught at
    the next checkpoint, which is not written; the one before is kept, bit for bit."""
    from seglearn.train.callbacks import Callback
    from seglearn.train.engine import TrainingDiverged

    snapshot = {}

    class Poison(Callback):
        def after_step(self, model, step, total):
            if step == 2:
                snapshot["bytes"] = (tmp_path / "c.pt").read_bytes()  # the step-2 checkpoint
            if step == 3:
                with torch.no_grad():
                    w = next(model.parameters())
                    w[(0,) * w.ndim] = math.nan

    with pytest.raises(TrainingDiverged, match=r"step 4 of 4: the weights are no longer finite"):
        _fit(Poison(), 4, tmp_path)
    assert (tmp_path / "c.pt").read_bytes() == snapshot["bytes"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
