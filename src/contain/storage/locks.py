"""Inter-process and inter-thread locks on lock files (``fcntl.flock``).

A :class:`FileLock` names a lock file; ``lock.exclusive()`` and ``lock.shared()`` are
context managers. flock locks belong to an open file description, so two processes (or
two threads that each open the file) exclude each other. On top of that an exclusive
hold is re-entrant within one thread (nested ``exclusive()``/``shared()`` in the owning
thread are no-ops instead of self-deadlocks), and threads of one process queue on a
``threading`` lock rather than all sleeping in the kernel.

Lock files are never deleted: removing a lock file while another process waits on its
inode would let two holders believe they own "the" lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from typing import Dict, Iterator, Optional, Set

from ..errors import Conflict

__all__ = ["FileLock", "LockTimeout"]


class LockTimeout(Conflict, TimeoutError):
    """A lock could not be taken within the requested time."""


class _PathState:
    """What this process knows about one lock file: who holds it exclusively."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()  # serializes exclusive holders across threads
        self.owner: Optional[int] = None  # thread ident of the exclusive holder
        self.depth = 0
        self.fd = -1


_registry: Dict[str, _PathState] = {}
_registry_lock = threading.Lock()
_held_fds: Set[int] = set()  # descriptors carrying a flock, exclusive or shared
_generation = 0  # bumped in a forked child: descriptors of older generations are gone


def _reset_after_fork() -> None:
    # A forked child shares the parent's open file descriptions, and with them the
    # parent's flocks: if the child kept those descriptors, the parent's lock would stay
    # held until the child exited. The child holds none of the parent's locks, so it
    # closes them and starts with a clean registry (threading locks owned by threads
    # that do not exist in the child would otherwise never be released).
    global _registry, _registry_lock, _held_fds, _generation
    for fd in _held_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_fds = set()
    _generation += 1
    _registry = {}
    _registry_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _state(path: str) -> _PathState:
    with _registry_lock:
        state = _registry.get(path)
        if state is None:
            state = _registry[path] = _PathState()
        return state


def _release(fd: int, generation: int) -> None:
    # Only close what this process still owns: after a fork the child already closed the
    # inherited descriptor and its number may since belong to something else.
    if generation == _generation:
        _held_fds.discard(fd)
        os.close(fd)


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _flock(fd: int, operation: int, deadline: Optional[float], path: str) -> None:
    if deadline is None:
        while True:
            try:
                fcntl.flock(fd, operation)
                return
            except InterruptedError:  # pragma: no cover - PEP 475 retries already
                continue
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LockTimeout(f"timed out waiting for lock {path}")
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


class FileLock:
    """A named lock backed by ``path`` (created on first use, never removed)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))

    def __repr__(self) -> str:
        return f"FileLock({self.path!r})"

    def held_exclusively(self) -> bool:
        """True when the calling thread holds this lock exclusively."""
        return _state(self.path).owner == threading.get_ident()

    @contextlib.contextmanager
    def exclusive(self, timeout: Optional[float] = None) -> Iterator[None]:
        """Hold the lock exclusively; ``timeout`` seconds (None waits forever)."""
        state = _state(self.path)
        me = threading.get_ident()
        if state.owner == me:
            state.depth += 1
            try:
                yield
            finally:
                state.depth -= 1
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        if not state.mutex.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            raise LockTimeout(f"timed out waiting for lock {self.path}")
        fd = -1
        generation = _generation
        try:
            fd = _open(self.path)
            _flock(fd, fcntl.LOCK_EX, deadline, self.path)
            _held_fds.add(fd)
            state.owner, state.depth, state.fd = me, 1, fd
        except BaseException:
            if fd >= 0:
                os.close(fd)
            state.mutex.release()
            raise
        try:
            yield
        finally:
            state.owner, state.depth, state.fd = None, 0, -1
            _release(fd, generation)  # closing the last descriptor drops the flock
            state.mutex.release()

    @contextlib.contextmanager
    def shared(self, timeout: Optional[float] = None) -> Iterator[None]:
        """Hold the lock shared with other readers; exclusive holders are kept out."""
        state = _state(self.path)
        if state.owner == threading.get_ident():
            yield  # an exclusive hold already covers a shared one
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        # Shared holders in different threads each get their own open file description;
        # flock lets them coexist and makes them wait for any exclusive holder.
        generation = _generation
        fd = _open(self.path)
        try:
            _flock(fd, fcntl.LOCK_SH, deadline, self.path)
            _held_fds.add(fd)
            yield
        finally:
            _release(fd, generation)
