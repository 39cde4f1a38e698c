"""Commands that could destroy data refuse instead, with one clear message, exit 2 and nothing
changed on disk (issue 19, items 1, 2, 3 and 6):

* predict: an --out that is, is inside or contains the input; an existing output without
  --overwrite; inputs whose stems collide (a.png, a.tif, a.jpg) each get their own output;
* init --force: only a seglearn workspace that no process is using, never a folder of the user's
  own files, a plain file, a folder holding the import's sources, or one holding the current folder;
* export: never into a workspace's managed files, never over an existing file without
  --overwrite, a folder as output is a clear error and leaves no temp file;
* a full disk (ENOSPC raised by the write system call, ``os.write``, which ``seglearn.atomic``
  uses for every file) during train, export, predict, select and evaluate: "no space left on
  DEVICE while writing FILE", exit 2, and no temp file left behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from .helpers import TINY, scalar, write_png


def run(*argv) -> tuple[int, str]:
    from seglearn.cli.app import app

    r = CliRunner().invoke(app, [str(a) for a in argv])
    return r.exit_code, r.output


def refused(argv: list, *needles: str) -> str:
    code, out = run(*argv)
    assert code == 2, out
    assert "Traceback" not in out and out.count("error:") == 1, out
    flat = " ".join(out.split())  # rich wraps long lines
    for n in needles:
        assert " ".join(str(n).split()) in flat, (n, out)
    return out


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (name -> SHA-256), the SQLite side files excepted."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock"))}


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


def rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny exported .slq (untrained: what it predicts does not matter, where it goes does)."""
    import torch

    from seglearn.export import export_model
    from seglearn.models.fcn import FCN
    from seglearn.quant.convert import quantize_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.slq"
    net = quantize_model(FCN(3, width=4, depth=2), {"weight": "twn", "act": "dorefa"})
    net.train()
    net(torch.rand(2, 3, 32, 32))  # one batch: the activation quantizers see data
    export_model(net, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny synthetic workspace with a suggestive ensemble and a final segmenter (copied per test)."""
    root = tmp_path_factory.mktemp("trained") / "ws"
    for argv in (["init", root, "--synthetic", 6, *TINY], ["train", root, "--no-progress"],
                 ["train", root, "--final", "--no-progress"]):
        code, out = run(*argv)
        assert code == 0, out
    return root


@pytest.fixture
def ws(trained, tmp_path) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(trained, dst)
    # Fold a write-ahead log the copy may carry into the database file (a connection of the
    # training commands not yet garbage-collected leaves it unmerged): otherwise the first command
    # that merely opens the copy checkpoints it, and the file's bytes change without any write,
    # which made the "refused: nothing changed" checks below fail now and then.
    con = sqlite3.connect(dst / "seglearn.db")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return dst


@pytest.fixture
def disk_full(monkeypatch, tmp_path):
    """Make the disk under ``tmp_path`` full: ``os.write`` to a file there writes half of what it
    is given (as a real full disk does before it refuses), then raises ENOSPC."""
    real, root = os.write, os.path.realpath(tmp_path)

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(root + os.sep):
            real(fd, bytes(memoryview(data)[: max(1, len(data) // 2)]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


# ----------------------------------------------------------------------------- 1. predict
@pytest.mark.parametrize("where", ["same", "inside", "contains"])
def test_predict_refuses_out_that_is_inside_or_contains_the_input(model, tmp_path, where):
    src = tmp_path / "data" / "images"
    for i in range(2):
        write_png(src / f"img{i}.png", rgb(32, 32, i))
    out = {"same": src, "inside": src / "labels", "contains": tmp_path / "data"}[where]
    before = digest(tmp_path / "data")
    how = {"same": "is", "inside": "is inside", "contains": "contains"}[where]
    refused(["predict", model, src, "--out", out, "--no-progress"],
            f"output folder {out} {how} the input folder {src}")
    assert digest(tmp_path / "data") == before
    assert not (src / "labels").exists()


def test_predict_refuses_a_workspace_managed_folder(model, trained, tmp_path):
    write_png(tmp_path / "in" / "a.png", rgb(32, 32, 0))
    before = digest(trained)
    refused(["predict", model, tmp_path / "in", "--out", trained / "labels", "--no-progress"],
            f"output folder {trained / 'labels'} is inside the managed files of workspace {trained}")
    assert digest(trained) == before


def test_predict_gives_colliding_stems_their_own_outputs(model, tmp_path):
    from seglearn.data.io import read_image
    from seglearn.runtime import load_model

    src = tmp_path / "in"
    src.mkdir()
    shapes = {"a.png": (32, 32), "a.tif": (24, 40), "a.jpg": (16, 48), "b.png": (8, 16)}
    for i, (name, (h, w)) in enumerate(shapes.items()):
        Image.fromarray(rgb(h, w, i)).save(src / name)
    code, out = run("predict", model, src, "--out", tmp_path / "out", "--no-progress")
    assert code == 0 and "wrote 4" in out, out
    m = load_model(model)
    wrote = sorted(p.name for p in (tmp_path / "out").iterdir())
    # the stems of a.* collide, so their outputs keep the whole name; b is alone, so b.png
    assert wrote == ["a.jpg.png", "a.png.png", "a.tif.png", "b.png"], wrote
    for name in shapes:
        label = tmp_path / "out" / (f"{name}.png" if name.startswith("a.") else "b.png")
        got = np.asarray(Image.open(label))
        assert got.shape == shapes[name]  # each output is its own image's, none overwritten
        np.testing.assert_array_equal(got, m.predict(read_image(src / name)))


def test_predict_output_names_are_unique_across_folders_and_overlays():
    from seglearn.app.predict import output_names

    files = [Path("x/a.png"), Path("y/a.png"), Path("x/a.tif"), Path("x/A.PNG"),
             Path("x/a_overlay.png"), Path("x/c.png")]
    names = output_names(files, overlay=True)
    outs = [n for b in names for n in (f"{b}.png", f"{b}_overlay.png")]
    assert len({n.casefold() for n in outs}) == len(outs) == 2 * len(files), names
    assert names[-1] == "c"  # a stem no other input has stays as it was


def test_predict_never_overwrites_without_the_flag(model, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write_png(src / "a.png", rgb(32, 32, 0))
    write_png(src / "b.png", rgb(32, 32, 1))
    out.mkdir()
    (out / "b.png").write_bytes(b"the user's own file")
    refused(["predict", model, src, "--out", out, "--no-progress"],
            f"output {out / 'b.png'}", "already exists", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["b.png"]  # not even a.png was written
    assert (out / "b.png").read_bytes() == b"the user's own file"
    code, text = run("predict", model, src, "--out", out, "--overwrite", "--no-progress")
    assert code == 0 and "wrote 2" in text, text
    assert np.asarray(Image.open(out / "b.png")).shape == (32, 32)


def test_predict_refuses_to_write_over_an_input_file(model, tmp_path):
    # an image given as a file, --out its own folder: a.tif -> a.png is fine, a.png -> a.png is not
    src = tmp_path / "in"
    write_png(src / "a.png", rgb(32, 32, 0))
    before = digest(src)
    refused(["predict", model, src / "a.png", "--out", src, "--overwrite", "--no-progress"],
            f"output {src / 'a.png'} would overwrite the input image")
    assert digest(src) == before


# ----------------------------------------------------------------------------- 2. init --force
def test_init_force_refuses_a_folder_of_user_files(tmp_path):
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "chapter1.tex").write_text("two years of work")
    (target / "figures").mkdir()
    (target / "figures" / "f1.png").write_bytes(b"png")
    before = digest(target)
    refused(["init", target, "--synthetic", 4, "--force", *TINY],
            f"refusing to replace {target}", "not a seglearn workspace", "chapter1.tex")
    assert digest(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no staging folder left


def test_init_force_refuses_a_plain_file(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    refused(["init", target, "--synthetic", 4, "--force", *TINY], f"{target}", "is a file")
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_init_force_refuses_a_workspace_holding_the_sources(tmp_path):
    ws = tmp_path / "ws"
    code, out = run("init", ws, "--synthetic", 4, *TINY)
    assert code == 0, out
    data = ws / "my-images"
    for i in range(3):
        write_png(data / f"img{i}.png", rgb(32, 32, i))
    before = digest(ws)
    refused(["init", ws, "--images", data, "--force", *TINY],
            f"refusing to replace {ws}", f"it holds {data}", "would delete")
    assert digest(ws) == before


def test_init_force_refuses_the_folder_holding_the_current_folder(tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    code, out = run("init", ws, "--synthetic", 4, *TINY)
    assert code == 0, out
    before = digest(ws)
    monkeypatch.chdir(ws / "reports")
    refused(["init", ws, "--synthetic", 4, "--force", *TINY],
            f"refusing to replace {ws}", "contains the current folder")
    assert digest(ws) == before


HOLD_OPEN = textwrap.dedent("""
    import sys
    from seglearn.store import Workspace
    ws = Workspace.open(sys.argv[1])   # open, as a `train` is between its lock bursts
    print("OPEN", flush=True)
    sys.stdin.readline()
    ws.set_meta("still-mine", True)    # it can still write: its workspace was not replaced
    print("WROTE", flush=True)
""")


def test_init_force_refuses_a_workspace_in_use(tmp_path):
    ws = tmp_path / "ws"
    code, out = run("init", ws, "--synthetic", 4, *TINY)
    assert code == 0, out
    items = scalar(ws, "SELECT COUNT(*) FROM items")
    proc = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(ws)], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "OPEN"
        refused(["init", ws, "--synthetic", 6, "--force", *TINY],
                f"refusing to replace workspace {ws}", "another seglearn process has it open")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "WROTE"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert scalar(ws, "SELECT COUNT(*) FROM items") == items
    assert scalar(ws, "SELECT value FROM meta WHERE key = 'still-mine'") == "true"
    # once nobody uses it, --force replaces the workspace (and only then)
    code, out = run("init", ws, "--synthetic", 6, "--force", *TINY)
    assert code == 0, out
    assert scalar(ws, "SELECT COUNT(*) FROM items") == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]


# ----------------------------------------------------------------------------- 3. export
@pytest.mark.parametrize("target", ["seglearn.db", "labels/x.slq", "models/final.slq"])
def test_export_refuses_a_workspace_managed_file(ws, target):
    before = digest(ws)
    labels = scalar(ws, "SELECT COUNT(*) FROM labels")
    refused(["export", ws, ws / target], f"refusing to export to {ws / target}",
            f"managed files of workspace {ws}")
    assert digest(ws) == before
    assert scalar(ws, "SELECT COUNT(*) FROM labels") == labels


def test_export_refuses_an_existing_file_without_overwrite(ws, tmp_path):
    from seglearn.runtime import load_model

    out = tmp_path / "model.slq"
    out.write_bytes(b"last week's model")
    refused(["export", ws, out], f"export output {out} already exists", "--overwrite")
    assert out.read_bytes() == b"last week's model"
    code, text = run("export", ws, out, "--overwrite")
    assert code == 0, text
    assert load_model(out).predict(rgb(32, 32, 0)).shape == (32, 32)
    assert temp_files(tmp_path) == []


def test_export_to_a_folder_is_a_clear_error(ws, tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    refused(["export", ws, out], f"export output {out} is a folder", str(out / "model.slq"))
    assert list(out.iterdir()) == [] and temp_files(tmp_path) == []


# ----------------------------------------------------------------------------- 6. disk full
def check_full(argv: list, tmp_path: Path, written: str) -> None:
    out = refused(argv, "no space left on", "mounted at", "while writing", written)
    assert temp_files(tmp_path) == [], out


def test_disk_full_during_train(ws, tmp_path, disk_full):
    models = sorted(p for p in (ws / "models").rglob("*") if p.is_file())
    check_full(["train", ws, "--no-progress"], tmp_path, f"{ws / 'models'}")
    # the checkpoint that did not fit is not there, half-written or under a temp name
    assert sorted(p for p in (ws / "models").rglob("*") if p.is_file()) == models


def test_disk_full_during_export(ws, tmp_path, disk_full):
    check_full(["export", ws, tmp_path / "model.slq"], tmp_path, str(tmp_path / "model.slq"))
    assert not (tmp_path / "model.slq").exists()


def test_disk_full_during_predict(model, tmp_path, disk_full):
    write_png(tmp_path / "in" / "a.png", rgb(32, 32, 0))  # PIL writes through its own file object
    check_full(["predict", model, tmp_path / "in", "--out", tmp_path / "out", "--no-progress"],
               tmp_path, str(tmp_path / "out" / "a.png"))
    assert list((tmp_path / "out").iterdir()) == []


def test_disk_full_during_select(ws, tmp_path, disk_full):
    check_full(["select", ws, "--budget", 2, "--no-progress"], tmp_path, str(ws / "suggestions"))


def test_disk_full_during_evaluate(ws, tmp_path, disk_full):
    check_full(["evaluate", ws, "--no-progress"], tmp_path, str(ws / "reports"))


# ----------------------------------------------------------------------------- siblings
@pytest.mark.parametrize("cmd", ["demo", "simulate"])
def test_demo_and_simulate_refuse_a_folder_of_other_files(tmp_path, cmd):
    out = tmp_path / "results"
    out.mkdir()
    (out / "model.slq").write_bytes(b"a model from elsewhere")  # a name the command writes
    (out / "paper.tex").write_text("the user's own file")
    before = digest(out)
    argv = ["demo", out] if cmd == "demo" else ["simulate", "--out", out]
    refused([*argv, *TINY], f"{cmd} output folder {out} holds files that {cmd} did not write",
            "paper.tex")
    assert digest(out) == before and sorted(p.name for p in out.iterdir()) == ["model.slq",
                                                                               "paper.tex"]


def test_output_folder_rule_accepts_the_commands_own_outputs(tmp_path):
    from seglearn.app.outputs import check_output_folder

    own = r"curves\.(csv|json|png)|[A-Za-z0-9_.-]+-seed-?[0-9]+"
    check_output_folder(tmp_path / "new", own, "simulate")  # missing: fine
    for name in ("curves.csv", "random-seed0", ".random-seed0.staging-12"):
        (tmp_path / name).mkdir()
    check_output_folder(tmp_path, own, "simulate")  # a rerun over its own outputs
    (tmp_path / "curves.csv.bak").write_text("x")
    with pytest.raises(ValueError, match=r"curves\.csv\.bak"):
        check_output_folder(tmp_path, own, "simulate")
