"""The ``.slq`` model file: a zip of ``graph.json``, ``arrays/<name>.npy`` and ``manifest.json``.

``graph.json``   ``{"format": "seglearn-slq", "format_version": N, ...}``: ops in topological order,
                 tensor encodings, postprocess parameters (written by ``seglearn.export``).
``arrays/*.npy`` every integer array the ops reference, plain ``.npy`` (never pickled objects).
``manifest.json``  ``{"format": ..., "format_version": N, "entries": {name: sha256 hex}}``.

Reading validates before trusting anything (a .slq file may come from anyone): the zip's end record
bounds its member count and directory before ``ZipFile`` builds its list; every member name is a
plain relative name that stays inside its folder (no absolute path, no ``..``, no backslash);
nothing is decompressed before the manifest is read and found to list exactly the members present,
each declared size fits, and all of them fit ``MAX_TOTAL_BYTES``; every member is streamed with its
declared size as a cap and its SHA-256 checked as it is read; ``.npy`` headers are parsed
(``numpy.lib.format``, integer dtypes only, no pickle) and their shape x itemsize must match the
declared size before any data is read. The format version must not be newer than this code.
The graph itself is checked by ``schema.validate_graph`` when the model is built.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
import zlib
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


# Every entry gets this timestamp (the zip format's earliest), so the same model always gives the
# same bytes: a file's SHA-256 identifies the model, not the second it was written.
ENTRY_TIME = (1980, 1, 1, 0, 0, 0)


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ENTRY_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def write_slq(path: str | Path, graph: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``graph`` (JSON-able dict) and ``arrays`` to ``path``; returns the path. The bytes
    depend only on the graph and the arrays (fixed entry timestamps)."""
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
                zf.writestr(_entry(n), b)
            zf.writestr(_entry(MANIFEST), json.dumps(manifest, indent=1, sort_keys=True))
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


# Bounds of what a .slq file may make the reader hold (all checked before the bytes are read).
MAX_ENTRIES = 4096                 # zip members (the exporter writes one per array role)
MAX_TOTAL_BYTES = 512 * 2**20      # all members, uncompressed (a width-64 FCN in int32 is ~150 MB)
MAX_JSON_BYTES = 16 * 2**20        # graph.json and manifest.json, each
MAX_CENTRAL_DIR = 4 * 2**20        # the zip's central directory (~100 bytes per member)
NPY_DTYPES = "biu"                 # the runtime's arrays are integers (bool, int, uint)
_CHUNK = 1 << 20


def _central_dir_size(path: Path) -> tuple[int, int]:
    """``(members, central directory bytes)`` from the zip's end record, read before ``ZipFile``
    builds its member list (a forged count of millions would otherwise cost gigabytes)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - (22 + 65535)))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise SlqFormatError(f"{path} is not a readable .slq file (truncated or not a zip): "
                             "no end-of-archive record")
    count = int.from_bytes(tail[at + 10:at + 12], "little")
    cd_size = int.from_bytes(tail[at + 12:at + 16], "little")
    return count, cd_size


class _Capped:
    """Reads a zip member through SHA-256, refusing to deliver more than ``cap`` bytes."""

    def __init__(self, f, cap: int, what: str):
        self.f, self.cap, self.what, self.n, self.h = f, cap, what, 0, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.cap - self.n + 1 if n is None or n < 0 else min(n, self.cap - self.n + 1)
        b = self.f.read(n)
        self.n += len(b)
        if self.n > self.cap:
            raise SlqFormatError(f"{self.what} holds more than the {self.cap} bytes it declares")
        self.h.update(b)
        return b

    def read_all(self) -> bytes:
        """The rest of the entry as immutable ``bytes``: arrays made from it are read-only down to
        their buffer, which lets the runtime prepare each layer's weights once (``weight_cache``)."""
        chunks = []
        while True:
            b = self.read(_CHUNK)
            if not b:
                return b"".join(chunks)
            chunks.append(b)


