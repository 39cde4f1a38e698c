"""bench/runtime.py's interleaved timing: every function once per round, in rotating order, each
function's min and median over its own calls."""


import pytest

from bench_scripts import load_bench



def _bench():
    return load_bench("runtime")


def test_rounds_run_every_function_once_in_rotating_order(monkeypatch):
    bench = _bench()
    order, clock = [], [0.0]
    cost = {"a": 1.0, "b": 2.0, "c": 4.0}  # seconds each call advances the fake clock

    def make(name):
        def fn():
            order.append(name)
            clock[0] += cost[name] * (1 + len(order) % 2)  # every other call twice as slow
        return fn

    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    t = bench.time_interleaved({k: make(k) for k in cost}, reps=3, warmup=1)
    assert order[:3] == ["a", "b", "c"]  # warm-up
    assert order[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    for name, c in cost.items():
        assert t[name]["min_ms"] == pytest.approx(1e3 * c)
        assert c * 1e3 <= t[name]["median_ms"] <= 2 * c * 1e3
