"""Issue 19 items 4, 5, 11 through the CLI: an image edited after `init`, random bytes over pages
of seglearn.db, and `train --resume` with nothing to resume. Each is refused with exit 2 and one
`error:` line naming the file (or workspace) and the way out, and leaves the workspace unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from .helpers import TINY, scalar, write_png

DB = "seglearn.db"


def cli(*argv):
    from seglearn.cli.app import app

    r = CliRunner().invoke(app, [str(a) for a in argv])
    assert "Traceback" not in r.output
    if r.exception is not None:
        assert isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.output


@pytest.fixture(scope="module")
def base_ws(tmp_path_factory):
    """A tiny synthetic workspace with one trained (finished) suggestive round."""
    root = tmp_path_factory.mktemp("integrity") / "ws"
    code, out = cli("init", root, "--synthetic", 6, *TINY)
    assert code == 0, out
    code, out = cli("train", root, "--no-progress")
    assert code == 0, out
    return root


@pytest.fixture
def ws(base_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one message per line, not wrapped
    dest = tmp_path / "ws"
    shutil.copytree(base_ws, dest)  # copies mtimes too (copy2): stamps still match
    return dest


def one_line_error(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


def item_rows(ws: Path, labeled: bool):
    con = sqlite3.connect(f"file:{ws / DB}?mode=ro", uri=True)
    try:
        return con.execute(
            "SELECT i.id, i.name, i.image_path, i.mask_path FROM items i WHERE i.split = 'pool' AND "
            f"{'' if labeled else 'NOT '}EXISTS (SELECT 1 FROM labels l WHERE l.item_id = i.id) "
            "ORDER BY i.id").fetchall()
    finally:
        con.close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def state(ws: Path) -> tuple:
    """What a refused command must leave alone: the rows that record work, and the label files."""
    counts = tuple(scalar(ws, f"SELECT COUNT(*) FROM {t}")
                   for t in ("labels", "rounds", "models", "suggestions", "scores"))
    return counts, sorted(p.name for p in (ws / "labels").iterdir())


def edit_image(ws: Path, rel: str) -> Path:
    """Rewrite an image with other pixels, same size and format (what an edit in an image tool does)."""
    from PIL import Image

    path = Path(rel) if Path(rel).is_absolute() else ws / rel
    arr = np.asarray(Image.open(path)).copy()
    arr[0, 0] = 255 - arr[0, 0]
    write_png(path, arr)
    return path


def mask_file(ws: Path, tmp_path: Path, name: str, mask_rel: str) -> Path:
    masks = tmp_path / "masks"
    masks.mkdir(exist_ok=True)
    return Path(shutil.copy(ws / mask_rel, masks / f"{name}.png"))


# ----------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("command", ["train", "select", "label"])
def test_edited_image_is_refused(ws, tmp_path, command):
    if command == "train":  # a training image (labeled)
        _, name, rel, _ = item_rows(ws, labeled=True)[0]
        argv = ["train", ws, "--no-progress"]
    else:  # a pool image: scored by select, labeled by label
        _, name, rel, mask_rel = item_rows(ws, labeled=False)[0]
        argv = (["select", ws, "--budget", 2, "--no-progress"] if command == "select" else
                ["label", ws, "--masks", mask_file(ws, tmp_path, name, mask_rel).parent])
    path = edit_image(ws, rel)
    before = state(ws)
    code, out = cli(*argv)
    assert code == 2, out
    assert f"image file {path} of item {name!r} has changed since it was imported" \
        in one_line_error(out)
    assert state(ws)[0][:4] == before[0][:4] and state(ws)[1] == before[1]


def test_touched_but_unchanged_image_is_accepted(ws, tmp_path):
    _, name, rel, mask_rel = item_rows(ws, labeled=False)[0]
    path = ws / rel
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))  # same bytes, new mtime
    code, out = cli("label", ws, "--masks", mask_file(ws, tmp_path, name, mask_rel).parent)
    assert code == 0, out
    assert scalar(ws, "SELECT image_mtime_ns FROM items WHERE name = ?", name) == st.st_mtime_ns + 10**10


# ----------------------------------------------------------------------------- item 5
def damage(db: Path, table: str | int, start: int = 0, length: int | None = None) -> None:
    """Random bytes over the root page of ``table`` (found in sqlite_master, not assumed), or over
    page number ``table``, from byte ``start`` on (``length`` bytes, default: the rest)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0"))
    size = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    page = table if isinstance(table, int) else roots[table]
    with open(db, "r+b") as f:
        f.seek((page - 1) * size + start)
        f.write(np.random.default_rng(7).bytes(size - start if length is None else length))


def quick_check(db: Path) -> list:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        con.close()


# suggestions: a page `label` never reads (only the quick_check before its write finds it);
# scores cell pointers: SQLite's quick_check reports rows instead of raising; items + labels:
# pages `label` reads itself; sqlite_master (page 1 after the 100-byte header): the schema.
DAMAGE = {"unread page": [("suggestions", 0, None)], "cell pointers": [("scores", 8, 16)],
          "read pages": [("items", 0, None), ("labels", 0, None)],
          "schema page": [(1, 100, None)]}


