"""Two tiny valid integer graphs, built by hand (no torch), that between them use all 19 op
kinds; the untrusted-.slq tests mutate them. Both run on any image whose sides are multiples of 2."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np

from seglearn.runtime.bitpack import bitplanes, pack_bits, pack_signs
from seglearn.runtime.fixedpoint import quantize_multipliers
from seglearn.runtime.slq import FORMAT, FORMAT_VERSION


def _op(kind, ins, out, attrs=None, arrays=None):
    return {"op": kind, "in": ins, "out": out, "attrs": attrs or {}, "arrays": arrays or {}}


def _fields(ops: list, logits: str) -> dict:
    return {"ops": ops, "outputs": {"logits": logits}, "multiple": 2, "halo": 4, "in_channels": 3,
            "out_channels": 2, "scale": 1.0,
            "postprocess": {"min_area": 1, "seed_min_area": 1, "fill_holes": True},
            "decisions": {"fg": {"channel": 0, "t": 0, "direction": 1},
                          "contour": {"channel": 1, "t": 2, "direction": -1}},
            "layers": [{"name": f"conv{i}"} for i, op in enumerate(ops) if op["op"].startswith("conv")]}


def model_a() -> tuple[dict, dict]:
    """lut_u8, conv_int8, threshold, maxpool, conv_lut, requant, upsample, concat, conv_ternary,
    threshold_pack, conv_binary (packed)."""
    r = np.random.default_rng(0)
    m0, sh = quantize_multipliers(np.full(4, 0.3))
    wt = r.integers(-1, 2, (2, 3, 3, 8))
    arrays = {
        "lut.table": np.tile((np.arange(256) // 64).astype(np.uint8), (3, 1)),
        "c1.w": r.integers(-3, 4, (4, 3, 3, 3)).astype(np.int8),
        "t2.t": np.tile(np.array([-10, 0, 10], np.int32), (4, 1)), "t2.direction": np.ones(4, np.int8),
        "c4.table": np.tile(np.array([-1, 0, 1, 2], np.int32), (4, 1)),
        "c4.w": r.integers(-2, 3, (4, 3, 3, 4)).astype(np.int32),
        "r5.sign": np.ones(4, np.int8), "r5.bias": np.arange(4, dtype=np.int32), "r5.M0": m0,
        "r5.shift": sh, "r5.in_shift": np.zeros(4, np.int8),
        "c8.wpos": pack_bits((wt == 1).astype(np.uint8)), "c8.wneg": pack_bits((wt == -1).astype(np.uint8)),
        "p9.tau": np.zeros(2, np.int32), "p9.direction": np.array([1, -1], np.int8),
        "c10.wp": pack_signs(r.choice([-1, 1], (2, 3, 3, 2)).astype(np.int8)),
    }
    ops = [
        _op("lut_u8", ["image"], "c0", arrays={"table": "lut.table"}),
        _op("conv_int8", ["c0"], "a1", {"zp": 0, "padding": 1}, {"w": "c1.w"}),
        _op("threshold", ["a1"], "c2", arrays={"t": "t2.t", "direction": "t2.direction"}),
        _op("maxpool", ["c2"], "c3"),
        _op("conv_lut", ["c3"], "a4", {"padding": 1}, {"table": "c4.table", "w": "c4.w"}),
        _op("requant", ["a4"], "c5", {"zp": 1, "lo": 0, "hi": 3},
            {k: f"r5.{k}" for k in ("sign", "bias", "M0", "shift", "in_shift")}),
        _op("upsample", ["c5"], "c6"),
        _op("concat", ["c6", "c2"], "c7"),
        _op("conv_ternary", ["c7"], "a8", {"bits": 2, "padding": 1}, {"wpos": "c8.wpos", "wneg": "c8.wneg"}),
        _op("threshold_pack", ["a8"], "p9", arrays={"tau": "p9.tau", "direction": "p9.direction"}),
        _op("conv_binary", ["p9"], "a10", {"cin": 2, "padding": 1, "packed": True}, {"wp": "c10.wp"}),
    ]
    return _fields(ops, "a10"), arrays


def model_b() -> tuple[dict, dict]:
    """lut_u8, conv_pow2, threshold_pack, maxpool_packed, conv_binary_threshold, concat_packed,
    conv_binary (packed), threshold, convt_int8, requant, conv_int8_requant, conv_offset, convt_lut."""
    r = np.random.default_rng(1)
    m0, sh = quantize_multipliers(np.full(3, 0.05))
    arrays = {
        "lut.table": np.tile((np.arange(256) // 128).astype(np.uint8), (3, 1)),
        "c1.wsign": r.integers(-1, 2, (4, 3, 3, 3)).astype(np.int8),
        "c1.wshift": r.integers(0, 3, (4, 3, 3, 3)).astype(np.uint8),
        "p2.tau": np.zeros(4, np.int32), "p2.direction": np.ones(4, np.int8),
        "c4.wp": pack_signs(r.choice([-1, 1], (4, 3, 3, 4)).astype(np.int8)),
        "c4.tau": np.zeros(4, np.int32), "c4.direction": np.ones(4, np.int8),
        "c6.wp": pack_signs(r.choice([-1, 1], (3, 1, 1, 8)).astype(np.int8)),
        "t7.t": np.zeros((3, 1), np.int32), "t7.direction": np.ones(3, np.int8),
        "c8.w": r.integers(-5, 6, (3, 2, 2, 3)).astype(np.int8),
        "r9.sign": np.ones(3, np.int8), "r9.bias": np.zeros(3, np.int32), "r9.M0": m0, "r9.shift": sh,
        "r9.in_shift": np.zeros(3, np.int8),
        "c10.w": r.integers(-4, 5, (3, 3, 3, 3)).astype(np.int8), "c10.bias": np.zeros(3, np.int32),
        "c10.M0": m0, "c10.shift": sh,
        "c11.wplanes": bitplanes(r.integers(0, 2, (2, 3, 3, 3)), 1),
        "t11.t": np.array([[3], [-2]], np.int32), "t11.direction": np.array([1, -1], np.int8),
        "c12.table": np.tile(np.array([0, 1], np.int32), (2, 1)),
        "c12.w": r.integers(-3, 4, (2, 2, 2, 2)).astype(np.int32),
    }
    ops = [
        _op("lut_u8", ["image"], "c0", arrays={"table": "lut.table"}),
        _op("conv_pow2", ["c0"], "a1", {"zp": 0, "padding": 1}, {"wsign": "c1.wsign", "wshift": "c1.wshift"}),
        _op("threshold_pack", ["a1"], "p2", arrays={"tau": "p2.tau", "direction": "p2.direction"}),
        _op("maxpool_packed", ["p2"], "p3"),
        _op("conv_binary_threshold", ["p3"], "p4", {"cin": 4, "padding": 1, "packed": True},
            {"wp": "c4.wp", "tau": "c4.tau", "direction": "c4.direction"}),
        _op("concat_packed", ["p4", "p3"], "p5", {"channels": [4, 4]}),
        _op("conv_binary", ["p5"], "a6", {"cin": 8, "padding": 0, "packed": True}, {"wp": "c6.wp"}),
        _op("threshold", ["a6"], "c7", arrays={"t": "t7.t", "direction": "t7.direction"}),
        _op("convt_int8", ["c7"], "a8", {"zp": 0}, {"w": "c8.w"}),
        _op("requant", ["a8"], "c9", {"zp": 0, "lo": 0, "hi": 255},
            {k: f"r9.{k}" for k in ("sign", "bias", "M0", "shift", "in_shift")}),
        _op("conv_int8_requant", ["c9"], "c10", {"zp": 0, "y_zp": 0, "lo": 0, "hi": 1, "padding": 1},
            {"w": "c10.w", "bias": "c10.bias", "M0": "c10.M0", "shift": "c10.shift"}),
        _op("maxpool", ["c10"], "c10p"),
        _op("conv_offset", ["c10p"], "a11", {"bits": 1, "padding": 1}, {"wplanes": "c11.wplanes"}),
        _op("threshold", ["a11"], "c11", arrays={"t": "t11.t", "direction": "t11.direction"}),
        _op("convt_lut", ["c11"], "a12", {}, {"table": "c12.table", "w": "c12.w"}),
    ]
    return _fields(ops, "a12"), arrays


MODELS = {"a": model_a, "b": model_b}


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def members(graph: dict, arrays: dict) -> dict[str, bytes]:
    """The zip members of a .slq file (without the manifest)."""
    g = dict(graph, format=FORMAT, format_version=FORMAT_VERSION)
    out = {"graph.json": json.dumps(g).encode()}
    out.update({f"arrays/{k}.npy": npy(v) for k, v in arrays.items()})
    return out


def seal(m: dict[str, bytes], listed: set | None = None) -> dict[str, bytes]:
    """Add a manifest whose checksums match (listing ``listed``, default all members), so that
    only the change under test is wrong."""
    names = sorted(m) if listed is None else sorted(listed)
    man = {"format": FORMAT, "format_version": FORMAT_VERSION,
           "entries": {n: hashlib.sha256(m[n]).hexdigest() for n in names if n in m}}
    return dict(m, **{"manifest.json": json.dumps(man).encode()})


def zip_bytes(m: dict[str, bytes], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for n, b in m.items():
            zf.writestr(n, b)
    return buf.getvalue()


def slq(graph: dict, arrays: dict) -> bytes:
    return zip_bytes(seal(members(graph, arrays)))


def forge_declared_size(data: bytes, name: str, size: int) -> bytes:
    """Rewrite the uncompressed size that the central directory declares for member ``name``."""
    b = bytearray(data)
    at = 0
    while True:
        at = b.index(b"PK\x01\x02", at)
        n = int.from_bytes(b[at + 28:at + 30], "little")
        if b[at + 46:at + 46 + n].decode() == name:
            b[at + 24:at + 28] = size.to_bytes(4, "little")
            return bytes(b)
        at += 4


def npy_with_header(a: np.ndarray, shape: tuple) -> bytes:
    """``a``'s .npy bytes with a header that claims ``shape`` (same header length)."""
    good = npy(a)
    hlen = int.from_bytes(good[8:10], "little")
    header = good[10:10 + hlen].decode("latin1")
    forged = header.replace(repr(a.shape), repr(tuple(shape))).rstrip()
    forged = forged + " " * (hlen - 1 - len(forged)) + "\n"
    if len(forged) != hlen:
        raise AssertionError("header does not fit")
    return good[:10] + forged.encode("latin1") + good[10 + hlen:]
