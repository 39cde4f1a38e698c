"""Bad inputs through the CLI, from one table: each gives exit status 2 and one message naming the
file and the problem, no traceback, and leaves no workspace behind (or the existing one unchanged).
Unusual but valid images (16-bit, RGBA, grayscale, palette) are accepted and the conversion is
reported to the user. A model file (.slq or checkpoint) from elsewhere never runs code.

The .slq rows run `seglearn predict`; tests/runtime/test_slq_format.py (export engineer) covers
the same faults at the file-format level.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from .helpers import TINY, write_png

H, W = 24, 32


def rgb(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock")):
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- workspaces
@pytest.fixture(scope="module")
def base_ws(tmp_path_factory):
    """A tiny synthetic workspace with a trained suggestive ensemble (copied per row)."""
    from seglearn.cli.app import app

    root = tmp_path_factory.mktemp("base") / "ws"
    runner = CliRunner()
    r = runner.invoke(app, ["init", str(root), "--synthetic", "6", *TINY])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(root), "--no-progress"])
    assert r.exit_code == 0, r.output
    return root


def copy_ws(base: Path, tmp: Path) -> Path:
    """A copy of ``base`` whose WAL is folded into the database: opening a workspace (to read its
    saved config) checkpoints a leftover WAL when the connection closes, which rewrites the
    file's bytes without changing its content, so byte digests compare settled copies."""
    ws = tmp / "ws"
    shutil.copytree(base, ws)
    con = sqlite3.connect(ws / "seglearn.db")
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return ws


def unlabeled(ws: Path):
    from seglearn.store import Workspace

    with Workspace.open(ws) as w:
        return w.unlabeled("pool")[0]


