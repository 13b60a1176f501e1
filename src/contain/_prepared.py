"""Container roots mounted ahead: the overlay of the next container's layers,
made by a background thread while the current one runs.

Mounting an overlay with a writable layer makes and deletes a handful of
files in its work directory; on a disk that checks every new inode against
the recently deleted ones (ext4 without a journal) that alone takes
milliseconds, the largest part of a start.  None of it depends on the
container but its layers, so from the second container a process creates
for the same layers on, a thread keeps up to PREPARED such roots ready:
each is a container directory (a spare one, else a new one) renamed to
`.prepared-<pid>-<n>` so that no other process takes it, holding upper/
and work/, plus the fd of a detached overlay mount of them (fsmount: in no
mount namespace, invisible in /proc/mounts).  Container.create takes one
(its directory becomes the container's), start hands the fd to the child,
which attaches it as its root instead of mounting one.

The fd is this process's only: it is held here, by container id, not by a
handle.  Anything else that mounts the container's layers drops it first
(Container._root_fd), and start checks that nobody else did meanwhile
(work/work is the one the prepared mount made); otherwise it mounts anew.
At exit the fds close (the mounts go with them) and the directories become
spares again; a process that was killed leaves `.prepared-<pid>-*`
directories that the next Root to open finds as spares.

A root is also kept when its container starts: a second detached mount of
the same overlay (open_tree of the fd; kernels that refuse to clone a
detached mount just mount every root anew). When the container is removed
with its writable layer still empty, the root is handed on to the next
container. The container's directory becomes a prepared one again, and
that mount is its root. So a loop of run and remove mounts nothing at all,
and makes and deletes no inode in work/ either. "Empty" means: nothing in
upper/, no attribute on its root but overlay's uuid, its mode and owner
as made, and work/work as the mount left it (same ctime: every copy-up and
whiteout passes through it). Every change a container makes to its root
copies something up into upper/, so this check is complete.

Nothing is kept for a container that could remount the superblock itself
(privileged, or with CAP_SYS_ADMIN, or after such an exec). Nor for one
that could pass a descriptor of its root out and so reach the next
container's files: through a bind mount, which may hold a unix socket, or
on the host's network, with its abstract sockets.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import secrets
import threading
import time
import weakref
from typing import Optional

PREPARED = 2
_ENV = "CONTAIN_PREPARED_ROOTS"
PREFIX = ".prepared-"


def limit() -> int:
    """How many roots to keep ready (CONTAIN_PREPARED_ROOTS; 0 turns it off)."""
    try:
        return max(0, int(os.environ.get(_ENV, PREPARED)))
    except ValueError:
        return PREPARED


def owner_alive(name: str) -> bool:
    """Whether the process named in a `.prepared-<pid>-<n>` directory lives."""
    try:
        pid = int(name[len(PREFIX):].split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _marks(cdir: str) -> tuple:
    """What says the work directory is still the prepared mount's own."""
    st = os.stat(os.path.join(cdir, "work", "work"))
    up = os.stat(os.path.join(cdir, "upper"))
    return (st.st_ino, st.st_ctime_ns, up.st_ino, up.st_mode, up.st_uid, up.st_gid, up.st_ctime_ns,
            os.path.isdir(os.path.join(cdir, "work", "work", "incompat", "volatile")))


class _Ready:
    __slots__ = ("path", "lowers", "fd", "marks", "since")

    def __init__(self, path: str, lowers: tuple, fd: int, marks: tuple) -> None:
        self.path, self.lowers, self.fd, self.marks = path, lowers, fd, marks
        self.since = 0.0  # when a container took it


# A started container's root, kept: a second detached mount of its overlay
# (the same superblock), to become the next container's root when the
# container is removed with its writable layer still empty.  For
# KEPT_GRACE seconds after a container took its root, that root counts as
# one of those the thread keeps ready, so that a loop of run-and-remove
# mounts nothing at all.
KEPT_GRACE = 0.1
KEPT_MAX = 16


class _Kept:
    __slots__ = ("fd", "lowers", "since", "marks")

    def __init__(self, fd: int, lowers: tuple, since: float, marks: tuple) -> None:
        self.fd, self.lowers, self.since, self.marks = fd, lowers, since, marks


def _work_untouched(cdir: str, marks: tuple) -> bool:
    """The mount's own directories (nobody replaced upper/ meanwhile, as a
    reset does), and overlay's work directory as the mount left it: every
    copy-up and whiteout passes through it, and changes its ctime.  (Its
    mode is 000 for an ordinary user: it cannot be listed, only looked at.)"""
    st = os.stat(os.path.join(cdir, "work", "work"))
    return (st.st_ino, st.st_ctime_ns) == marks[:2] and \
        os.stat(os.path.join(cdir, "upper")).st_ino == marks[2]


