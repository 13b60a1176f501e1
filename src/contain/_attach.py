"""Attaching to a container's stdio through its monitor's socket.

Frames both ways are u8 type | u32 length (little endian) | data; see
_native/monitor.c.  `Attachment` is the stream API; `attach_terminal` wires
it to the caller's terminal (raw mode, window size, detach keys).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import time
from typing import Callable, Iterator, Optional

from .errors import Conflict, InvalidArgument

STDIN, RESIZE, CLOSE_STDIN = 0, 1, 2
STDOUT, STDERR, EXIT = 17, 18, 19
_HEAD = struct.Struct("<BI")


def connect(state_dir: str, wake: Optional[Callable[[], bool]] = None) -> socket.socket:
    """Connect to the monitor's attach socket.  The monitor makes it on
    request: `wake` sends that request (SIGUSR1) and says whether the
    monitor is there to receive it."""
    dfd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        deadline = time.monotonic() + 2.0
        woken = 0.0
        while True:
            try:
                # Through the directory's fd: the full path may exceed sun_path.
                sock.connect(f"/proc/self/fd/{dfd}/attach.sock")
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                now = time.monotonic()
                gone = os.path.exists(f"/proc/self/fd/{dfd}/exit")
                if not gone and wake is not None and now - woken > 0.25:
                    gone, woken = not wake(), now  # again later: a signal may be lost
                if now > deadline or gone:
                    sock.close()
                    raise Conflict("the container is not running (nothing to attach to)") from None
                time.sleep(0.001 if now - woken < 0.02 else 0.005)
    finally:
        os.close(dfd)


class Attachment:
    """A live connection to a running container's stdin and output."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self.exit_code: Optional[int] = None

    def fileno(self) -> int:
        return self._sock.fileno()

    def _send(self, kind: int, data: bytes = b"") -> None:
        self._sock.sendall(_HEAD.pack(kind, len(data)) + data)

    def send(self, data: bytes) -> None:
        """Write to the container's stdin (it must be open: stdin_open=True or a tty)."""
        for i in range(0, len(data), 4096):
            self._send(STDIN, data[i:i + 4096])

    def close_stdin(self) -> None:
        self._send(CLOSE_STDIN)

    def resize(self, rows: int, cols: int) -> None:
        self._send(RESIZE, struct.pack("<HH", rows, cols))

    def read_frame(self, timeout: Optional[float] = None):
        """(stream, data) with stream 1 or 2; None at the end (exit_code set)."""
        while True:
            if len(self._buf) >= _HEAD.size:
                kind, length = _HEAD.unpack_from(self._buf)
                if len(self._buf) >= _HEAD.size + length:
                    data = self._buf[_HEAD.size:_HEAD.size + length]
                    self._buf = self._buf[_HEAD.size + length:]
                    if kind == EXIT:
                        self.exit_code = struct.unpack("<i", data)[0]
                        return None
                    return (1 if kind == STDOUT else 2), data
            if timeout is not None:
                ready, _, _ = select.select([self._sock], [], [], timeout)
                if not ready:
                    raise TimeoutError("no output from the container")
            chunk = self._sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        while True:
            frame = self.read_frame()
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_detach_keys(text: str) -> bytes:
    """Docker's syntax: "ctrl-p,ctrl-q", "a", "ctrl-@"..."""
    keys = bytearray()
    for part in text.split(","):
        part = part.strip()
        if part.startswith("ctrl-") and len(part) == 6:
            c = part[5]
            if c == "@":
                keys.append(0)
            elif "a" <= c <= "z":
                keys.append(ord(c) - ord("a") + 1)
            elif c in "[\\]^_":
                keys.append(ord(c) - 64)
            else:
                raise InvalidArgument(f"invalid detach key: {part}")
        elif len(part) == 1:
            keys.append(ord(part))
        else:
            raise InvalidArgument(f"invalid detach key: {part}")
    return bytes(keys)


def attach_terminal(att: Attachment, *, stdin: bool = True, tty: bool = True,
                    detach_keys: str = "ctrl-p,ctrl-q", stdin_fd: int = 0, stdout_fd: int = 1,
                    stderr_fd: int = 2) -> Optional[int]:
    """Shuttle between the caller's terminal and the container until it exits
    (returns its exit code) or the detach keys are typed (returns None)."""
    import termios
    import tty as ttymod

    keys = parse_detach_keys(detach_keys) if detach_keys else b""
    is_tty = tty and os.isatty(stdin_fd)
    saved = termios.tcgetattr(stdin_fd) if is_tty else None
    old_winch = None
    if is_tty:
        def winch(*_):
            cols, rows = os.get_terminal_size(stdout_fd)
            att.resize(rows, cols)

        old_winch = signal.signal(signal.SIGWINCH, winch)
        winch()
        ttymod.setraw(stdin_fd, termios.TCSADRAIN)  # keep what was typed ahead
    matched = 0
    try:
        watch = [att.fileno()] + ([stdin_fd] if stdin else [])
        while True:
            ready, _, _ = select.select(watch, [], [])
            if stdin_fd in ready:
                data = os.read(stdin_fd, 4096)
                if not data:
                    att.close_stdin()
                    watch.remove(stdin_fd)
                    continue
                out = bytearray()
                for b in data:
                    if keys and b == keys[matched]:
                        matched += 1
                        if matched == len(keys):
                            return None
                        continue
                    if matched:
                        out += keys[:matched]
                        matched = 0
                    out.append(b)
                if out:
                    att.send(bytes(out))
            if att.fileno() in ready:
                frame = att.read_frame()
                if frame is None:
                    return att.exit_code
                stream, data = frame
                os.write(stderr_fd if stream == 2 else stdout_fd, data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        if old_winch is not None:
            signal.signal(signal.SIGWINCH, old_winch)
