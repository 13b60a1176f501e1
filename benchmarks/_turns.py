"""Runners taking turns run by run (shared by the benchmarks): this VM's
speed drifts by tens of percent over minutes, and taking turns gives every
tool the same conditions."""

from __future__ import annotations

import statistics
import time
from typing import Optional


def take_turns(runners: dict, n: int, failures: Optional[dict] = None) -> dict[str, list[float]]:
    """The ms of each run of each runner {name: (fn, every)}; a runner with
    every=k runs on every k-th turn.  With `failures`, a failed run is
    counted there by its error and left out; without, the error propagates."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(n):
        for name, (fn, every) in runners.items():
            if i % every:
                continue
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