# ----------------------------------------------------------------------------- .slq files
def slq_bytes(graph_version: int = 1, manifest_version: int | None = None,
              extra: dict[str, bytes] | None = None) -> bytes:
    """A .slq zip written by hand (so the faults are ours, not the writer's): graph + one array
    + a manifest whose checksums match."""
    from seglearn.runtime.slq import FORMAT

    buf = io.BytesIO()
    np.save(buf, np.arange(4, dtype=np.int32), allow_pickle=False)
    members = {"graph.json": json.dumps({"format": FORMAT, "format_version": graph_version,
                                         "ops": []}).encode(),
               "arrays/w.npy": buf.getvalue(), **(extra or {})}
    manifest = {"format": FORMAT, "format_version": manifest_version or graph_version,
                "entries": {n: hashlib.sha256(b).hexdigest() for n, b in members.items()}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
        zf.writestr("manifest.json", json.dumps(manifest))
    return out.getvalue()


def tampered_slq() -> bytes:
    src = zipfile.ZipFile(io.BytesIO(slq_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for n in src.namelist():
            data = src.read(n)
            if n == "arrays/w.npy":
                data = data[:-1] + bytes([data[-1] ^ 1])  # one bit of one array
            zf.writestr(n, data)
    return out.getvalue()


def predict_args(tmp: Path, model_bytes: bytes) -> list[str]:
    model = tmp / "model.slq"
    model.write_bytes(model_bytes)
    write_png(tmp / "in" / "x.png", rgb())
    return ["predict", str(model), str(tmp / "in" / "x.png"), "--out", str(tmp / "out")]


# ----------------------------------------------------------------------------- checkpoints
class RunsCode:
    """Unpickling this object creates ``path``: proof that a loader executed code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickled_npy(sentinel: str) -> bytes:
    """An object-dtype .npy: loading it with allow_pickle=True would create ``sentinel``."""
    buf = io.BytesIO()
    np.save(buf, np.array([RunsCode(sentinel)], dtype=object), allow_pickle=True)
    return buf.getvalue()


def replace_checkpoint(ws: Path, how: str) -> Path:
    import pickle

    import torch

    ckpt = sorted((ws / "models").rglob("member_0.pt"))[0]
    sentinel = str(ws.parent / "code-ran")
    if how == "pickle":
        ckpt.write_bytes(pickle.dumps(RunsCode(sentinel)))
    elif how == "torch-pickle":
        torch.save({"model": RunsCode(sentinel)}, ckpt)
    else:
        torch.save([1, 2, 3], ckpt)
    return ckpt


# ----------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    make: Callable  # (tmp_path, base_ws) -> argv (list of str)
    needles: tuple  # texts the output must contain; "{tmp}" is replaced by tmp_path
    ok: bool = False  # accepted (exit 0) instead of refused (exit 2)
    after: Callable | None = None  # (tmp_path) -> None: extra checks of the state left behind
    absent: tuple = ()  # texts the output must not contain
    marks: list = field(default_factory=list)


def init_with(*bad: tuple[str, Callable[[Path], None]], sets=()):
    """argv of `init --images DIR` where DIR holds a good a.png and the files written by ``bad``."""
    def make(tmp: Path, _base) -> list[str]:
        write_png(tmp / "im" / "a.png", rgb())
        for _name, writer in bad:
            writer(tmp / "im")
        return ["init", str(tmp / "ws"), "--images", str(tmp / "im"), *sets]
    return make


def label_with(writer: Callable[[Path, object], None]):
    """argv of `label WS --masks DIR` where ``writer(DIR, item)`` writes the masks."""
    def make(tmp: Path, base) -> list[str]:
        ws = copy_ws(base, tmp)
        writer(tmp / "m", unlabeled(ws))
        (tmp / "before").write_text(digest(ws))
        return ["label", str(ws), "--masks", str(tmp / "m")]
    return make


def no_workspace(tmp: Path) -> None:
    assert not (tmp / "ws").exists()
    assert not [p for p in tmp.iterdir() if ".staging" in p.name or ".creating" in p.name]


def ws_unchanged(tmp: Path) -> None:
    assert digest(tmp / "ws") == (tmp / "before").read_text()


def nothing_predicted(tmp: Path) -> None:
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir())
    assert not (tmp / "evil.npy").exists() and not (tmp.parent / "evil.npy").exists()


def no_code_ran(tmp: Path) -> None:
    assert not (tmp / "code-ran").exists()


def accepted(note: str):
    def check(tmp: Path) -> None:
        from seglearn.store import Workspace

        with Workspace.open(tmp / "ws") as w:
            assert len(w.items()) == 2
            assert any(note in n for n in (w.meta("conversions") or {}).get("b", []))
    return check


def select_args(how: str):
    def make(tmp: Path, base) -> list[str]:
        ws = copy_ws(base, tmp)
        replace_checkpoint(ws, how)
        return ["select", str(ws), "--no-progress"]
    return make


def config_args(text: str):
    def make(tmp: Path, base) -> list[str]:
        ws = copy_ws(base, tmp)
        (tmp / "bad.yaml").write_text(text)
        (tmp / "before").write_text(digest(ws))
        return ["select", str(ws), "--config", str(tmp / "bad.yaml")]
    return make


def _png_bytes(arr, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="PNG", **kw)
    return b.getvalue()


def _palette(folder: Path) -> None:
    Image.fromarray(rgb()).convert("P", palette=Image.ADAPTIVE, colors=16).save(folder / "b.png")


def _bomb(folder: Path) -> None:
    # 110 million 1-bit pixels: a few kB on disk, gigabytes once decoded as RGB
    Image.new("1", (11_000, 10_000)).save(folder / "b.png")


def _non_utf8(folder: Path) -> None:
    with open(os.fsencode(folder) + b"/b\xff\xfe.png", "wb") as fh:
        fh.write(_png_bytes(rgb()))


def _mask_values(folder: Path, it) -> None:
    m = np.zeros((it.height, it.width), np.uint8)
    m[:, : it.width // 2] = 3
    m[:, it.width // 2:] = 7  # two labels and no background
    write_png(folder / f"{it.name}.png", m)


def _mask_size(folder: Path, it) -> None:
    write_png(folder / f"{it.name}.png", np.zeros((it.height + 3, it.width), np.uint8))


def _mask_no_black(folder: Path, it) -> None:
    colours = rgb(it.height, it.width) | 1  # colours, none of them black
    write_png(folder / f"{it.name}.png", colours)


UNSAFE_ADVICE = ("set to `False`", "trust the source")  # torch's hint to load it unsafely
SLQ_NEWER = slq_bytes(graph_version=99)
SLQ = slq_bytes()
CASES = [
    Case("truncated-image", init_with(("b", lambda d: (d / "b.png").write_bytes(SLQ_PNG[:60]))),
         ("b.png", "damaged or truncated"), after=no_workspace),
    Case("zero-byte-image", init_with(("b", lambda d: (d / "b.png").write_bytes(b""))),
         ("b.png", "empty (0 bytes)"), after=no_workspace),
    Case("text-named-png", init_with(("b", lambda d: (d / "b.png").write_text("hello\n"))),
         ("b.png", "not an image"), after=no_workspace),
    Case("16-bit-image", init_with(("b", lambda d: Image.fromarray(
        (rgb()[..., 0].astype(np.uint16) * 257)).save(d / "b.png"))),
         ("b:", "16-bit image scaled to 8-bit"), ok=True, after=accepted("16-bit")),
    Case("rgba-image", init_with(("b", lambda d: write_png(
        d / "b.png", np.dstack([rgb(), np.full((H, W), 128, np.uint8)])))),
         ("b:", "alpha dropped"), ok=True, after=accepted("alpha dropped")),
    Case("grayscale-image", init_with(("b", lambda d: write_png(d / "b.png", rgb()[..., 0]))),
         ("b:", "grayscale copied to 3 channels"), ok=True, after=accepted("grayscale")),
    Case("palette-image", init_with(("b", _palette)),
         ("b:", "palette converted to RGB"), ok=True, after=accepted("palette")),
    Case("duplicate-stems", init_with(("b", lambda d: Image.fromarray(rgb()).save(d / "a.tif"))),
         ("a.png", "a.tif", "share the name"), after=no_workspace),
    Case("over-pixel-limit", init_with(sets=("--set", "data.max_pixels=500")),
         ("a.png", "24x32", "limit of 500", "decompression bomb"), after=no_workspace),
    Case("decompression-bomb", init_with(("b", _bomb)),
         ("b.png", "10000x11000", "decompression bomb"), after=no_workspace),
    Case("non-utf8-file-name", init_with(("b", _non_utf8)),
         ("b\\xff\\xfe.png", "not valid UTF-8"), after=no_workspace),
    Case("mask-unexpected-values", label_with(_mask_values),
         ("{tmp}/m/", ".png", "neither of them 0", "background must be 0"), after=ws_unchanged),
    Case("mask-colour-no-background", label_with(_mask_no_black),
         ("{tmp}/m/", ".png", "no black (0, 0, 0) background"), after=ws_unchanged),
    Case("mask-wrong-size", label_with(_mask_size),
         ("{tmp}/m/", ".png", f"but its image is"), after=ws_unchanged),
    Case("config-wrong-type", config_args("train:\n  steps: many\n"),
         ("bad.yaml", "train.steps must be int", "'many'"), after=ws_unchanged),
    Case("config-unknown-key", config_args("active:\n  budgett: 3\n"),
         ("bad.yaml", "unknown key 'active.budgett'", "active.budget"), after=ws_unchanged),
    Case("config-python-tag", config_args(
        "train: !!python/object/apply:os.system ['touch {tmp}/code-ran']\n"),
         ("bad.yaml", "not valid YAML", "python/object"), after=no_code_ran),
    Case("slq-truncated", lambda t, b: predict_args(t, SLQ[: len(SLQ) // 2]),
         ("model.slq", "truncated"), after=nothing_predicted),
    Case("slq-tampered", lambda t, b: predict_args(t, tampered_slq()),
         ("model.slq", "checksum mismatch", "arrays/w.npy"), after=nothing_predicted),
    Case("slq-newer-version", lambda t, b: predict_args(t, SLQ_NEWER),
         ("model.slq", "format version 99", "newer seglearn"), after=nothing_predicted),
    Case("slq-path-escape", lambda t, b: predict_args(t, slq_bytes(extra={"../evil.npy": b"x"})),
         ("model.slq", "unsafe entry name", "../evil.npy"), after=nothing_predicted),
    Case("slq-absolute-path", lambda t, b: predict_args(t, slq_bytes(extra={"/tmp/evil.npy": b"x"})),
         ("model.slq", "unsafe entry name"), after=nothing_predicted),
    Case("slq-pickled-array", lambda t, b: predict_args(t, slq_bytes(extra={
        "arrays/evil.npy": pickled_npy(str(t / "code-ran"))})),
         ("model.slq", "not a plain .npy array", "arrays/evil.npy"), after=no_code_ran),
    Case("checkpoint-raw-pickle", select_args("pickle"),
         ("member_0.pt", "could run code", "refuses"), after=no_code_ran, absent=UNSAFE_ADVICE),
    Case("checkpoint-torch-pickle", select_args("torch-pickle"),
         ("member_0.pt", "could run code", "refuses"), after=no_code_ran, absent=UNSAFE_ADVICE),
    Case("checkpoint-not-a-dict", select_args("list"),
         ("member_0.pt", "not a seglearn checkpoint"), after=no_code_ran),
]
SLQ_PNG = _png_bytes(rgb())


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input(case: Case, base_ws, tmp_path, monkeypatch):
    from seglearn.cli.app import app

    monkeypatch.setenv("COLUMNS", "1000")  # one message per line, not wrapped
    argv = case.make(tmp_path, base_ws)
    result = CliRunner().invoke(app, argv)
    out = result.output
    assert result.exit_code == (0 if case.ok else 2), out
    assert "Traceback" not in out
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    for needle in case.needles:
        assert needle.replace("{tmp}", str(tmp_path)) in out, out
    for text in case.absent:
        assert text not in out, out
    if case.after is not None:
        case.after(tmp_path)
