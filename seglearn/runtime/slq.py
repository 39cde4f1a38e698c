"""The ``.slq`` model file: a zip of ``graph.json``, ``arrays/<name>.npy`` and ``manifest.json``.

``graph.json``   ``{"format": "seglearn-slq", "format_version": N, ...}``: ops in topological order,
                 tensor encodings, postprocess parameters (written by ``seglearn.export``).
``arrays/*.npy`` every integer array the ops reference, plain ``.npy`` (never pickled objects).
``manifest.json``  ``{"format": ..., "format_version": N, "entries": {name: sha256 hex}}``.

Reading validates before trusting anything: the zip opens (a truncated file is a clear error), every
member name is a plain relative name that stays inside its folder (no absolute path, no ``..``,
no backslash; checked before any member is read), the manifest lists exactly the members present
and each member's SHA-256 matches, and the format version is not newer than this code. Arrays are
read with ``np.load(allow_pickle=False)`` from bytes. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from seglearn import atomic

FORMAT = "seglearn-slq"
FORMAT_VERSION = 1
GRAPH = "graph.json"
MANIFEST = "manifest.json"
ARRAY_DIR = "arrays/"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # array names: one path component, no separators


class SlqFormatError(ValueError):
    """A .slq file that is unreadable, incomplete, tampered with or from a newer seglearn."""


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a)
    if a.dtype.hasobject:
        raise SlqFormatError("object arrays cannot be stored in a .slq file")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def write_slq(path: str | Path, graph: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``graph`` (JSON-able dict) and ``arrays`` to ``path``; returns the path."""
    path = Path(path)
    members: dict[str, bytes] = {}
    g = dict(graph, format=FORMAT, format_version=FORMAT_VERSION)
    members[GRAPH] = json.dumps(g, indent=1, sort_keys=True).encode()
    for name, a in arrays.items():
        if not _NAME.match(name) or name in (".", ".."):
            raise SlqFormatError(f"array name {name!r} must be one plain file name")
        members[f"{ARRAY_DIR}{name}.npy"] = _array_bytes(a)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "entries": {n: _sha(b) for n, b in sorted(members.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.output(path) as fh:  # temp + fsync + rename; no temp file survives a failure
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for n, b in members.items():
                zf.writestr(n, b)
            zf.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return path


def check_member_name(name: str) -> None:
    """Raise unless ``name`` is a relative path with no ``..``, no backslash and no empty part."""
    bad = (not name or name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name)
           or any(part in ("", ".", "..") for part in name.split("/")))
    if bad:
        raise SlqFormatError(f"unsafe entry name {name!r} in .slq file (absolute path, '..' or backslash)")


def _check_version(d: dict, what: str) -> None:
    if d.get("format") != FORMAT:
        raise SlqFormatError(f"{what} says format {d.get('format')!r}, expected {FORMAT!r}")
    v = d.get("format_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise SlqFormatError(f"{what} has no integer format_version")
    if v > FORMAT_VERSION:
        raise SlqFormatError(f"model file format version {v} was written by a newer seglearn "
                             f"(this one reads up to version {FORMAT_VERSION}); upgrade seglearn")


def read_slq(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate a .slq file: returns ``(graph dict, {array name: ndarray})``."""
    path = Path(path)
    if not path.is_file():
        raise SlqFormatError(f"model file {path} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise SlqFormatError(f"{path} is not a readable .slq file (truncated or not a zip): {e}") from None
    with zf:
        names = zf.namelist()
        for n in names:  # validate every name before reading any member
            check_member_name(n)
        if len(set(names)) != len(names):
            raise SlqFormatError(f"{path} has duplicate entries")
        if MANIFEST not in names:
            raise SlqFormatError(f"{path} has no {MANIFEST}")
        try:
            data = {n: zf.read(n) for n in names}
        except (zipfile.BadZipFile, OSError, EOFError, zlib_error()) as e:
            raise SlqFormatError(f"{path} is damaged (truncated?): {e}") from None
    try:
        manifest = json.loads(data.pop(MANIFEST))
    except (ValueError, UnicodeDecodeError) as e:
        raise SlqFormatError(f"{path}: {MANIFEST} is not JSON: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict):
        raise SlqFormatError(f"{path}: {MANIFEST} has no 'entries' table")
    _check_version(manifest, f"{path} {MANIFEST}")
    entries = manifest["entries"]
    unlisted = sorted(set(data) - set(entries))
    missing = sorted(set(entries) - set(data))
    if unlisted:
        raise SlqFormatError(f"{path}: entry {unlisted[0]!r} is not listed in the manifest")
    if missing:
        raise SlqFormatError(f"{path}: manifest lists {missing[0]!r} but the file lacks it")
    for n, b in data.items():
        if _sha(b) != entries[n]:
            raise SlqFormatError(f"{path}: checksum mismatch for entry {n!r} (file corrupted or tampered)")
    if GRAPH not in data:
        raise SlqFormatError(f"{path} has no {GRAPH}")
    try:
        graph = json.loads(data.pop(GRAPH))
    except (ValueError, UnicodeDecodeError) as e:
        raise SlqFormatError(f"{path}: {GRAPH} is not JSON: {e}") from None
    if not isinstance(graph, dict):
        raise SlqFormatError(f"{path}: {GRAPH} is not an object")
    _check_version(graph, f"{path} {GRAPH}")
    arrays = {}
    for n, b in data.items():
        if not (n.startswith(ARRAY_DIR) and n.endswith(".npy")) or "/" in n[len(ARRAY_DIR):]:
            raise SlqFormatError(f"{path}: unexpected entry {n!r}")
        try:
            arrays[n[len(ARRAY_DIR):-4]] = np.load(io.BytesIO(b), allow_pickle=False)
        except ValueError as e:
            raise SlqFormatError(f"{path}: entry {n!r} is not a plain .npy array: {e}") from None
    return graph, arrays


def zlib_error():
    import zlib

    return zlib.error
