"""Timing helpers the benchmarks share (run as scripts: `benchmarks/` is on sys.path)."""

from __future__ import annotations

import math
import statistics
import time

import jax


def time_interleaved(fns: dict, repeats: int, min_time_s: float) -> dict:
    """Median seconds per call of each zero-argument callable, rounds interleaved.

    Each callable is called once to compile, once more to size its inner loop (enough calls to
    last `min_time_s`), then `repeats` rounds run every callable's inner loop in turn.
    """
    inner = {}
    for name, fn in fns.items():
        jax.block_until_ready(fn())
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        inner[name] = max(1, math.ceil(min_time_s / max(time.perf_counter() - t0, 1e-9)))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                out = fn()
            jax.block_until_ready(out)
            samples[name].append((time.perf_counter() - t0) / inner[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def xla_flops(jitted, *args) -> float | None:
    """XLA's FLOP count of the jitted function compiled for `args`, or None if the backend gives none."""
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
    except Exception:  # cost analysis is optional per backend
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None
