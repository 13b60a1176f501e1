"""Fresh network namespaces with their veth pair made ahead, for bridge starts.

Making a namespace, bringing lo up and creating a veth pair takes the kernel
several milliseconds, most of a bridge start.  None of it depends on the
container, so a background thread of the caller's process makes them ahead:
each pair waits here as a namespace fd plus a netlink socket opened inside it,
`eth0` inside and a host end named `cvp<pid:7x><seq:5x>`, down, on no bridge,
with the alias `contain-pool pid=<pid> start=<start time> pidns=<inode>`.
A start takes one (endpoint.prepare -> links.attach_pair puts the host end on
the bridge, keeping its name, and relabels it `contain ctr=<container id>`);
a namespace is never used twice.

The pool grows with demand: one pair from the second start of a process on
(a process that starts one container gains nothing from a pool), doubled
whenever a start finds it empty, up to CONTAIN_NETNS_POOL (default 4; 0 turns
the background thread off and every start makes its pair on the spot).
fill(n) asks for n ready pairs ahead.

Nothing outlives the process: the pairs are held by descriptors only, never
by a file in /run/netns, so they die with the process however it ends, and
atexit closes them on a normal exit.  A forked child closes its copies at
once.  Should a pool link ever be left (a descriptor inherited by a process
that outlived its owner), sweep_leftovers() - run by endpoint.repair() and
when a pool starts - deletes every pool link whose owner is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import threading
import time
from typing import Optional

from ..errors import RuntimeFailure
from ..linux.proc import start_time
from . import links

PREFIX = "cvp"
ALIAS = "contain-pool"
DEFAULT_SIZE = 4
_ENV = "CONTAIN_NETNS_POOL"
_SETTLE = 0.002  # seconds the thread lets a start finish its netlink requests


def limit() -> int:
    """The most pairs kept ready (CONTAIN_NETNS_POOL)."""
    try:
        return max(0, int(os.environ.get(_ENV, DEFAULT_SIZE)))
    except ValueError:
        return DEFAULT_SIZE




def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.ready: list[links.FreshPair] = []
        self.target = 0
        self.generation = 0  # bumped by shutdown: a filler of an older one stops
        self.thread: Optional[threading.Thread] = None
        self.seq = 0
        self.swept = False
        self.pid = os.getpid()
        self._alias = ""
        self.hits = self.misses = 0

    @property
    def alias(self) -> str:
        # Read lazily: this object is also made in a just-forked child.
        if not self._alias:
            self._alias = (f"{ALIAS} pid={self.pid} start={start_time(self.pid)} "
                           f"pidns={_pidns()}")
        return self._alias

    def name(self) -> str:
        # Called under the lock.  15 characters, the most IFNAMSIZ allows.
        self.seq = (self.seq + 1) & 0xFFFFF
        return f"{PREFIX}{self.pid:07x}{self.seq:05x}"


_pool = _Pool()


def take() -> links.FreshPair:
    """A fresh pair for a start: a ready one, else one made now."""
    pair = _take_ready(_pool, _fill, "contain-netns-pool")
    if pair is None:
        pair = _make(_pool, links.fresh_pair)
    return pair


def _take_ready(p: _Pool, fill, thread_name: str):
    """A ready item of pool `p` or None; starts or wakes its filler thread."""
    size = limit()
    if _taken:
        refill()  # the last start's were not woken (nobody removed its container)
    with p.lock:
        got = p.ready.pop() if p.ready else None
        if got is None:
            p.misses += 1
        else:
            p.hits += 1
        # A process that starts one container (the CLI, a restart) gains
        # nothing from a pool: the thread begins with the second start.
        if size and p.hits + p.misses >= 2:
            if got is None:
                p.target = min(size, max(1, 2 * p.target))
            if p.thread is None or not p.thread.is_alive():
                p.thread = threading.Thread(target=fill, args=(p, p.generation),
                                            name=thread_name, daemon=True)
                p.thread.start()
            _taken.add(p)  # woken by refill, once the container is removed
    return got


# Pools a start took from.  Their fillers are woken once its container is
# removed (Container._wake_fillers calls refill), or at the next take, not
# at this one: meanwhile the start's child builds its root and the monitor
# starts, and a filler making a namespace would take a CPU from them, and
# the GIL from the start's Python at each of its system calls.
_taken: set = set()


def refill() -> None:
    """Wake the fillers of the pools taken from since the last call."""
    while _taken:
        try:
            p = _taken.pop()
        except KeyError:  # another thread emptied it
            return
        with p.lock:
            p.wake.notify()


def _make(p: _Pool, make) -> links.FreshPair:
    for attempt in range(8):
        with p.lock:
            name, alias = p.name(), p.alias
        try:
            return make(name, links.host_mtu(), alias)
        except RuntimeFailure as exc:
            # The name is taken: a container of an earlier process with our
            # pid (pids are reused) still holds it.  The next one is free.
            if exc.errno != errno.EEXIST or isinstance(exc, links.StrandedThread) or attempt == 7:
                raise
    raise AssertionError("unreachable")


def _fill(p: _Pool, generation: int) -> None:
    """The background thread: keep `target` pairs ready."""
    if not p.swept:
        p.swept = True
        try:
            sweep_leftovers()
        except Exception:  # repair is best effort here; endpoint.repair retries
            pass
    # The start that took a pair is still configuring it: making the next
    # one at once would contend with it for the kernel's rtnl lock.
    _fill_loop(p, generation, lambda: _make(p, links.fresh_pair_here), lambda pair: pair.close(),
               settle=_SETTLE)


def _fill_loop(p: _Pool, generation: int, make, close, settle: float = 0.0) -> None:
    failures = 0
    while True:
        with p.lock:
            while p.generation == generation and len(p.ready) >= p.target:
                p.wake.wait()
            if p.generation != generation:
                return
        if settle:
            time.sleep(settle)
        try:
            item = make()
        except links.StrandedThread:
            return  # this thread is in a foreign namespace: it does nothing more
        except (RuntimeFailure, OSError):
            # Out of resources, or no permission: starts make their own
            # meanwhile; try again later, more slowly each time.
            failures += 1
            with p.lock:  # woken early by shutdown
                if p.generation == generation:
                    p.wake.wait(min(5.0, 0.05 * 2 ** failures))
            continue
        failures = 0
        with p.lock:
            if p.generation == generation:
                p.ready.append(item)
                continue
        close(item)
        return


# -------------------------------------------------- bare namespaces ("none")
# The same for network "none": a namespace with lo up, made ahead, saves a
# start the half millisecond the kernel takes to make one.  Same growth
# (from the second take on, doubling up to the limit), same lifetime (fds
# only), nothing to sweep: a namespace without links dies with its fds.
_bare = _Pool()


def take_bare() -> Optional[int]:
    """A ready namespace fd for a "none" start (the caller owns it), or None:
    the container then makes its own, as ever."""
    return _take_ready(_bare, _fill_bare, "contain-netns-none")


def _fill_bare(p: _Pool, generation: int) -> None:
    _fill_loop(p, generation, links.bare_netns_here, os.close)


# Rootless: the same, made as members of the user's long-lived user
# namespace (linux.userns), which the containers join; one pool per
# namespace fd (one per process in practice).
_bare_in: dict[int, _Pool] = {}


def take_bare_in(userns_fd: int) -> Optional[int]:
    """A ready namespace fd of the user namespace `userns_fd` for a "none"
    start (the caller owns it), or None: the container makes its own."""
    with _bare.lock:
        p = _bare_in.get(userns_fd)
        if p is None:
            p = _bare_in[userns_fd] = _Pool()

    def fill(p: _Pool, generation: int) -> None:
        from ..linux.runtime import netns_in

        _fill_loop(p, generation, lambda: netns_in(userns_fd), os.close)

    return _take_ready(p, fill, "contain-netns-none")


def bare_stats() -> dict[str, int]:
    with _bare.lock:
        return {"ready": len(_bare.ready), "target": _bare.target,
                "hits": _bare.hits, "misses": _bare.misses}


def ready_links() -> list[str]:
    """Host ends of the pairs ready now (for tests and diagnostics)."""
    with _pool.lock:
        return [pair.host_ifname for pair in _pool.ready]


def stats() -> dict[str, int]:
    with _pool.lock:
        return {"ready": len(_pool.ready), "target": _pool.target,
                "hits": _pool.hits, "misses": _pool.misses}


def fill(count: int, timeout: float = 10.0) -> bool:
    """Ask for `count` ready pairs (capped by the limit) and wait for them."""
    p = _pool
    with p.lock:
        p.target = max(p.target, min(count, limit()))
        if p.target and (p.thread is None or not p.thread.is_alive()):
            p.thread = threading.Thread(target=_fill, args=(p, p.generation),
                                        name="contain-netns-pool", daemon=True)
            p.thread.start()
        p.wake.notify()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with p.lock:
            if len(p.ready) >= p.target:
                return True
        time.sleep(0.005)
    return False


def shutdown(timeout: float = 2.0) -> None:
    """Destroy every ready pair and namespace and stop the threads (a later
    take() starts anew)."""
    for b in [_bare, *_bare_in.values()]:
        with b.lock:
            b.generation += 1
            b.target = 0
            fds, b.ready = b.ready, []
            b.wake.notify_all()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    p = _pool
    with p.lock:
        p.generation += 1
        p.target = 0
        pairs, p.ready = p.ready, []
        thread, p.thread = p.thread, None
        p.wake.notify_all()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)  # a pair it finishes later is closed by the thread itself
    for pair in pairs:
        pair.close()


def sweep_leftovers() -> list[str]:
    """Delete pool links whose owning process is gone; returns their names."""
    try:
        names = [n for n in os.listdir("/sys/class/net") if n.startswith(PREFIX)]
    except OSError:
        return []
    removed = []
    for name in names:
        if _owner_alive(name):
            continue
        if links.delete_link(name):
            removed.append(name)
    return removed


def _owner_alive(name: str) -> bool:
    try:
        with open(f"/sys/class/net/{name}/ifalias") as f:
            alias = f.read().split()
    except OSError:
        alias = []
    if alias[:1] == ["contain"]:
        return True  # in use by a container ("contain ctr=<id>"): endpoint repair's concern
    fields = dict(w.split("=", 1) for w in alias[1:] if "=" in w)
    if fields.get("pidns", str(_pidns())) != str(_pidns()):
        return True  # a process we cannot see (another pid namespace): not ours to judge
    if alias[:1] == [ALIAS] and fields.get("pid", "").isdigit():
        pid = int(fields["pid"])
        start = fields.get("start")
        now = start_time(pid)
        return now is not None and (start in (None, "None") or str(now) == start)
    # No alias yet (just made): the owner's pid is in the name.
    try:
        pid = int(name[len(PREFIX):len(PREFIX) + 7], 16)
    except ValueError:
        return False
    return start_time(pid) is not None


def _after_fork_in_child() -> None:
    # The child shares the parent's descriptors: its copies would keep the
    # parent's ready namespaces alive after the parent closed them.  It starts
    # with an empty pool of its own (and its own name prefix: its pid).
    global _pool, _bare
    old, _pool = _pool, _Pool()
    for pair in list(old.ready):
        try:
            pair.close()
        except OSError:
            pass
    old_bare, _bare = _bare, _Pool()
    for fd in old_bare.ready:
        with contextlib.suppress(OSError):
            os.close(fd)
    # The same for the rootless ones: two processes must never hand out one.
    for p in list(_bare_in.values()):
        for fd in p.ready:
            with contextlib.suppress(OSError):
                os.close(fd)
    _bare_in.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(shutdown)
