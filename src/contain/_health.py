"""HEALTHCHECK, run as Docker runs it, for as long as the container lives.

A container with a health check gets a small Python process of its own,
started detached next to its monitor when the container starts:

    python -m contain._health ROOT CONTAINER_ID PID PID_START_TIME

It is bound to that one container process (a pidfd, checked against the
recorded start time), so it needs no Python process of the caller's to stay
around, and it ends when the container process ends (or when the container
was started again: the new process gets a new health monitor).  Every probe
is an exec into the container (Container.exec); the results are recorded in
<container dir>/health.json, atomically, shaped like Docker's State.Health:

    {"Status": "starting"|"healthy"|"unhealthy", "FailingStreak": 0,
     "Log": [{"Start", "End", "ExitCode", "Output"}, ...]}   (last 5 probes)

Docker's rules: the first probe runs one interval after the start (or one
start interval while in the start period); exit 0 is healthy and resets the
streak; a failure inside the start period does not count; otherwise the streak
grows and reaching `retries` makes the container unhealthy; a probe longer
than `timeout` is killed and recorded with exit code -1.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import subprocess
import sys
import time
from typing import Any, Mapping, Optional

from . import _timefmt
from ._jsonfile import read_json, write_json as _write_json

__all__ = ["start_health_monitor", "read_health", "healthcheck_config", "has_healthcheck",
           "container_dir", "normalize"]

NS = 1_000_000_000
DEFAULTS = {"Interval": 30 * NS, "Timeout": 30 * NS, "StartPeriod": 0,
            "StartInterval": 5 * NS, "Retries": 3}
MAX_LOG_ENTRIES = 5
MAX_OUTPUT = 4096
HEALTH_FILE = "health.json"
CONFIG_FILE = "healthcheck.json"


# ------------------------------------------------------------------ config
def normalize(hc: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """Docker's Healthcheck ({"Test", "Interval", ...} in ns) from either
    spelling (docker-py's lowercase keys too); None when disabled/absent.
    Durations may be given as seconds (float) or "30s"/"1m30s"/"500ms"."""
    if not hc:
        return None
    lower = {str(k).lower().replace("_", ""): v for k, v in hc.items()}
    test = lower.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not test or test[0] == "NONE":
        return None
    out: dict = {"Test": list(test)}
    for key, default in DEFAULTS.items():
        value = lower.get(key.lower())
        if not value:  # Docker: 0 means "inherit the default"
            out[key] = default
        elif key == "Retries":
            out[key] = int(value)
        else:
            out[key] = _duration_ns(value)
    return out


def _duration_ns(value: Any) -> int:
    if isinstance(value, float):
        return int(value * NS)
    if isinstance(value, int):
        return value  # Docker's unit
    import re

    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", str(value)):
        total += float(num) * {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9,
                               "m": 60e9, "h": 3600e9}[unit]
    return int(total)


def container_dir(container: Any) -> str:
    return container._root.container_dir(container.id)


def healthcheck_config(container: Any, state: Optional[dict] = None) -> Optional[dict]:
    """The container's own Healthcheck (Config.Healthcheck) or else its image's."""
    state = state if state is not None else container._load()
    own = (state.get("Config") or {}).get("Healthcheck")
    if own is not None:
        return normalize(own)
    try:
        from .image import Image

        img = Image.get(state["Image"], root=container._root)
        return normalize(img.config.healthcheck)
    except Exception:
        return None


def has_healthcheck(container: Any) -> bool:
    cfg_path = os.path.join(container_dir(container), CONFIG_FILE)
    return os.path.exists(cfg_path) or healthcheck_config(container) is not None


# ------------------------------------------------------------------ record
def read_health(cdir: str) -> Optional[dict]:
    """State.Health of the container whose directory is cdir, or None."""
    health = _read_raw(cdir)
    if health is not None:
        health.pop("_pid", None)
        health.pop("_monitor", None)
    return health


def _read_raw(cdir: str) -> Optional[dict]:
    return read_json(os.path.join(cdir, HEALTH_FILE))


@contextlib.contextmanager
def _health_lock(cdir: str):
    fd = os.open(os.path.join(cdir, "health.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------ start
def start_health_monitor(container: Any, state: Optional[dict] = None,
                         healthcheck: Optional[Mapping[str, Any]] = None) -> Optional[int]:
    """Start the detached health monitor of a running container (call it
    right after the container started; it takes no container lock, so the
    start path may call it while holding one).  `healthcheck` overrides the
    container's and image's.  Returns the monitor's pid, or None when the
    container has no health check."""
    state = state if state is not None else container._load()
    hc = normalize(healthcheck) if healthcheck is not None else healthcheck_config(container, state)
    cdir = container_dir(container)
    if hc is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(cdir, HEALTH_FILE))
        return None
    pid = state["State"]["Pid"]
    start = (state.get("_contain") or {}).get("pid_start")
    if not state["State"]["Running"] or not pid:
        return None
    with _health_lock(cdir):
        _write_json(os.path.join(cdir, CONFIG_FILE), hc)
        _write_json(os.path.join(cdir, HEALTH_FILE),
                    {"Status": "starting", "FailingStreak": 0, "Log": [], "_pid": pid})
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    argv = [sys.executable, "-m", "contain._health", container._root.path, container.id,
            str(pid), str(start if start is not None else -1)]
    # sh backgrounds it and exits at once: the monitor is nobody's child
    # (no zombie for the caller to reap), in a session of its own.
    sh = subprocess.Popen(["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 & echo $!', "sh", *argv],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=env, start_new_session=True,
                          close_fds=True)
    out, _ = sh.communicate()
    try:
        monitor = int(out.strip())
    except ValueError:
        return None
    # Only this monitor may record from now on: one started before for
    # the same process (start_health_monitor called twice) stands down.
    with _health_lock(cdir):
        health = _read_raw(cdir) or {}
        if health.get("_pid") == pid:
            health["_monitor"] = monitor
            _write_json(os.path.join(cdir, HEALTH_FILE), health)
    return monitor


# ------------------------------------------------------------------ probe
def _probe(container: Any, test: list, timeout_ns: int) -> dict:
    if test[0] == "CMD-SHELL":
        argv = ["/bin/sh", "-c", " ".join(test[1:])]
    elif test[0] == "CMD":
        argv = list(test[1:])
    else:
        argv = list(test)
    started = time.time_ns()
    timeout = timeout_ns / NS
    try:
        proc = container.exec(argv)
    except Exception as exc:  # not runnable at all: a failed probe, as in Docker
        return {"Start": _timefmt.rfc3339(started), "End": _timefmt.now(), "ExitCode": -1,
                "Output": str(exc)[:MAX_OUTPUT]}
    from .waiting import communicate_or_kill

    try:
        output = communicate_or_kill(proc, timeout).decode("utf-8", "replace")
        code = proc.returncode
    except TimeoutError:
        code = -1
        output = f"Health check exceeded timeout ({timeout:g}s)"
    return {"Start": _timefmt.rfc3339(started), "End": _timefmt.now(), "ExitCode": code,
            "Output": output[:MAX_OUTPUT]}


def _record(cdir: str, pid: int, result: dict, in_start_period: bool, retries: int) -> bool:
    """Fold one probe into health.json; False when this monitor is stale."""
    with _health_lock(cdir):
        health = _read_raw(cdir) or {"Status": "starting", "FailingStreak": 0, "Log": []}
        if health.get("_pid", pid) != pid or health.get("_monitor") not in (None, os.getpid()):
            return False
        if result["ExitCode"] == 0:
            health["Status"], health["FailingStreak"] = "healthy", 0
        elif not in_start_period:
            health["FailingStreak"] = health.get("FailingStreak", 0) + 1
            if health["FailingStreak"] >= retries:
                health["Status"] = "unhealthy"
        health["Log"] = (health.get("Log") or [])[-(MAX_LOG_ENTRIES - 1):] + [result]
        _write_json(os.path.join(cdir, HEALTH_FILE), health)
    return True


def run_monitor(root: str, cid: str, pid: int, pid_start: Optional[int]) -> int:
    from ._root import get_root
    from .container import Container, _open_pidfd

    r = get_root(root)
    container = Container(cid, r)
    cdir = r.container_dir(cid)
    try:
        with open(os.path.join(cdir, CONFIG_FILE)) as f:
            hc = json.load(f)
    except FileNotFoundError:
        return 0
    pidfd = _open_pidfd(pid, pid_start)
    if pidfd is None:
        return 0
    try:
        state = container._load()
        started = _timefmt.parse(state["State"]["StartedAt"]) or time.time()
        start_period = hc["StartPeriod"] / NS
        next_at = time.monotonic() + (hc["StartInterval"] if start_period and hc.get("StartInterval")
                                      else hc["Interval"]) / NS
        while True:
            remaining = max(0.0, next_at - time.monotonic())
            ready, _, _ = select.select([pidfd], [], [], remaining)
            if ready:
                return 0  # the container process ended
            try:
                state = container._load()
            except Exception:
                return 0  # removed
            if state["State"]["Pid"] != pid:
                return 0  # started again: another monitor has taken over
            if not state["State"].get("Paused"):
                result = _probe(container, hc["Test"], hc["Timeout"])
                in_start_period = time.time() - started < start_period
                if select.select([pidfd], [], [], 0)[0]:
                    return 0  # the probe failed because the container ended
                if not _record(cdir, pid, result, in_start_period, hc["Retries"]):
                    return 0
            in_start_period = time.time() - started < start_period
            interval = hc["StartInterval"] if in_start_period and hc.get("StartInterval") else hc["Interval"]
            next_at = time.monotonic() + interval / NS
    finally:
        os.close(pidfd)


def main(argv: list) -> int:
    if len(argv) != 5:
        print("usage: python -m contain._health ROOT CONTAINER_ID PID PID_START", file=sys.stderr)
        return 2
    root, cid, pid, start = argv[1], argv[2], int(argv[3]), int(argv[4])
    try:
        return run_monitor(root, cid, pid, None if start < 0 else start)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv))
