"""Where contain keeps its state, and the per-root services built on it.

One root holds the image store, containers, volumes and networks:
/var/lib/contain for root, $XDG_DATA_HOME/contain otherwise; CONTAIN_ROOT or
an explicit `root=` argument chooses another, so tests and notebooks can
keep independent stores.  Several processes may share a root.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from typing import Callable, Optional, Union

from .linux.rootless import is_rootless
from .storage.store import Store, default_root

_lock = threading.Lock()
_INIT_DIRS = ("proc", "sys", "dev", "dev/pts", "dev/shm", "dev/mqueue", "etc", "sbin")
_INIT_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf", "sbin/docker-init")
_roots: dict[str, "Root"] = {}


def idle_io() -> None:
    """Give the calling thread the idle I/O class: deleting what containers
    left must not slow the containers starting meanwhile."""
    import ctypes

    ioprio_set = {"x86_64": 251, "aarch64": 30}.get(os.uname().machine)
    if ioprio_set is not None:
        # IOPRIO_WHO_PROCESS with who=0 is the calling thread; class 3 is idle.
        ctypes.CDLL(None, use_errno=True).syscall(ioprio_set, 1, 0, 3 << 13)


# ------------------------------------------------------- background deletion
# One daemon thread per process deletes what was renamed away (removed
# containers, discarded layers), so that a removal costs a rename.  It waits
# for a quiet moment (no removal for QUIET seconds) or a backlog of BACKLOG
# trees: on ext4 (the more so mounted with discard) deleting files while
# containers start doubles their start time, because every metadata change
# waits on the same journal.  What is pending when the process exits is
# deleted then (for a few seconds at most); what a killed process leaves
# keeps its marker name, and the next process to open the root deletes it.
QUIET = 0.5
BACKLOG = 64
_dcond = threading.Condition(threading.Lock())
_pending: list = []
_deleting = 0
_flushing = 0
_last_put = 0.0
_discarder: Optional[threading.Thread] = None


def remove_tree(path: str, _depth: int = 0) -> None:
    """Delete a tree, whatever it holds: overlay leaves its work/work
    directory mode 000, which a caller without CAP_DAC_OVERRIDE (an ordinary
    user) cannot enter until it is made its own again.  Best effort: what
    the caller may not change (an ordinary user and a subordinate id's
    files) is left, at once."""
    def retry(func, failed, exc) -> None:
        if isinstance(exc, tuple):  # onerror's exc_info (before Python 3.12)
            exc = exc[1]
        if isinstance(exc, FileNotFoundError) or _depth > 32:
            return
        # Try again only where a mode was in the way and we could change it:
        # otherwise the same failure would come back at every level.
        changed = False
        for d in (os.path.dirname(failed), failed):
            try:
                st = os.lstat(d)
                if stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                    os.chmod(d, 0o700)
                    changed = True
            except OSError:
                pass
        if not changed:
            return
        if os.path.isdir(failed) and not os.path.islink(failed):
            remove_tree(failed, _depth + 1)
        else:
            with contextlib.suppress(OSError):
                os.unlink(failed)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def clear_volatile_marker(cdir: str) -> None:
    """An overlay mounted with "volatile" refuses the same work directory
    until the marker its clean unmount left is gone."""
    remove_tree(os.path.join(cdir, "work", "work", "incompat"))


def discard_later(path: str, remover: Optional[Callable[[str], None]] = None) -> None:
    """Delete `path` in the background (with `remover`, default remove_tree)."""
    global _discarder, _last_put
    with _dcond:
        _pending.append((path, remover))
        _last_put = time.monotonic()
        if _discarder is None or not _discarder.is_alive():
            _discarder = threading.Thread(target=_discard_loop, name="contain-discard", daemon=True)
            _discarder.start()
        _dcond.notify_all()


def _discard_loop() -> None:
    global _deleting
    idle_io()
    while True:
        with _dcond:
            while True:
                if _pending:
                    quiet_for = time.monotonic() - _last_put
                    if _flushing or len(_pending) >= BACKLOG or quiet_for >= QUIET:
                        break
                    _dcond.wait(QUIET - quiet_for)
                else:
                    _dcond.wait()
            batch = list(_pending)
            _pending.clear()
            _deleting += len(batch)
        for path, remover in batch:
            try:
                (remover or remove_tree)(path)
            except Exception:  # best effort: what is left keeps its marker name
                pass
        with _dcond:
            _deleting -= len(batch)
            _dcond.notify_all()


def wait_for_discards(timeout: Optional[float] = None) -> None:
    """Delete what was discarded so far now, and wait until it is gone
    (tests, benchmarks, process exit)."""
    global _flushing
    deadline = None if timeout is None else time.monotonic() + timeout
    with _dcond:
        _flushing += 1
        _dcond.notify_all()
        try:
            while _pending or _deleting:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                _dcond.wait(remaining)
        finally:
            _flushing -= 1


atexit.register(wait_for_discards, 5.0)


class Root:
    """Paths and lazily made services of one state root."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.containers = os.path.join(path, "containers")
        self.names = os.path.join(path, "names")
        self.volumes = os.path.join(path, "volumes")
        for d in (path, self.containers, self.names, self.volumes):
            os.makedirs(d, mode=0o711, exist_ok=True)
        self.store = Store(path)
        self._cgroups = None
        self._layers: dict[str, list[str]] = {}
        self._init_layer: Optional[str] = None
        self._mount_point: Optional[str] = None
        self._spares: list[str] = []
        self._spare_lock = threading.Lock()
        for n in os.listdir(self.containers):
            if n.startswith(".removing-"):  # from a process that exited mid-delete
                self.discard(os.path.join(self.containers, n))
            elif n.startswith(".spare-"):
                self._spares.append(os.path.join(self.containers, n))
            elif n.startswith(".prepared-") and not _prepared_owner_alive(n):
                self._spares.append(os.path.join(self.containers, n))  # a root made ahead, never used
        self._preparer = None
        self._shared_userns: Optional[int] = None  # rootless: see shared_userns

    def image_layers(self, image_id: str) -> list[str]:
        """The image's unpacked layer dirs, topmost first: looked up in the
        store once per process and image (a layer dir never changes while it
        exists; one that was collected sends us back to the store)."""
        layers = self._layers.get(image_id)
        if layers is None or (layers and not os.path.isdir(layers[0])):
            layers = self._layers[image_id] = self.store.lowerdirs(image_id)
        return list(layers)

    def discard(self, path: str) -> None:
        """Delete a renamed-away tree in the background, at idle I/O priority."""
        discard_later(path, self._remove_owned if self.rootless else None)

    def _remove_owned(self, path: str) -> None:
        """An ordinary user's delete: what subordinate ids own (files a
        container made as another user) is deleted from inside the user
        namespace, as their owner there."""
        remove_tree(path)
        maps = self.store.id_maps
        if os.path.lexists(path) and maps is not None:
            from .storage import userns

            userns.remove(maps, [path])

    # A removed container's directory whose writable layer stayed empty is
    # kept (at most SPARES per process) and becomes the next container's:
    # its directories and files are reused instead of deleted and made
    # again.  On ext4 without a journal every new inode costs a scan past
    # the inodes freed in the last 30 s, so a container that makes and
    # deletes a dozen files slows every start after it.
    SPARES = 8
    _RECYCLABLE = frozenset(("upper", "work", "state.json", "state.json.next", "container.log",
                             "exit", "exit.tmp", "hosts", "hostname", "resolv.conf", "id"))

    @property
    def preparer(self):
        """Roots mounted ahead for the next containers (_prepared.py).  For
        an ordinary user, made in the user's long-lived user namespace
        (linux.userns), which the containers join; None where there is
        none (a single-id mapping) or fuse-overlayfs mounts the roots."""
        if self._preparer is None:
            from ._prepared import Preparer

            with self._spare_lock:
                if self._preparer is None:
                    if not self.rootless:
                        self._preparer = Preparer(self)
                    else:
                        fd = self.shared_userns()
                        if fd is not None:
                            self._preparer = Preparer(self, userns_fd=fd)
        return self._preparer

    def shared_userns(self):
        """Rootless: the fd of the user's long-lived user namespace that
        this root's containers join (linux.userns), or None where they make
        their own (a single-id mapping, fuse-overlayfs roots)."""
        if self._shared_userns is None:  # looked for once: a start asks every time
            from .linux import rootless, userns

            fd = None
            if rootless.rootfs_driver(os.path.dirname(self.mount_point())).mount_program is None:
                fd = userns.shared(self.id_maps, rootless.runtime_dir())
            self._shared_userns = -1 if fd is None else fd
        return None if self._shared_userns < 0 else self._shared_userns

    def drop_prepared(self, cid: str, *, kept: bool = True) -> None:
        """Unmount the root made ahead for container `cid`, if this process
        holds one (its layers are about to be mounted or changed otherwise),
        and with `kept` the one kept from its last run for reuse."""
        if self._preparer is not None:
            self._preparer.drop(cid, kept=kept)

    def new_container_dir(self, dest: str) -> None:
        """Make `dest` a container directory (upper/ and work/ in it): a
        spare renamed there, else made."""
        if not self.take_spare(dest):
            os.mkdir(dest, 0o700)
            for sub in ("upper", "work"):
                os.mkdir(os.path.join(dest, sub), 0o755)

    def retire(self, path: str, token: str, *, hand_on: bool = True) -> None:
        """Take a container directory out of the way at once (renamed, so it
        is never mistaken for a container) and keep it as a spare or delete
        it in the background.  With `hand_on`, the root of container `token`
        whose writable layer stayed empty may stay mounted for the next one
        (_prepared.py)."""
        trash = os.path.join(self.containers, f".removing-{token}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            if hand_on and self._preparer is not None and self._preparer.reuse(token, trash):
                return
            if not self.recycle(trash):
                self.discard(trash)

    def take_spare(self, dest: str) -> bool:
        """Rename a spare container directory to `dest`; False if none is left."""
        while True:
            with self._spare_lock:
                if not self._spares:
                    return False
                spare = self._spares.pop()
            try:
                os.rename(spare, dest)
                return True
            except FileNotFoundError:  # another process took it
                continue

    def recycle(self, trash: str) -> bool:
        """Keep a removed container's directory (renamed away to `trash`) as
        a spare if it holds nothing but what every container has, with an
        empty writable layer; False: the caller discards it."""
        with self._spare_lock:
            if len(self._spares) >= self.SPARES:
                return False
        try:
            if not self.emptied(trash):
                return False
            spare = os.path.join(self.containers, ".spare-" + os.path.basename(trash).rsplit("-", 1)[-1])
            os.rename(trash, spare)
        except OSError:
            return False
        with self._spare_lock:
            self._spares.append(spare)
        return True

    def emptied(self, trash: str) -> bool:
        """Whether a removed container's directory holds nothing but what
        every container has, with an empty writable layer whose root is as
        it was made; if so, its log is emptied and its exit record made the
        next one's file.  OSError when it cannot be read."""
        names = set(os.listdir(trash))
        if not names <= self._RECYCLABLE:
            return False
        if "id" in names and os.stat(os.path.join(trash, "id")).st_nlink != 1:
            return False  # a name still links to it
        upper = os.path.join(trash, "upper")
        st = os.lstat(upper)
        # overlay keeps its instance's uuid on the layer's root: nothing of
        # the container's; any other attribute was set from inside.
        marks = [x for x in os.listxattr(upper, follow_symlinks=False)
                 if x not in ("trusted.overlay.uuid", "user.overlay.uuid")]
        if (st.st_mode != 0o40755 or st.st_uid != os.geteuid() or st.st_gid != os.getegid()
                or marks or os.listdir(upper)):
            return False
        log = os.path.join(trash, "container.log")
        if os.path.exists(log):
            os.truncate(log, 0)
        with contextlib.suppress(FileNotFoundError):
            os.rename(os.path.join(trash, "exit"), os.path.join(trash, "exit.tmp"))
        return True

    def mount_point(self) -> str:
        """Where a starting container mounts its root: one directory for all,
        as each mounts it in a mount namespace of its own (no directory to
        make per container)."""
        if self._mount_point is None:
            path = os.path.join(self.path, "rootfs-mount")
            os.makedirs(path, mode=0o755, exist_ok=True)
            self._mount_point = path
        return self._mount_point

    def init_layer(self) -> str:
        """The layer of mount points every container needs (/proc, /dev,
        /etc/hosts, ...), one per root, read-only under each container, so
        that neither the image nor a writable layer (nor a commit) holds them."""
        if self._init_layer is None:
            # Versioned: a root keeps the layer its containers were made with.
            path = os.path.join(self.path, "init-layer.2")
            if not os.path.isdir(path):
                tmp = tempfile.mkdtemp(prefix=".init-", dir=self.path)
                for d in _INIT_DIRS:
                    os.makedirs(os.path.join(tmp, d), mode=0o755, exist_ok=True)
                for f in _INIT_FILES:
                    with open(os.path.join(tmp, f), "w"):
                        pass
                os.chmod(tmp, 0o755)
                try:
                    os.rename(tmp, path)
                except OSError:  # another process made it first
                    shutil.rmtree(tmp, ignore_errors=True)
            self._init_layer = path
        return self._init_layer

    @property
    def rootless(self) -> bool:
        return is_rootless()

    @property
    def id_maps(self):
        """The user namespace mappings of an ordinary user (None as root):
        the store's, which its layers are owned through."""
        return self.store.id_maps if self.rootless else None

    @property
    def cgroups(self):
        if self._cgroups is None and self.rootless:
            from .linux import rootless

            delegated = rootless.delegated_cgroup()
            # No delegated subtree: containers run in the caller's cgroup.
            self._cgroups = (rootless.NoCgroupManager() if delegated is None
                             else rootless.delegated_manager(delegated))
            return self._cgroups
        if self._cgroups is None:
            from .linux.cgroups import CgroupManager

            # No extra tracking hierarchies: on a hybrid host the v1
            # controllers do all the work, and each one costs a mkdir and
            # an rmdir per container.
            self._cgroups = CgroupManager.for_host(systemd=False, track_unified=False)
        return self._cgroups

    def container_dir(self, cid: str) -> str:
        return os.path.join(self.containers, cid)


def _prepared_owner_alive(name: str) -> bool:
    from ._prepared import owner_alive

    return owner_alive(name)


def get_root(root: Union[None, str, os.PathLike, Root] = None) -> Root:
    if isinstance(root, Root):
        return root
    path = os.path.abspath(os.fspath(root) if root is not None else default_root())
    with _lock:
        r = _roots.get(path)
        if r is None:
            r = _roots[path] = Root(path)
        return r


RootArg = Optional[Union[str, "os.PathLike[str]", Root]]
