"""Runners taking turns run by run (shared by the benchmarks): this VM's
speed drifts by tens of percent over minutes, and taking turns gives every
tool the same conditions, each round in a rotated order."""

from __future__ import annotations

import statistics
import time
from typing import Optional


def take_turns(runners: dict, n: int, failures: Optional[dict] = None) -> dict[str, list[float]]:
    """The ms of each run of each runner {name: (fn, every)} or {name: (fn,
    every, before)}; a runner with every=k runs on every k-th turn, and
    `before`, when given, is called ahead of each run and not timed.  With
    `failures`, a failed run is counted there by its error and left out;
    without, the error propagates."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners.items())
    for i in range(n):
        # Each round starts one runner later, so that every runner takes
        # every place in the order equally often: what a run leaves behind
        # speeds up or slows down whoever comes next (a cgroup move by
        # cgroup.procs waits for an RCU grace period, unless a process was
        # moved a few milliseconds before).
        k = i % len(order)
        for name, (fn, every, *before) in order[k:] + order[:k]:
            if i % every:
                continue
            for prepare in before:
                prepare()
            t = time.perf_counter()
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 -- reported with the figures
                if failures is None:
                    raise
                kinds = failures.setdefault(name, {})
                text = f"{type(exc).__name__}: {exc}"[:300]
                kinds[text] = kinds.get(text, 0) + 1
                continue
            times[name].append((time.perf_counter() - t) * 1000)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ts) for name, ts in times.items() if ts}
