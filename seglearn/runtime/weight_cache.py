"""Per-layer weight preparations made once per loaded model, not on every call.

The fast convs turn a layer's stored weights into what their kernel runs on (INQ's ``sign << shift``
integers, unpacked ternary masks, the float GEMM matrix with its exactness plan from
``checks.gemm_split_plan``). That work depends on the weights alone, yet it ran on every image and
every tile row: about 70 ms of serial time per 512x512 image for the INQ-7 FCN (measured with
``bench/runtime.py --profile``), which the second core cannot share.

``cached(sources, key, build)`` returns ``build()`` and remembers it under the identity of the
``sources`` arrays. A hit is safe only while the sources cannot have changed, so it is used only
for arrays that are read-only down their whole ``base`` chain: a loaded model's arrays are (they
are views of the immutable bytes read from the ``.slq``), arrays a caller passes in usually are
not, and those are prepared on every call as before. An entry is dropped when any source array
is garbage-collected (weak references), so the cache never outlives its model and an ``id`` that
is reused later cannot hit a stale entry. Arrays the build returns are made read-only, so they
may themselves be the sources of a further cached step (INQ: integers, then the GEMM plan).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import numpy as np

_entries: dict[tuple, tuple[list, Any]] = {}


def immutable(a) -> bool:
    """True when ``a`` is an ndarray that no one can write through: it and every ``base`` below it
    are read-only arrays, or the chain ends in an immutable buffer (``bytes``)."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return False
        a = a.base
    return a is None or isinstance(a, bytes)


def _freeze(value):
    if isinstance(value, np.ndarray):
        value.flags.writeable = False
    elif isinstance(value, tuple):
        for v in value:
            _freeze(v)
    return value


def cached(sources: tuple, key: tuple, build: Callable[[], Any]):
    """``build()``, computed once per (``sources`` by identity, ``key``) while every source is
    immutable and alive; recomputed on every call otherwise. Returned arrays are read-only."""
    if not all(immutable(s) for s in sources):
        return build()
    k = tuple(id(s) for s in sources) + key
    hit = _entries.get(k)
    if hit is not None and all(ref() is s for ref, s in zip(hit[0], sources)):
        return hit[1]
    value = _freeze(build())

    def drop(_ref, k=k, entries=_entries):  # bound now: at interpreter exit the global is None
        entries.pop(k, None)

    _entries[k] = ([weakref.ref(s, drop) for s in sources], value)
    return value


def clear() -> None:
    """Forget every entry (tests; a long-lived process that swaps models needs nothing: entries
    die with their arrays)."""
    _entries.clear()