class Preparer:
    """The roots one Root keeps ready in this process."""

    def __init__(self, root, userns_fd: int = -1) -> None:
        self._root = root
        # Rootless: the user namespace the mounts are made in (linux.userns).
        self._userns_fd = userns_fd
        self._containers = root.containers
        self._cond = threading.Condition(threading.Lock())
        self._ready: list[_Ready] = []
        self._claimed: dict[str, _Ready] = {}  # container id -> its prepared mount
        self._kept: dict[str, _Kept] = {}  # container id -> its root, kept for reuse
        self._can_clone = True  # the kernel clones detached mounts (see clone_mount)
        self._want: Optional[tuple] = None
        self._seen: dict[tuple, int] = {}
        self._failed: set = set()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._closed = False
        self._busy = False  # the thread is mounting a root
        self._wake_pending = False  # a root was taken: see take and wake
        self.used = self.refused = self.reused = 0  # prepared mounts started with / unfit / reused
        _live.add(self)

    # ------------------------------------------------------------ the start path
    def take(self, dest: str, lowers: list[str], cid: str) -> bool:
        """Rename a root prepared for `lowers` to `dest` (the new container's
        directory) and keep its mount for `cid`; False if none is ready.
        Asks for the next one either way."""
        key = tuple(lowers)
        got = None
        with self._cond:
            if os.getpid() != self._pid or self._closed:
                return False
            self._seen[key] = self._seen.get(key, 0) + 1
            for i, r in enumerate(self._ready):
                if r.lowers == key:
                    got = self._ready.pop(i)
                    # Claimed at once, before the thread is woken: claimed
                    # and young, it counts as one to come back (see _loop).
                    got.since = time.monotonic()
                    self._claimed[cid] = got
                    break
            # A process that makes one container gains nothing from this.
            if self._seen[key] >= 2 and key not in self._failed and limit():
                self._want = key
                self._start_locked()
                # Woken when the container is removed (wake), not now:
                # meanwhile the thread would take the GIL from the start at
                # every system call it makes, back and forth.  One that
                # never came (nobody removed it): now.
                if self._wake_pending:
                    self._cond.notify_all()
                self._wake_pending = True
        if got is None:
            return False
        try:
            os.rename(got.path, dest)
        except OSError:
            with self._cond:
                self._claimed.pop(cid, None)
                self._cond.notify_all()
            os.close(got.fd)
            return False
        got.path = dest
        return True

    def wake(self) -> None:
        """Let the thread see what the last take left (Container.remove
        calls this)."""
        if self._wake_pending:
            with self._cond:
                self._wake_pending = False
                self._cond.notify_all()

    def claim(self, cid: str, lowers: list[str], *, keep: bool = False) -> int:
        """The prepared mount of `cid`'s root, if it still fits (same layers,
        and nobody else mounted them since); -1 otherwise.  The caller owns
        the fd from here.  `keep`: the container cannot change its root's
        superblock (no CAP_SYS_ADMIN), so a second mount of it is kept, for
        the next container if this one leaves its writable layer empty."""
        with self._cond:
            r = self._claimed.pop(cid, None)
            old = self._kept.pop(cid, None)
            if old is not None:  # a restart: its last run's root goes first
                self._cond.notify_all()
        if old is not None:
            os.close(old.fd)
        if r is None:
            return -1
        try:
            fits = r.lowers == tuple(lowers) and _marks(r.path) == r.marks
        except OSError:
            fits = False
        if not fits:
            os.close(r.fd)
            self.refused += 1
            return -1
        self.used += 1
        if keep and self._can_clone:
            from .errors import RuntimeFailure
            from .linux.runtime import clone_mount

            try:
                kept = _Kept(clone_mount(r.fd, self._userns_fd), r.lowers, r.since, r.marks)
            except RuntimeFailure as exc:
                if exc.errno == errno.EINVAL:
                    self._can_clone = False  # not on this kernel: mount each anew
            else:
                with self._cond:
                    self._kept[cid] = kept
                    # Containers removed elsewhere (another process, the
                    # CLI) never come back here: the oldest go.
                    old = []
                    while len(self._kept) > KEPT_MAX:
                        oldest = min(self._kept, key=lambda c: self._kept[c].since)
                        old.append(self._kept.pop(oldest))
                for k in old:
                    os.close(k.fd)
        return r.fd

    def drop(self, cid: str, *, kept: bool = True) -> None:
        """Forget (unmount) `cid`'s prepared mount, and with `kept` the one
        kept from its last run: its layers are about to be mounted or
        changed otherwise."""
        with self._cond:
            r = self._claimed.pop(cid, None)
            k = self._kept.pop(cid, None) if kept else None
            if k is not None:
                self._cond.notify_all()
        for fd in (r.fd if r is not None else -1, k.fd if k is not None else -1):
            if fd >= 0:
                os.close(fd)

    def reuse(self, cid: str, trash: str) -> bool:
        """Make the root kept for `cid` (removed, its directory renamed to
        `trash`) a ready one again, directory and mount, if its writable
        layer stayed empty and no copy-up was left in its work directory;
        False leaves `trash` to the caller."""
        # The thread is not woken while this one may come back: it counts.
        with self._cond:
            k = self._kept.pop(cid, None)
        if k is None:
            return False
        path = os.path.join(self._containers, f"{PREFIX}{self._pid}-{secrets.token_hex(6)}")
        ready = None
        try:
            if _work_untouched(trash, k.marks) and self._root.emptied(trash):
                os.rename(trash, path)
                ready = _Ready(path, k.lowers, k.fd, _marks(path))
        except OSError:
            pass
        with self._cond:
            wanted = (ready is not None and not self._closed and os.getpid() == self._pid
                      and k.lowers == self._want
                      and sum(r.lowers == k.lowers for r in self._ready) < limit())
            if wanted:
                self._ready.append(ready)
                self.reused += 1
            else:
                self._cond.notify_all()  # one fewer to count on
        if wanted:
            return True
        if ready is not None:
            self._release(ready)
            return True
        os.close(k.fd)
        if os.path.exists(path):  # renamed, then unreadable: delete it
            self._root.discard(path)
            return True
        return False

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until the thread has nothing to do for now: no root being
        mounted, none of the taken ones still young, as many ready as it
        keeps (tests that count descriptors).  False on timeout."""
        self.wake()  # what a start whose container was not removed left for it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                now = time.monotonic()
                young = any(now - k.since < KEPT_GRACE
                            for k in [*self._kept.values(), *self._claimed.values()])
                want = self._want
                full = want is None or want in self._failed or not limit() or \
                    sum(r.lowers == want for r in self._ready) >= limit()
                if not self._busy and not young and full:
                    return True
            time.sleep(0.01)
        return False

    # ------------------------------------------------------------ the thread
    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="contain-prepare", daemon=True)
            self._thread.start()

    def _short(self, key: tuple) -> Optional[float]:
        """None when fewer roots of `key` are ready than the limit (the
        thread has one to make); else in how many seconds the first young
        one stops counting, 0 if none is young.  Under the lock.

        Roots kept in containers started just now count for a moment: they
        come back when those are removed."""
        now = time.monotonic()
        young = [k.since + KEPT_GRACE - now
                 for k in [*self._kept.values(), *(self._claimed.values() if self._can_clone else ())]
                 if k.lowers == key and now - k.since < KEPT_GRACE]
        if sum(r.lowers == key for r in self._ready) + len(young) < limit():
            return None
        return min(young) if young else 0.0

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._want is None:
                        self._cond.wait()
                        continue
                    young = self._short(self._want)
                    if young is None:
                        break
                    self._cond.wait(young or None)
                if self._closed or os.getpid() != self._pid:
                    return
                key = self._want
                self._busy = True
            try:
                ready = self._make(key)
            finally:
                self._busy = False
            with self._cond:
                if ready is None:
                    self._failed.add(key)
                    if self._want == key:
                        self._want = None
                elif self._closed:
                    self._release(ready)
                else:
                    # Only the layers asked for last are kept: others give way.
                    self._ready.append(ready)
                    stale = [r for r in self._ready if r.lowers != self._want]
                    for r in stale:
                        self._ready.remove(r)
                        self._release(r)

    def _make(self, key: tuple) -> Optional[_Ready]:
        from ._root import clear_volatile_marker
        from .linux.runtime import mount_overlay

        path = os.path.join(self._containers, f"{PREFIX}{self._pid}-{secrets.token_hex(6)}")
        try:
            self._root.new_container_dir(path)
            clear_volatile_marker(path)
            fd = mount_overlay(list(key), os.path.join(path, "upper"), os.path.join(path, "work"),
                               userns_fd=self._userns_fd)
        except Exception:  # whatever failed, starts mount on the spot
            if os.path.exists(path):
                self._root.discard(path)
            return None
        try:
            return _Ready(path, key, fd, _marks(path))
        except OSError:
            os.close(fd)
            return None

    def _release(self, r: _Ready) -> None:
        """Unmount a prepared root nobody took and give its directory back
        as a spare (a spare's files are all there, its layer is empty)."""
        with contextlib.suppress(OSError):
            os.close(r.fd)
        with contextlib.suppress(OSError):
            self._root.retire(r.path, os.path.basename(r.path).split("-")[-1], hand_on=False)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            ready, self._ready = self._ready, []
            claimed, self._claimed = self._claimed, {}
            kept, self._kept = self._kept, {}
            self._cond.notify_all()
        for r in ready:
            self._release(r)
        for r in [*claimed.values(), *kept.values()]:
            with contextlib.suppress(OSError):
                os.close(r.fd)

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's roots and fds are not ours."""
        for r in [*self._ready, *self._claimed.values(), *self._kept.values()]:
            with contextlib.suppress(OSError):
                os.close(r.fd)
        self._ready, self._claimed, self._kept = [], {}, {}
        self._cond = threading.Condition(threading.Lock())
        self._thread = None
        self._pid = os.getpid()
        self._seen = {}


_live: "weakref.WeakSet[Preparer]" = weakref.WeakSet()


def _close_all() -> None:
    for p in list(_live):
        p.close()


def _after_fork() -> None:
    for p in list(_live):
        p._forget_after_fork()


atexit.register(_close_all)
os.register_at_fork(after_in_child=_after_fork)