@pytest.mark.parametrize("where", list(DAMAGE))
def test_damaged_database_is_refused_and_reported(ws, tmp_path, where):
    db = ws / DB
    code, out = cli("select", ws, "--budget", 2, "--no-progress")  # fills scores + suggestions
    assert code == 0, out
    _, name, _, mask_rel = item_rows(ws, labeled=False)[0]
    masks = mask_file(ws, tmp_path, name, mask_rel).parent
    checkpoint(db)  # every commit in seglearn.db itself, so the damaged pages are the live ones
    for table, start, length in DAMAGE[where]:
        damage(db, table, start, length)
    assert quick_check(db) != ["ok"]  # it is damage, by SQLite's own account
    before, labels = files(ws), sorted(os.listdir(ws / "labels"))
    code, out = cli("label", ws, "--masks", masks)
    assert code == 2, out
    line = one_line_error(out)
    assert f"workspace database {db} is damaged" in line and "nothing was written" in line
    assert f"seglearn backup {ws}" in line and ".recover" in line
    assert files(ws) == before and sorted(os.listdir(ws / "labels")) == labels
    code, out = cli("status", ws)
    assert code == 2 and f"workspace database {db} is damaged" in one_line_error(out), out
    code, out = cli("status", ws, "--check")
    line = one_line_error(out)
    assert code == 2 and f"workspace database {db} is damaged" in line, out
    assert "integrity_check" in line or where == "schema page"  # the schema fails even to open
    assert files(ws) == before


def checkpoint(db: Path) -> None:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not blocked
    finally:
        con.close()


EMPTY = hashlib.sha256(b"").hexdigest()


def files(ws: Path) -> dict:
    """SHA-256 of seglearn.db and of its WAL (a commit could land in either). An empty WAL counts
    as none: SQLite removes it when a refused command closes the workspace, and it held nothing."""
    return {p.name: sha(p) for p in ws.iterdir() if p.name.startswith(DB) and p.is_file()
            and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and sha(p) == EMPTY)}


def test_status_check_on_a_sound_workspace(ws):
    (ws / "labels" / "zz.r1.png").write_bytes(b"left by a killed label")
    code, out = cli("status", ws, "--check")
    assert code == 0, out
    assert "integrity_check ok" in out and "label files missing: 0" in out
    assert "orphan label files (never committed, safe to delete): 1" in out
    assert "labels/zz.r1.png" in out


def dump(db: Path) -> list:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def test_backup_then_restore_after_damage(ws, tmp_path):
    db = ws / DB
    code, out = cli("backup", ws)
    assert code == 0, out
    (made,) = sorted((ws / "backups").iterdir())
    assert made.name.startswith("seglearn-") and str(made) in out.replace("\n", "")
    assert dump(made) == dump(db)
    out_file = tmp_path / "mine.db"
    assert cli("backup", ws, out_file)[0] == 0 and dump(out_file) == dump(db)
    code, out = cli("backup", ws, out_file)
    assert code == 2 and f"backup file {out_file} already exists" in one_line_error(out)
    damage(db, "items")
    code, out = cli("backup", ws, tmp_path / "of-damage.db")
    assert code == 2 and "is damaged" in one_line_error(out)
    assert not (tmp_path / "of-damage.db").exists()
    shutil.copy(made, db)  # the recovery the message describes
    for side in ("-wal", "-shm"):
        (ws / (DB + side)).unlink(missing_ok=True)
    code, out = cli("status", ws, "--check")
    assert code == 0, out
    _, name, _, mask_rel = item_rows(ws, labeled=False)[0]
    code, out = cli("label", ws, "--masks", mask_file(ws, tmp_path, name, mask_rel).parent)
    assert code == 0, out


# ----------------------------------------------------------------------------- item 11
def test_resume_with_nothing_to_resume(ws, tmp_path):
    before = state(ws)
    code, out = cli("train", ws, "--resume", "--no-progress")
    assert code == 2, out
    line = one_line_error(out)
    assert f"nothing to resume: workspace {ws} has no unfinished suggestive training round " \
           "(all 1 finished)" in line and "without --resume" in line
    code, out = cli("train", ws, "--final", "--resume", "--no-progress")
    assert code == 2 and f"run `seglearn train {ws} --final` without --resume" in one_line_error(out)
    assert state(ws) == before  # no round started, nothing trained
    fresh = tmp_path / "fresh"
    assert cli("init", fresh, "--synthetic", 4, *TINY)[0] == 0
    code, out = cli("train", fresh, "--resume", "--no-progress")
    assert code == 2 and "has no unfinished suggestive training round;" in one_line_error(out)
    assert scalar(fresh, "SELECT COUNT(*) FROM rounds") == 0
