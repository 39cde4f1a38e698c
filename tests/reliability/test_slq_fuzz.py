"""Fuzz: mutations of two tiny valid .slq files (issue 19, item 8). Every mutation must end in a
clean refusal (SlqFormatError, which the CLI prints as one `error:` line, exit 2) or in a model
whose predict() yields a valid label image; no other exception type may escape, and no mutation
may make the loader allocate more than a few MB (tracemalloc peak per mutation).

A seeded loop, bounded to a few seconds: field deletions, type swaps and numeric extremes
(0, -1, 1, 1e30, NaN, inf, 2^31, 2^63, "x", null, [], {}) on a sample of graph.json paths;
dtype swaps and reshapes of every array; forged .npy header shapes; extra listed and unlisted
zip entries; oversized declared sizes; manifest damage; truncations. SEGLEARN_FUZZ_N=<n> samples
n graph mutations per model instead of the default (for longer runs by hand).
"""

from __future__ import annotations

import copy
import json
import os
import random
import tracemalloc
import traceback

import numpy as np
import pytest

from seglearn.runtime import load_model
from seglearn.runtime.model import model_from_parts
from seglearn.runtime.slq import GRAPH, SlqFormatError, read_slq

from .slq_models import MODELS, forge_declared_size, members, npy, npy_with_header, seal, zip_bytes

EXTREMES = [0, -1, 1, 1e30, float("nan"), float("inf"), 2**31, 2**63, "x", None, True, [], {}]
PEAK_LIMIT = 16 * 2**20  # bytes traced while loading one mutated file (the valid ones use < 1 MB)
N_GRAPH = int(os.environ.get("SEGLEARN_FUZZ_N", "80"))
ARRAY_SAMPLE = min(1.0, N_GRAPH / 300)
IMAGE = np.random.default_rng(5).integers(0, 256, (10, 12, 3), dtype=np.uint8)


