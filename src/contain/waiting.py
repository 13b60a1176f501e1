"""Wait strategies, as testcontainers users know them.

    from contain.waiting import wait_for_log, wait_for_port, wait_for_http
    c = Container.run("postgres:16", environment={...})
    wait_for_log(c, r"ready to accept connections", occurrences=2, timeout=30)

Every wait polls with a bounded backoff (10 ms doubling to 0.5 s), gives up
at its timeout with a `WaitTimeout` naming what it waited for and showing the
container's last 20 log lines, and fails at once with `ContainerExited`
when the container ends first.  Network waits connect only to loopback or to
the container's own address (or a port it publishes on the host).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterator, Optional, Pattern, Union

from .errors import ContainError, InvalidArgument

__all__ = [
    "WaitError",
    "WaitTimeout",
    "ContainerExited",
    "wait_for_log",
    "wait_for_port",
    "wait_for_http",
    "wait_for_command",
    "wait_for_healthy",
    "wait_until",
    "LOG_LINES",
]

LOG_LINES = 20


class WaitError(ContainError):
    """A wait strategy did not see its condition; `.what` says what it
    waited for, `.logs` holds the container's last log lines."""

    def __init__(self, message: str, *, what: str = "", logs: str = "") -> None:
        self.what = what
        self.logs = logs
        if logs:
            message += f"\n--- last {LOG_LINES} log lines ---\n{logs.rstrip()}"
        super().__init__(message)


class WaitTimeout(WaitError, TimeoutError):
    """The condition was not met within the timeout."""


class ContainerExited(WaitError):
    """The container ended before the condition was met."""


def _last_logs(container: Any) -> str:
    if container is None:
        return ""
    try:
        return container.logs(tail=LOG_LINES).decode("utf-8", "replace")
    except Exception:  # the record may be gone: the logs are a courtesy here
        return ""


def _backoff(deadline: float, first: float = 0.01, cap: float = 0.5) -> Iterator[float]:
    """Sleep lengths until the deadline: first, doubling, capped."""
    delay = first
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        yield min(delay, remaining)
        delay = min(delay * 2, cap)


def wait_until(check: Callable[[], Any], *, what: str, timeout: float = 60,
               container: Any = None, poll: float = 0.01, max_poll: float = 0.5) -> Any:
    """Call `check` until it returns something true (returned); between
    calls sleep with backoff.  With `container`, fail at once if it is no
    longer running, and include its last log lines in the error."""
    deadline = time.monotonic() + timeout
    delays = _backoff(deadline, poll, max_poll)
    while True:
        result = check()
        if result:
            return result
        if container is not None:
            _fail_if_exited(container, what)
        try:
            time.sleep(next(delays))
        except StopIteration:
            # One last look: the condition may have become true while sleeping.
            result = check()
            if result:
                return result
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}"
                              + (f" in container {container.short_id}" if container is not None else ""),
                              what=what, logs=_last_logs(container)) from None


def _fail_if_exited(container: Any, what: str) -> None:
    try:
        state = container.inspect()["State"]
    except ContainError:
        raise ContainerExited(f"container {container.short_id} was removed while waiting for {what}",
                              what=what) from None
    if not state["Running"]:
        code = state.get("ExitCode")
        status = "was never started" if state["Status"] == "created" else f"exited with code {code}"
        raise ContainerExited(f"container {container.short_id} {status} while waiting for {what}",
                              what=what, logs=_last_logs(container))


# ---------------------------------------------------------------- logs
def wait_for_log(container: Any, regex: Union[str, bytes, Pattern], *, timeout: float = 60,
                 occurrences: int = 1, stream: str = "both") -> re.Match:
    """Wait until the container's log has `occurrences` lines matching
    `regex` (searched per line, stdout and stderr, or stream="stdout"|"stderr");
    returns the last match."""
    if isinstance(regex, (str, bytes)):
        pattern = re.compile(regex.decode() if isinstance(regex, bytes) else regex)
    else:
        pattern = regex
    if occurrences < 1:
        raise InvalidArgument("occurrences must be at least 1")
    want_out, want_err = stream in ("both", "stdout"), stream in ("both", "stderr")
    what = f"log line /{pattern.pattern}/" + (f" x{occurrences}" if occurrences > 1 else "")

    def check() -> Optional[re.Match]:
        count, last = 0, None
        for line in container.logs(stdout=want_out, stderr=want_err, stream=True):
            m = pattern.search(line.decode("utf-8", "replace"))
            if m:
                count, last = count + 1, m
                if count >= occurrences:
                    return last
        return None

    return wait_until(check, what=what, timeout=timeout, container=container)