def _read_npy(r: _Capped, size: int, what: str) -> np.ndarray:
    """A plain ``.npy`` array from ``r``: the header is parsed first and its shape x itemsize must
    equal the entry's declared size less the header (a forged shape is refused before any
    allocation); the data are then read, capped, into one buffer."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(r)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = header(r, max_header_size=10000)
    except (ValueError, SyntaxError, TypeError, EOFError) as e:  # numpy's own header errors
        raise SlqFormatError(f"{what} is not a plain .npy array: {e}") from None
    if dtype.hasobject or dtype.kind not in NPY_DTYPES or dtype.fields is not None or dtype.subdtype:
        raise SlqFormatError(f"{what} is not a plain .npy array: dtype {dtype} (integer arrays only)")
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise SlqFormatError(f"{what}: .npy header has an invalid shape {shape}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != size - r.n:
        raise SlqFormatError(f"{what}: .npy header says shape {shape} of {dtype} ({nbytes} bytes) but "
                             f"the entry holds {size - r.n} bytes of data")
    data = r.read_all()
    if len(data) != nbytes:
        raise SlqFormatError(f"{what} is truncated: {len(data)} of {nbytes} bytes")
    a = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
    a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
    return a.astype(dtype.newbyteorder("="), copy=False)  # the kernels compare dtypes exactly


def _open_checked(path: Path) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo]]:
    """Open the zip after bounding its central directory; validate names, sizes and the count."""
    count, cd_size = _central_dir_size(path)
    if count > MAX_ENTRIES or cd_size > MAX_CENTRAL_DIR:
        raise SlqFormatError(f"{path} has {count} entries in a {cd_size}-byte directory "
                             f"(a model file has at most {MAX_ENTRIES})")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise SlqFormatError(f"{path} is not a readable .slq file (truncated or not a zip): {e}") from None
    try:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for n in names:  # validate every name before reading any member
            check_member_name(n)
        if len(set(names)) != len(names):
            raise SlqFormatError(f"{path} has duplicate entries")
        if len(names) > MAX_ENTRIES:
            raise SlqFormatError(f"{path} has {len(names)} entries (at most {MAX_ENTRIES})")
    except SlqFormatError:
        zf.close()
        raise
    return zf, {i.filename: i for i in infos}


def read_slq(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate a .slq file: returns ``(graph dict, {array name: ndarray})``.

    Nothing is decompressed before the manifest is checked: the manifest (itself bounded) must list
    exactly the entries present, each entry's declared size must fit its bound and all of them
    ``MAX_TOTAL_BYTES``. Each entry is then streamed with its declared size as a cap, its SHA-256
    computed while reading and compared before the bytes are used; ``.npy`` headers are checked
    against the declared size before their data are read (``_read_npy``).
    """
    path = Path(path)
    if not path.is_file():
        raise SlqFormatError(f"model file {path} does not exist")
    zf, infos = _open_checked(path)
    with zf:
        if MANIFEST not in infos:
            raise SlqFormatError(f"{path} has no {MANIFEST}")
        try:
            manifest = _json_member(zf, infos[MANIFEST], path, None)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict):
                raise SlqFormatError(f"{path}: {MANIFEST} has no 'entries' table")
            _check_version(manifest, f"{path} {MANIFEST}")
            entries = manifest["entries"]
            present = set(infos) - {MANIFEST}
            unlisted = sorted(present - set(entries))
            missing = sorted(set(entries) - present)
            if unlisted:
                raise SlqFormatError(f"{path}: entry {unlisted[0]!r} is not listed in the manifest")
            if missing:
                raise SlqFormatError(f"{path}: manifest lists {missing[0]!r} but the file lacks it")
            for n in sorted(present):
                if not isinstance(entries[n], str):
                    raise SlqFormatError(f"{path}: {MANIFEST} entry {n!r} is not a SHA-256 hex string")
                if n != GRAPH and not (n.startswith(ARRAY_DIR) and n.endswith(".npy")
                                       and "/" not in n[len(ARRAY_DIR):]):
                    raise SlqFormatError(f"{path}: unexpected entry {n!r}")
            if GRAPH not in present:
                raise SlqFormatError(f"{path} has no {GRAPH}")
            total = sum(infos[n].file_size for n in present)
            big = max(present, key=lambda n: infos[n].file_size)
            if total > MAX_TOTAL_BYTES:
                raise SlqFormatError(f"{path}: entries declare {total} bytes uncompressed (largest "
                                     f"{big!r}: {infos[big].file_size}), more than the "
                                     f"{MAX_TOTAL_BYTES}-byte bound of a model file")
            graph = _json_member(zf, infos[GRAPH], path, entries[GRAPH])
            if not isinstance(graph, dict):
                raise SlqFormatError(f"{path}: {GRAPH} is not an object")
            _check_version(graph, f"{path} {GRAPH}")
            arrays = {}
            for n in sorted(present - {GRAPH}):
                arrays[n[len(ARRAY_DIR):-4]] = _array_member(zf, infos[n], path, entries[n])
        except (zipfile.BadZipFile, OSError, EOFError, zlib_error(), NotImplementedError, RuntimeError) as e:
            # RuntimeError: an encrypted member; NotImplementedError: an unknown compression method
            raise SlqFormatError(f"{path} is damaged (truncated?): {e}") from None
    return graph, arrays


def _verify(r: _Capped, info: zipfile.ZipInfo, path: Path, sha: str | None) -> None:
    if r.n != info.file_size:
        raise SlqFormatError(f"{path}: entry {info.filename!r} is truncated")
    if sha is not None and r.h.hexdigest() != sha:
        raise SlqFormatError(f"{path}: checksum mismatch for entry {info.filename!r} "
                             "(file corrupted or tampered)")


def _json_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, sha: str | None):
    if info.file_size > MAX_JSON_BYTES:
        raise SlqFormatError(f"{path}: {info.filename} declares {info.file_size} bytes "
                             f"(at most {MAX_JSON_BYTES})")
    with zf.open(info) as f:
        r = _Capped(f, info.file_size, f"{path}: entry {info.filename!r}")
        data = r.read_all()
    _verify(r, info, path, sha)
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise SlqFormatError(f"{path}: {info.filename} is not JSON: {e}") from None


def _array_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, sha: str) -> np.ndarray:
    what = f"{path}: entry {info.filename!r}"
    with zf.open(info) as f:
        r = _Capped(f, info.file_size, what)
        try:
            a = _read_npy(r, info.file_size, what)
        except SlqFormatError:
            r.read_all()  # a damaged header is reported as the checksum mismatch it also is
            _verify(r, info, path, sha)
            raise
    _verify(r, info, path, sha)
    return a


def zlib_error():
    return zlib.error
