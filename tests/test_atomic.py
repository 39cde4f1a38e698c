"""seglearn.atomic: the one write path. The target is replaced whole or not at all, the temp file
never survives a failure (an error in the writer, ENOSPC/EDQUOT in write or fsync, Ctrl-C), and a
full disk is reported with the device and the file."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from seglearn import atomic


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    data = bytes(range(256)) * 9000  # > 2 MiB: several os.write chunks
    assert atomic.write_bytes(target, data) == target
    assert target.read_bytes() == data and listing(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("where,code,words", [
    ("write", errno.ENOSPC, "no space left on"),
    ("write", errno.EDQUOT, "disk quota exceeded on"),
    ("fsync", errno.ENOSPC, "no space left on"),
])
def test_full_disk_keeps_the_old_file_and_names_device_and_file(tmp_path, monkeypatch, where, code,
                                                                 words):
    target = tmp_path / "model.slq"
    target.write_bytes(b"old")
    real = getattr(os, where)

    def failing(fd, *args):
        if where == "write":
            real(fd, bytes(args[0][:10]))  # part of it lands first
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, where, failing)
    with pytest.raises(atomic.DiskFullError) as info:
        atomic.write_bytes(target, b"x" * 100)
    monkeypatch.undo()
    msg = str(info.value)
    assert msg.startswith(words) and f"while writing {target}" in msg
    assert f"mounted at {mount_point(tmp_path)}" in msg
    assert info.value.errno == code and isinstance(info.value, OSError)
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["model.slq"]


def mount_point(p: Path) -> Path:
    """Oracle: the first ancestor whose parent is on another device (``os.path.ismount``)."""
    p = p.absolute()
    while not os.path.ismount(p):
        p = p.parent
    return p


def test_device_of_names_the_mount_point():
    here = Path(__file__).parent
    assert f"(mounted at {mount_point(here)})" in atomic.device_of(here)


def test_output_writes_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sheet.csv"
    with pytest.raises(KeyboardInterrupt):
        with atomic.output(target) as fh:
            fh.write(b"half")
            raise KeyboardInterrupt
    assert listing(tmp_path) == []
    with atomic.output(target) as fh:
        fh.write(b"whole")
    assert target.read_bytes() == b"whole" and listing(tmp_path) == ["sheet.csv"]


def test_interrupt_during_the_write_removes_the_temp_file(tmp_path, monkeypatch):
    real = os.write

    def interrupted(fd, data):
        real(fd, bytes(data[:3]))
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes(tmp_path / "a.pt", b"abcdef")
    assert listing(tmp_path) == []


def test_a_folder_as_target_fails_before_writing(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        atomic.write_bytes(tmp_path / "d", b"x")
    assert listing(tmp_path) == ["d"] and listing(tmp_path / "d") == []