def paths(node, prefix=()):
    """Every path into a JSON tree (dict keys and list indices), containers included."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from paths(v, prefix + (k,))


def mutated(graph: dict, path: tuple, value, delete: bool) -> dict:
    g = copy.deepcopy(graph)
    parent = g
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return g


def graph_mutations(graph: dict, rng: random.Random, n: int):
    """A seeded sample of n (description, graph) pairs; deletions and extremes of every kind."""
    all_paths = list(paths(graph))
    for i in range(n):
        p = rng.choice(all_paths)
        if i % 4 == 0:
            yield f"delete {p}", mutated(graph, p, None, True)
        else:
            v = EXTREMES[(i + rng.randrange(len(EXTREMES))) % len(EXTREMES)]
            yield f"{p} = {v!r}", mutated(graph, p, v, False)


def array_mutations(arrays: dict, rng: random.Random):
    """Type swaps, reshapes and forged headers of every array: a seeded sample (all for N >= 300)."""
    for name, a in arrays.items():
        yield from (x for x in _array_mutations(name, a) if rng.random() < ARRAY_SAMPLE)


def _array_mutations(name: str, a: np.ndarray):
    for dtype in (np.float64, np.int64, np.uint8, np.bool_, np.int16):
        if a.dtype != dtype:
            yield f"{name} as {np.dtype(dtype)}", {name: npy(a.astype(dtype))}
    yield f"{name} flattened", {name: npy(a.reshape(-1))}
    yield f"{name} extra axis", {name: npy(a[None])}
    yield f"{name} empty", {name: npy(a[:0])}
    yield f"{name} 0-d", {name: npy(np.asarray(a.reshape(-1)[0]))}
    for shape in ((2**40, 2**5), (2**62,) + a.shape[1:], a.shape[::-1], (0,) * a.ndim):
        if tuple(shape) != a.shape:
            yield f"{name} header claims {shape}", {name: npy_with_header(a, shape)}


def zip_mutations(m: dict[str, bytes]):
    """Zip-level damage: every variant returns the file bytes."""
    yield "unlisted entry", zip_bytes(seal(dict(m, **{"arrays/extra.npy": npy(np.zeros(3, np.int8))}),
                                          listed=set(m)))
    yield "listed text entry", zip_bytes(seal(dict(m, **{"notes.txt": b"hello"})))
    yield "listed nested entry", zip_bytes(seal(dict(m, **{"arrays/x/y.npy": npy(np.zeros(1))})))
    big = dict(m, **{"arrays/big.npy": bytes(8 * 2**20)})
    yield "big unlisted entry", zip_bytes(seal(big, listed=set(m)))
    good = zip_bytes(seal(m))
    for name in sorted(m)[:4] + ["manifest.json"]:
        for size in (2**32 - 1, 2**29, 0, 1):
            yield f"{name} declares {size} bytes", forge_declared_size(good, name, size)
    sealed = seal(m)
    man = json.loads(sealed["manifest.json"])
    for desc, bad in (("entries a list", dict(man, entries=list(man["entries"]))),
                      ("entries missing", {k: v for k, v in man.items() if k != "entries"}),
                      ("a checksum is a number", dict(man, entries=dict(man["entries"], **{GRAPH: 7}))),
                      ("version 1e30", dict(man, format_version=1e30)),
                      ("deep nesting", [[[[[[[[[[[]]]]]]]]]]])):
        yield f"manifest {desc}", zip_bytes(dict(sealed, **{"manifest.json": json.dumps(bad).encode()}))
    yield "graph.json nested 100000 deep", zip_bytes(seal(dict(m, **{GRAPH: b"[" * 100000 + b"]" * 100000})))
    for frac in (0.1, 0.5, 0.9, 0.99):
        yield f"truncated at {frac}", good[: int(len(good) * frac)]
    stored = zip_bytes(seal(m), compress=False)
    flipped = bytearray(stored)
    flipped[len(stored) // 3] ^= 0x40
    yield "one bit flipped", bytes(flipped)


def outcome(load, tag: str, failures: list) -> str:
    """'refused' or 'ran'; any other exception, an invalid mask or a large allocation while
    loading is recorded in ``failures``. ``load()`` returns the model."""
    tracemalloc.start()
    try:
        model = load()
    except SlqFormatError as e:
        if not str(e) or "\n" in str(e).strip():
            failures.append(f"{tag}: refusal is not one line: {e!r}")
        return "refused"
    except Exception:  # noqa: BLE001 - exactly what this test looks for
        failures.append(f"{tag}: load raised\n{traceback.format_exc(limit=3)}")
        return "error"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if peak > PEAK_LIMIT:
            failures.append(f"{tag}: {peak / 2**20:.0f} MB traced while loading")
    try:
        labels = model.predict(IMAGE)
    except Exception:  # noqa: BLE001
        failures.append(f"{tag}: predict raised\n{traceback.format_exc(limit=3)}")
        return "error"
    if labels.shape != IMAGE.shape[:2] or labels.dtype != np.int32 or labels.min() < 0:
        failures.append(f"{tag}: invalid mask {labels.shape} {labels.dtype}")
    return "ran"


@pytest.mark.parametrize("which", sorted(MODELS))
def test_fuzz_mutations_refused_cleanly_or_run(which, tmp_path):
    graph, arrays = MODELS[which]()
    base = members(graph, arrays)
    failures: list[str] = []
    counts = {"refused": 0, "ran": 0, "error": 0}
    path = tmp_path / "m.slq"

    def from_file(tag: str, data: bytes) -> None:
        path.write_bytes(data)
        counts[outcome(lambda: load_model(path, kernels="ref"), tag, failures)] += 1

    from_file("unmodified", zip_bytes(seal(base)))
    assert counts == {"refused": 0, "ran": 1, "error": 0}, failures  # the base model is valid
    _, read_arrays = read_slq(path)
    rng = random.Random(f"slq-fuzz-{which}")
    for tag, g in graph_mutations(graph, rng, N_GRAPH):
        # graph.json as read_slq would parse it (NaN, inf and big ints survive the JSON round trip);
        # the zip layer is fuzzed by the two loops below
        g = json.loads(json.dumps(g))
        counts[outcome(lambda: model_from_parts(g, read_arrays, "ref", path), tag, failures)] += 1
    for tag, swap in array_mutations(arrays, rng):
        m = dict(base, **{f"arrays/{k}.npy": b for k, b in swap.items()})
        from_file(tag, zip_bytes(seal(m)))
    for tag, data in zip_mutations(base):
        from_file(tag, data)
    assert not failures, "\n".join(failures[:10])
    # the loop reached both outcomes: mutations of unused fields still run, the rest are refused
    assert counts["refused"] > 50 and counts["ran"] > 5, counts
