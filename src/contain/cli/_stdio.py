"""Wiring a container's streams to the command's own stdin, stdout and stderr."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from typing import Optional

import contain


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except BrokenPipeError:
            return
        view = view[n:]


def follow_output(c: "contain.Container", *, since=None) -> list[threading.Thread]:
    """Copy the container's output from its log (nothing is lost before we look)
    to our stdout and stderr until the container stops."""
    threads = []
    for fd, which in ((1, "stdout"), (2, "stderr")):
        kwargs = {"stdout": which == "stdout", "stderr": which == "stderr", "follow": True}
        if since is not None:
            kwargs["since"] = since

        def pump(fd=fd, kwargs=kwargs) -> None:
            with contextlib.suppress(contain.ContainerNotFound):
                for chunk in c.logs(**kwargs):
                    _write(fd, chunk)
        t = threading.Thread(target=pump, daemon=True)
        t.start()
        threads.append(t)
    return threads


def pump_stdin(c: "contain.Container") -> Optional[object]:
    """Send our stdin to the container's (closing it at EOF); the attachment's
    own output frames are drained, since the log already carries them."""
    try:
        att = c.attach()
    except contain.Conflict:
        return None

    def reader() -> None:
        with contextlib.suppress(OSError, ValueError):
            for _ in att:
                pass

    def writer() -> None:
        try:
            while True:
                data = os.read(0, 65536)
                if not data:
                    break
                att.send(data)
            att.close_stdin()
        except (OSError, ValueError):
            pass

    threading.Thread(target=reader, daemon=True).start()
    threading.Thread(target=writer, daemon=True).start()
    return att


class SignalProxy:
    """Docker's --sig-proxy: signals sent to the command go to the container."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self, c: "contain.Container") -> None:
        self.c = c
        self.old: dict = {}

    def __enter__(self) -> "SignalProxy":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.old[s] = signal.signal(s, self._forward)
        return self

    def _forward(self, signum, _frame) -> None:
        with contextlib.suppress(contain.ContainError):
            self.c.kill(int(signum))

    def __exit__(self, *exc) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def attach_output(c: "contain.Container", *, stdin: bool, since=None) -> int:
    """Wait for the container while its output (and our stdin) flow; its exit code."""
    with SignalProxy(c):
        threads = follow_output(c, since=since)
        att = pump_stdin(c) if stdin else None
        code = c.wait()
        for t in threads:
            t.join(5)
        if att is not None:
            with contextlib.suppress(Exception):
                att.close()
    sys.stdout.flush()
    return code


def exec_terminal(proc, stdin: bool) -> int:
    """An exec'd process on a pty: raw mode, window size, copy both ways."""
    import fcntl
    import termios
    import tty

    master_out = proc.stdout.fileno()
    interactive = stdin and os.isatty(0)
    saved = termios.tcgetattr(0) if interactive else None

    def winch(*_):
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(1 if os.isatty(1) else 0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master_out, termios.TIOCSWINSZ, size)

    old = None
    if interactive:
        old = signal.signal(signal.SIGWINCH, winch)
        winch()
        tty.setraw(0, termios.TCSADRAIN)  # keep what was typed ahead
    try:
        watch = [master_out] + ([0] if stdin else [])
        while True:
            ready, _, _ = select.select(watch, [], [])
            if 0 in ready:
                data = os.read(0, 4096)
                if not data:
                    watch.remove(0)
                    if proc.stdin is not None:
                        with contextlib.suppress(OSError):
                            proc.stdin.write(b"\x04")
                    continue
                with contextlib.suppress(OSError):
                    proc.stdin.write(data)
            if master_out in ready:
                try:
                    data = os.read(master_out, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                _write(1, data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        if old is not None:
            signal.signal(signal.SIGWINCH, old)
    return proc.wait()


def exec_pipes(proc, stdin: bool) -> int:
    threads = []
    for src, fd in ((proc.stdout, 1), (proc.stderr, 2)):
        if src is None:
            continue

        def copy(src=src, fd=fd) -> None:
            with contextlib.suppress(OSError, ValueError):
                while True:
                    data = src.read(65536)
                    if not data:
                        break
                    _write(fd, data)
        t = threading.Thread(target=copy, daemon=True)
        t.start()
        threads.append(t)
    if stdin and proc.stdin is not None:
        def feed() -> None:
            with contextlib.suppress(OSError, ValueError):
                while True:
                    data = os.read(0, 65536)
                    if not data:
                        break
                    proc.stdin.write(data)
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
        threading.Thread(target=feed, daemon=True).start()
    code = proc.wait()
    for t in threads:
        t.join(5)
    return code
