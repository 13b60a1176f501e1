"""Times as Docker shows them: RFC 3339 with nanoseconds, and "2 minutes ago"."""

from __future__ import annotations

import datetime as _dt
import time

ZERO = "0001-01-01T00:00:00Z"


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    t = time.gmtime(secs)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{frac:09d}Z")


def now() -> str:
    return rfc3339(time.time_ns())


def parse(text: str) -> float:
    """Seconds since the epoch from an RFC 3339 time (0 for Docker's zero time)."""
    if not text or text.startswith("0001-01-01"):
        return 0.0
    main, _, frac = text.rstrip("Z").partition(".")
    secs = _dt.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.timezone.utc).timestamp()
    return secs + (float("0." + frac) if frac else 0.0)


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration: "Less than a second", "6 minutes", "2 hours"."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"