# ---------------------------------------------------------------- ports
def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def container_addresses(container: Any, port: int, proto: str = "tcp") -> list[tuple[str, int]]:
    """Where the host can reach `port` of the container: its own addresses on
    its networks, loopback when it shares the host's network, and loopback at
    the host port when the port is published."""
    state = container.inspect()
    found: list[tuple[str, int]] = []
    if state["HostConfig"].get("NetworkMode") == "host":
        found.append(("127.0.0.1", port))
    net = state.get("NetworkSettings") or {}
    for binding in (net.get("Ports") or {}).get(f"{port}/{proto}") or ():
        host_port = binding.get("HostPort")
        if host_port:
            ip = binding.get("HostIp") or "127.0.0.1"
            ip = "127.0.0.1" if ip in ("0.0.0.0", "") else ("::1" if ip == "::" else ip)
            if _is_loopback(ip):
                found.append((ip, int(host_port)))
    addrs = [net.get("IPAddress")] + [n.get("IPAddress") for n in (net.get("Networks") or {}).values()]
    for a in addrs:
        if a and (a, port) not in found:
            found.append((a, port))
    return found


def listening_ports(container: Any, proto: str = "tcp") -> set[int]:
    """Ports in LISTEN state inside the container's network namespace (read
    from /proc/<pid>/net/tcp{,6}: works with no network at all)."""
    pid = container.inspect()["State"]["Pid"]
    ports: set[int] = set()
    if not pid:
        return ports
    for name in (proto, proto + "6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # tcp: state 0A is LISTEN; udp: 07 is an unconnected (bound) socket
            if len(fields) > 3 and fields[3] == ("0A" if proto == "tcp" else "07"):
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _connects(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(container_or_host: Any, port: int, *, timeout: float = 60,
                  connect: Optional[bool] = None) -> tuple[str, int]:
    """Wait until a TCP port accepts connections.

    With a container: the port (a container port) must be listening inside
    it, and when the host can reach it (host network, a published port, an
    address on a bridge) a TCP connection must succeed; returns the (host,
    port) that answered, or ("", port) when it is only listening inside.
    With a host name: it must be loopback ("localhost", 127.0.0.0/8, ::1)."""
    port = int(port)
    if isinstance(container_or_host, str):
        host = container_or_host
        if not _is_loopback(host):
            raise InvalidArgument(f"wait_for_port connects only to loopback or a container's own "
                                  f"address; pass the container instead of {host!r}")
        what = f"TCP port {host}:{port}"
        return wait_until(lambda: (host, port) if _connects(host, port, 0.5) else None,
                          what=what, timeout=timeout)
    container = container_or_host
    what = f"TCP port {port}"

    def check() -> Optional[tuple[str, int]]:
        if port not in listening_ports(container):
            return None
        targets = container_addresses(container, port)
        if connect is False or (not targets and connect is None):
            return ("", port)
        for host, p in targets:
            if _connects(host, p, 0.5):
                return (host, p)
        return None

    return wait_until(check, what=what, timeout=timeout, container=container)


# ----------------------------------------------------------------- http
def wait_for_http(url: Any, status: Union[int, tuple, range, Callable[[int], bool]] = 200, *,
                  timeout: float = 60, path: str = "/", port: Optional[int] = None,
                  method: str = "GET", body_regex: Optional[str] = None,
                  container: Any = None) -> int:
    """Wait until GET url answers with `status` (an int, several, a range or
    a predicate; optionally a body matching body_regex).  `url` may also be
    a container: then `port` (a container port) and `path` make the URL from
    an address the host reaches it at.  Returns the status seen."""
    if not isinstance(url, str):
        container = url
        if port is None:
            raise InvalidArgument("wait_for_http(container, ...) needs port=")
        targets = container_addresses(container, int(port))
        if not targets:
            raise InvalidArgument(f"container {container.short_id} has no address the host can "
                                  f"reach port {port} at (no network, nothing published)")
        host, p = targets[0]
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{p}/{path.lstrip('/')}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise InvalidArgument(f"not an http(s) URL: {url}")
    if callable(status):
        ok = status
    elif isinstance(status, int):
        ok = lambda s: s == status  # noqa: E731
    else:
        ok = lambda s: s in status  # noqa: E731
    pattern = re.compile(body_regex) if body_regex else None
    what = f"HTTP {status if not callable(status) else 'status'} from {method} {url}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy

    def check() -> Optional[int]:
        req = urllib.request.Request(url, method=method)
        try:
            with opener.open(req, timeout=2) as resp:
                code, data = resp.status, resp.read(1 << 20)
        except urllib.error.HTTPError as exc:
            code, data = exc.code, b""
            with contextlib.suppress(Exception):
                data = exc.read(1 << 20)
        except (OSError, ValueError):
            return None
        if not ok(code):
            return None
        if pattern is not None and not pattern.search(data.decode("utf-8", "replace")):
            return None
        return code

    return wait_until(check, what=what, timeout=timeout, container=container)


# -------------------------------------------------------------- command
def wait_for_command(container: Any, cmd: Any, *, timeout: float = 60,
                     exec_timeout: Optional[float] = None, **exec_options: Any) -> Any:
    """Exec `cmd` in the container until it exits 0; returns its ExecResult.
    A run that lasts longer than exec_timeout (default: what is left of the
    timeout) is killed and counts as a failure."""
    what = f"command {cmd!r} to exit 0"
    deadline = time.monotonic() + timeout
    last: list = [None]

    def check() -> Any:
        limit = exec_timeout if exec_timeout is not None else max(0.1, deadline - time.monotonic())
        try:
            proc = container.exec(cmd, **exec_options)
        except ContainError:
            return None
        try:
            out = communicate_or_kill(proc, limit)
        except TimeoutError:
            return None
        last[0] = (proc.returncode, out)
        if proc.returncode == 0:
            from .container import ExecResult

            return ExecResult(0, out)
        return None

    try:
        return wait_until(check, what=what, timeout=timeout, container=container)
    except WaitTimeout as exc:
        if last[0] is not None:
            code, out = last[0]
            exc.args = (exc.args[0] + f"\n--- last run: exit {code} ---\n"
                        + (out or b"").decode("utf-8", "replace").rstrip(),)
        raise


def communicate_or_kill(proc: Any, limit: float) -> bytes:
    """stdout+stderr of an exec'd process; past `limit` it is killed and
    TimeoutError raised."""
    import subprocess

    try:
        out, err = proc.communicate(timeout=limit)
    except (subprocess.TimeoutExpired, TimeoutError):
        with contextlib.suppress(Exception):
            proc.kill()
            proc.wait(5)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(Exception):
                    f.close()
        raise TimeoutError from None
    return (out or b"") + (err or b"")


# --------------------------------------------------------------- health
def wait_for_healthy(container: Any, *, timeout: float = 60) -> dict:
    """Wait until the container's HEALTHCHECK reports healthy (see
    contain._health); returns State.Health.  Raises InvalidArgument when
    the container has no health check."""
    from . import _health

    cdir = _health.container_dir(container)
    if not _health.has_healthcheck(container):
        raise InvalidArgument(f"container {container.short_id} has no health check")
    seen: dict = {}

    def check() -> Optional[dict]:
        h = _health.read_health(cdir)
        if h:
            seen.update(h)
        return h if h and h.get("Status") == "healthy" else None

    try:
        return wait_until(check, what="health status 'healthy'", timeout=timeout,
                          container=container, poll=0.05)
    except WaitError as exc:
        if seen.get("Log"):
            last = seen["Log"][-1]
            exc.args = (exc.args[0] + f"\n--- last health check: {seen.get('Status')}, exit "
                        f"{last.get('ExitCode')} ---\n{str(last.get('Output', '')).rstrip()}",)
        raise
