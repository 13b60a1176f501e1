"""Facts about host processes read from /proc."""

from __future__ import annotations

from typing import Optional


def start_time(pid: int) -> Optional[int]:
    """The kernel's start time of pid (field 22 of /proc/PID/stat, in clock
    ticks since boot), or None when there is no such process.  Kept with a
    pid, it tells a reused pid from the process that was meant."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])
