"""Control groups: one manager over cgroup v1, v2 and hybrid hosts.

What runs where
---------------
* Python (this module), in the caller's process, before the container starts:
  ``detect()`` reads the mount table to learn the layout, ``CgroupManager.create()``
  makes the cgroup directories and writes the resource limits.  It is on the start
  path, so every write is a bare ``os.open``/``os.write``.
* Native core, in the cloned child, between clone and exec: the child joins the cgroup
  by writing ``"0"`` into each file of ``Cgroup.join_files()`` (v1 ``tasks``, opened
  O_WRONLY by the parent beforehand; or, for v1 cgroups made during the start, opened by
  the child once they exist), or, on v2 kernels with clone3, is placed there at clone
  time with CLONE_INTO_CGROUP and a descriptor of ``Cgroup.v2_path``.
* Python again, from any later process: ``CgroupManager.open(name)`` finds the cgroup by
  pure path computation; ``stats``, ``pids``, ``freeze``/``thaw``, ``kill``, ``remove``.

Layouts
-------
* v2 (unified): one tree.  The parent (``contain`` by default) is created at its root
  with the controllers we use enabled in ``cgroup.subtree_control`` along the path.
* v1 (legacy): one directory per controller hierarchy (cpu, cpuacct, cpuset, memory,
  pids, freezer, devices, blkio) plus the ``name=systemd`` hierarchy, so a detached
  container leaves the caller's systemd unit and is not killed when that unit stops.
  cpuset refuses tasks until ``cpuset.cpus``/``cpuset.mems`` are set, so both are copied
  from the parent into the parent directory and then into the container's directory.
* hybrid: resources are set through the v1 hierarchies.  The container also gets a
  same-named cgroup in the v2 tree (without controllers), as runc does: systemd tracks
  processes there on hybrid hosts, and it provides ``cgroup.kill`` and a
  CLONE_INTO_CGROUP target.  ``CgroupManager(track_unified=False)`` turns this off.

Every function takes its root (mount point, mountinfo path), and every file operation
goes through a ``Syscalls`` object, so unit tests run on a temporary tree.

Limitations: no systemd (dbus) driver; no device rules here (the devices module writes
them); blkio/io weights and hugetlb limits are not part of ``Resources`` yet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import signal
import sys
import time
from decimal import Decimal, InvalidOperation
from typing import Iterable, Mapping

import attrs

from contain.errors import Conflict, InvalidArgument, NotFound, RuntimeFailure

DEFAULT_ROOT = "/sys/fs/cgroup"
DEFAULT_MOUNTINFO = "/proc/self/mountinfo"
DEFAULT_PARENT = "contain"
#: Environment variable overriding the parent cgroup name (tests, several stores on one host).
PARENT_ENV = "CONTAIN_CGROUP_PARENT"

CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270

#: v1 controllers a container gets a directory in, in creation order.
V1_CONTROLLERS = ("cpuset", "cpu", "cpuacct", "memory", "pids", "freezer", "devices", "blkio")
SYSTEMD = "name=systemd"
#: Key of the v2 directory in ``Cgroup.paths`` (v2 hosts, and hybrid hosts when tracked).
UNIFIED = "unified"
#: v2 controllers enabled for containers, when the kernel offers them.
V2_CONTROLLERS = ("cpu", "cpuset", "io", "memory", "pids")

_KNOWN_V1 = frozenset(
    V1_CONTROLLERS
    + ("net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc", "debug")
)

CPU_PERIOD_DEFAULT = 100_000
_UNLIMITED_V1 = 1 << 62  # v1 reports "no limit" as a page-rounded LONG_MAX


# --------------------------------------------------------------------------- resources


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _check_cpu_list(name: str, value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _CPU_LIST.match(value.replace(" ", "")):
        raise InvalidArgument(f"{name} must look like '0-3,5', not {value!r}")
    for part in value.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        if high and int(high) < int(low):
            raise InvalidArgument(f"{name}: range {part!r} runs backwards")


@attrs.frozen(kw_only=True)
class Resources:
    """Limits for one cgroup.  ``None`` everywhere means "leave as it is".

    memory, memory_swap (memory plus swap, as Docker counts it), memory_reservation: bytes,
    ``-1`` for unlimited.  cpu_shares: Docker's 2..262144 scale (v2: converted to
    cpu.weight).  cpu_quota/cpu_period: microseconds (period defaults to 100000 when a
    quota is given; quota ``-1`` is unlimited).  pids_limit: ``None`` untouched,
    ``-1``/``0`` unlimited.  cpuset_cpus/cpuset_mems: lists like ``"0-2,4"``.
    """

    memory: int | None = None
    memory_swap: int | None = None
    memory_reservation: int | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    pids_limit: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None

    def __attrs_post_init__(self) -> None:
        for field in ("memory", "memory_swap", "memory_reservation", "cpu_shares",
                      "cpu_quota", "cpu_period", "pids_limit"):
            value = getattr(self, field)
            if value is not None and not _is_int(value):
                raise InvalidArgument(f"{field} must be an integer, not {value!r}")
        memory, swap = self.memory, self.memory_swap
        if memory is not None and memory != -1 and memory <= 0:
            raise InvalidArgument(f"memory must be positive or -1 (unlimited), not {memory}")
        if swap is not None:
            if swap != -1 and swap <= 0:
                raise InvalidArgument(f"memory_swap must be positive or -1 (unlimited), not {swap}")
            if memory is None:
                raise InvalidArgument("memory_swap needs memory: set the memory limit too")
            if swap != -1 and (memory == -1 or swap < memory):
                raise InvalidArgument(
                    f"memory_swap ({swap}) counts memory plus swap: it must be at least "
                    f"memory ({memory}), or -1 for unlimited swap")
        reservation = self.memory_reservation
        if reservation is not None:
            if reservation < -1:
                raise InvalidArgument(f"memory_reservation must be >= 0 or -1, not {reservation}")
            if memory is not None and memory > 0 and reservation > memory:
                raise InvalidArgument(
                    f"memory_reservation ({reservation}) must not exceed memory ({memory})")
        if self.cpu_shares is not None and not 2 <= self.cpu_shares <= 262144:
            raise InvalidArgument(f"cpu_shares must be within 2..262144, not {self.cpu_shares}")
        if self.cpu_quota is not None and self.cpu_quota != -1 and self.cpu_quota < 1000:
            raise InvalidArgument(
                f"cpu_quota must be at least 1000 microseconds or -1, not {self.cpu_quota}")
        if self.cpu_period is not None and not 1000 <= self.cpu_period <= 1_000_000:
            raise InvalidArgument(
                f"cpu_period must be within 1000..1000000 microseconds, not {self.cpu_period}")
        if self.pids_limit is not None and self.pids_limit < -1:
            raise InvalidArgument(f"pids_limit must be positive, or -1/0 for unlimited, not {self.pids_limit}")
        _check_cpu_list("cpuset_cpus", self.cpuset_cpus)
        _check_cpu_list("cpuset_mems", self.cpuset_mems)

    @property
    def cpu_weight(self) -> int | None:
        """cgroup v2 cpu.weight for cpu_shares, converted as crun and runc do."""
        if self.cpu_shares is None:
            return None
        return 1 + ((self.cpu_shares - 2) * 9999) // 262142

    def needs(self) -> frozenset[str]:
        """The controllers these resources are written through."""
        wanted = set()
        if any(v is not None for v in (self.memory, self.memory_swap, self.memory_reservation)):
            wanted.add("memory")
        if any(v is not None for v in (self.cpu_shares, self.cpu_quota, self.cpu_period)):
            wanted.add("cpu")
        if self.pids_limit is not None:
            wanted.add("pids")
        if self.cpuset_cpus is not None or self.cpuset_mems is not None:
            wanted.add("cpuset")
        return frozenset(wanted)

    @classmethod
    def from_docker(
        cls,
        *,
        mem_limit: int | str | None = None,
        memswap_limit: int | str | None = None,
        mem_reservation: int | str | None = None,
        nano_cpus: int | None = None,
        cpu_shares: int | None = None,
        cpu_period: int | None = None,
        cpu_quota: int | None = None,
        pids_limit: int | None = None,
        cpuset_cpus: str | None = None,
        cpuset_mems: str | None = None,
        memory: int | str | None = None,
        memory_swap: int | str | None = None,
        memory_reservation: int | str | None = None,
        cpus: float | str | None = None,
    ) -> "Resources":
        """Resources from docker-py's keywords (``memory=``, ``memory_swap=``,
        ``memory_reservation=``, ``cpus=`` are accepted as aliases).

        Docker's conventions hold: sizes like ``"512m"``/``"1g"`` (binary units), ``0`` means
        "not set", ``memswap_limit=-1`` is unlimited swap, and a memory limit without a swap
        limit allows as much swap again (memory+swap = 2 x memory).
        """
        mem = _alias("mem_limit", mem_limit, "memory", memory, parse_size)
        swap = _alias("memswap_limit", memswap_limit, "memory_swap", memory_swap, parse_size)
        reservation = _alias("mem_reservation", mem_reservation,
                             "memory_reservation", memory_reservation, parse_size)
        nano = _alias("nano_cpus", nano_cpus, "cpus", cpus, _check_nano, _nano_cpus)
        mem = mem or None
        swap = swap or None
        reservation = reservation or None
        if mem is not None and 0 < mem < 6 * 1024 * 1024:
            raise InvalidArgument("minimum memory limit allowed is 6MB")
        if reservation is not None and 0 < reservation < 6 * 1024 * 1024:
            raise InvalidArgument("minimum memory reservation allowed is 6MB")
        if swap is not None and mem is None:
            raise InvalidArgument("you should always set the memory limit when using a memory+swap limit")
        if mem is not None and mem > 0 and swap is None:
            swap = 2 * mem
        if cpu_shares == 0:
            cpu_shares = None
        quota, period = cpu_quota or None, cpu_period or None
        if nano:
            if quota is not None or period is not None:
                raise InvalidArgument("conflicting options: nano_cpus/cpus and cpu_period/cpu_quota cannot both be set")
            if nano < 0:
                raise InvalidArgument(f"cpus must be positive, not {nano / 1e9}")
            period = CPU_PERIOD_DEFAULT
            quota = nano * period // 1_000_000_000
            if quota < 1000:
                raise InvalidArgument("range of cpus starts at 0.01")
        if pids_limit is not None and pids_limit <= 0:
            pids_limit = -1
        return cls(memory=mem, memory_swap=swap, memory_reservation=reservation,
                   cpu_shares=cpu_shares, cpu_quota=quota, cpu_period=period,
                   pids_limit=pids_limit, cpuset_cpus=cpuset_cpus or None,
                   cpuset_mems=cpuset_mems or None)


def _alias(name: str, value, alias: str, alias_value, convert, convert_alias=None):
    first = None if value is None else convert(value)
    second = None if alias_value is None else (convert_alias or convert)(alias_value)
    if first is not None and second is not None and first != second:
        raise InvalidArgument(f"{name}={value!r} and {alias}={alias_value!r} disagree; pass one")
    return first if first is not None else second


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(value: int | str) -> int:
    """Bytes from Docker's size notation: 1024, "512m", "1g", "1.5GiB", "-1"."""
    if _is_int(value):
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        if value.strip() == "-1":
            return -1
        match = _SIZE.match(value)
        if match:
            number, unit = match.group(1), match.group(2).lower()
            return int(Decimal(number) * _UNITS[unit])
    raise InvalidArgument(f"invalid size {value!r}: use bytes or a number with k, m, g, t or p")


def _check_nano(value: int) -> int:
    if not _is_int(value):
        raise InvalidArgument(f"nano_cpus must be an integer (CPUs x 1e9), not {value!r}")
    return value


def _nano_cpus(value: float | int | str) -> int:
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid cpus value {value!r}")
    try:
        nano = Decimal(str(value)) * 1_000_000_000
    except InvalidOperation:
        raise InvalidArgument(f"invalid cpus value {value!r}") from None
    if nano != nano.to_integral_value():
        raise InvalidArgument(f"cpus value {value!r} is too precise")
    return int(nano)


# --------------------------------------------------------------------------- file access


class Syscalls:
    """The few operations cgroups need from the kernel; tests pass a fake."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def write(self, path: str, data: str) -> None:
        # One write per value: cgroup files parse each write() as a whole.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data.encode())
        finally:
            os.close(fd)

    def read(self, path: str) -> str:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks).decode()

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def subdirs(self, path: str) -> list[str]:
        try:
            with os.scandir(path) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def statfs_magic(self, path: str) -> int | None:
        return _statfs_magic(path)


_SYSCALLS = Syscalls()


def _fail(step: str, exc: OSError, path: str, detail: str = "") -> RuntimeFailure:
    message = f"{detail} ({path})" if detail else path
    return RuntimeFailure(step, exc.errno or 0, message)


# --------------------------------------------------------------------------- detection


@attrs.frozen
class Layout:
    """Where the cgroup filesystems are mounted.

    mode: "v1", "v2" or "hybrid".  v1: controller (or "name=systemd") -> mount point.
    v2: the cgroup2 mount point, if any.  v2_controllers: its root's cgroup.controllers.
    """

    mode: str
    root: str
    v1: Mapping[str, str] = attrs.field(factory=dict)
    v2: str | None = None
    v2_controllers: frozenset[str] = frozenset()


def detect(
    root: str = DEFAULT_ROOT,
    mountinfo: str = DEFAULT_MOUNTINFO,
    *,
    syscalls: Syscalls | None = None,
) -> Layout:
    """Learn the cgroup layout under ``root`` from the mount table.

    The mount table (``/proc/self/mountinfo``) names every cgroup/cgroup2 mount and the
    controllers of each; when it cannot be read, the filesystem magic numbers of ``root``
    and its subdirectories (statfs) are used instead.
    """
    sc = syscalls or _SYSCALLS
    root = os.path.normpath(root)
    try:
        text = sc.read(mountinfo)
    except OSError:
        mounts = _mounts_from_statfs(root, sc)
    else:
        mounts = _parse_mountinfo(text)

    # A later mount on the same point hides the earlier one.
    by_point: dict[str, tuple[str, list[str]]] = {}
    for point, fstype, options in mounts:
        by_point[point] = (fstype, options)
    v1: dict[str, str] = {}
    v2: str | None = None
    for point, (fstype, options) in by_point.items():
        if not _within(point, root):
            continue
        if fstype == "cgroup2":
            if v2 is None or point == root:
                v2 = point
        elif fstype == "cgroup":
            for controller in _v1_controllers(options):
                v1.setdefault(controller, point)
    if v2 == root:
        mode, v1 = "v2", {}
    elif v1:
        mode = "hybrid" if v2 else "v1"
    elif v2:
        mode = "v2"
    else:
        raise RuntimeFailure("detect cgroups", errno.ENOENT,
                             f"no cgroup filesystem is mounted under {root}")
    controllers: frozenset[str] = frozenset()
    if v2 is not None:
        try:
            controllers = frozenset(sc.read(v2 + "/cgroup.controllers").split())
        except OSError:
            pass
    return Layout(mode=mode, root=root, v1=v1, v2=v2, v2_controllers=controllers)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _parse_mountinfo(text: str) -> list[tuple[str, str, list[str]]]:
    """(mount point, fstype, super options) of each line of a mountinfo file."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        try:
            dash = fields.index("-")
        except ValueError:
            continue
        if len(fields) < dash + 3 or dash < 5:
            continue
        point = _unescape(fields[4])
        fstype = fields[dash + 1]
        options = fields[dash + 3].split(",") if len(fields) > dash + 3 else []
        mounts.append((point, fstype, options))
    return mounts


def _v1_controllers(options: Iterable[str]) -> list[str]:
    return [o for o in options if o in _KNOWN_V1 or o.startswith("name=")]


def _mounts_from_statfs(root: str, sc: Syscalls) -> list[tuple[str, str, list[str]]]:
    magic = sc.statfs_magic(root)
    if magic == CGROUP2_SUPER_MAGIC:
        return [(root, "cgroup2", [])]
    mounts = []
    seen = set()
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        real = os.path.realpath(path)
        if real in seen or not os.path.isdir(real):
            continue
        seen.add(real)
        magic = sc.statfs_magic(real)
        if magic == CGROUP2_SUPER_MAGIC:
            mounts.append((real, "cgroup2", []))
        elif magic == CGROUP_SUPER_MAGIC:
            base = os.path.basename(real)
            options = [c for c in base.split(",") if c in _KNOWN_V1]
            if not options:
                options = [f"name={base}"]
            mounts.append((real, "cgroup", options))
    return mounts


_libc = None


def _statfs_magic(path: str) -> int | None:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(256)  # larger than struct statfs on every ABI
        if _libc.statfs(os.fsencode(path), buf) != 0:
            return None
    except (OSError, AttributeError):
        return None
    word = ctypes.c_ulong.from_buffer(buf).value
    if sys.byteorder == "big" and word > 0xFFFFFFFF:  # a 32-bit f_type (s390x)
        word >>= 32
    return word & 0xFFFFFFFF


# --------------------------------------------------------------------------- the cgroup


@attrs.frozen
class Stats:
    """Usage of one cgroup; a field is None when the host does not account it."""

    memory_usage: int | None = None
    memory_max_usage: int | None = None
    memory_limit: int | None = None
    cpu_usage_ns: int | None = None
    pids_current: int | None = None
    oom_kills: int | None = None


_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,254}$")


def _check_name(name: str, what: str = "cgroup name") -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(
            f"{what} {name!r} must be 1-255 letters, digits or _.:@+- and not start with . or -")


def _unique(dirs: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(dirs))


class Cgroup:
    """One container's cgroup: a directory in each hierarchy (see ``paths``)."""

    def __init__(self, name: str, paths: Mapping[str, str], mode: str,
                 syscalls: Syscalls | None = None) -> None:
        self.name = name
        #: controller (v1 names, "name=systemd", or "unified") -> directory
        self.paths: dict[str, str] = dict(paths)
        self.mode = mode
        self._sc = syscalls or _SYSCALLS
        self._backend = _V2 if mode == "v2" else _V1

    def __repr__(self) -> str:
        return f"<Cgroup {self.name!r} {self.mode} {self.dirs()}>"

    @property
    def v2_path(self) -> str | None:
        """Directory in the v2 tree (CLONE_INTO_CGROUP target); None on pure v1 hosts."""
        return self.paths.get(UNIFIED)

    def dirs(self) -> list[str]:
        """Every directory of this cgroup, one per hierarchy."""
        return _unique(self.paths.values())

    def procs_files(self, *, include_v2: bool = True) -> list[str]:
        """The cgroup.procs files a process writes "0" into to join, one per hierarchy.

        ``include_v2=False`` leaves out the v2 one, for a child placed with CLONE_INTO_CGROUP.
        """
        v2 = self.v2_path
        return [d + "/cgroup.procs" for d in self.dirs() if include_v2 or d != v2]

    def join_files(self, *, include_v2: bool = True) -> list[str]:
        """The files a single-threaded process writes "0" into to join, one per
        hierarchy: ``tasks`` in v1 ones, cgroup.procs in the v2 one.

        Moving a process through cgroup.procs takes the kernel's threadgroup
        lock for writing, which waits for an RCU grace period: 5-15 ms when
        nothing else moved one lately.  A thread moving itself through
        ``tasks`` needs no such lock, and a process of one thread moves whole.
        (v2 refuses ``cgroup.threads`` outside threaded subtrees; there the
        child is born in its cgroup instead, CLONE_INTO_CGROUP.)
        """
        v2 = self.v2_path
        return [d + ("/cgroup.procs" if d == v2 else "/tasks")
                for d in self.dirs() if include_v2 or d != v2]

    def exists(self) -> bool:
        return any(self._sc.exists(d) for d in self.dirs())

    def update(self, resources: Resources) -> None:
        """Write these resources; fields left None are not touched."""
        self._backend.check(self, resources.needs())
        self._backend.apply(self, resources)

    def pids(self) -> list[int]:
        """Processes in this cgroup or any cgroup below it, in every hierarchy."""
        found: set[int] = set()
        for top in self.dirs():
            for d in self._tree(top):
                try:
                    text = self._sc.read(d + "/cgroup.procs")
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _fail("cgroup read cgroup.procs", exc, d) from None
                found.update(int(p) for p in text.split())
        return sorted(found)

    def stats(self) -> Stats:
        return self._backend.stats(self)

    # freezer ---------------------------------------------------------------

    def freeze(self, timeout: float = 5.0) -> None:
        """Stop every process and wait until the kernel reports them frozen."""
        self._set_frozen(True, timeout)

    def thaw(self, timeout: float = 5.0) -> None:
        self._set_frozen(False, timeout)

    @property
    def frozen(self) -> bool:
        freezer = self.paths.get("freezer")
        if freezer:
            return self._read(freezer, "freezer.state").strip() == "FROZEN"
        if self.v2_path:
            return _events(self._read(self.v2_path, "cgroup.events")).get("frozen") == "1"
        return False

    def _set_frozen(self, frozen: bool, timeout: float) -> None:
        freezer = self.paths.get("freezer")
        if freezer:
            target = "FROZEN" if frozen else "THAWED"
            path, value = freezer + "/freezer.state", target
            settled = lambda: self._sc.read(path).strip() == target  # noqa: E731
        elif self.v2_path and self._sc.exists(self.v2_path + "/cgroup.freeze"):
            path, value = self.v2_path + "/cgroup.freeze", "1" if frozen else "0"
            events = self.v2_path + "/cgroup.events"
            settled = lambda: _events(self._sc.read(events)).get("frozen") == value  # noqa: E731
        else:
            raise RuntimeFailure("cgroup freeze", errno.EOPNOTSUPP,
                                 f"no freezer for cgroup {self.name!r}")
        step = "cgroup freeze" if frozen else "cgroup thaw"
        deadline = time.monotonic() + timeout
        delay = 0.0005
        writes = 0
        try:
            while True:
                if writes == 0 or (freezer and writes % 8 == 0):
                    # v1 can stall in FREEZING; writing again makes it retry, as runc does.
                    self._sc.write(path, value)
                writes += 1
                if settled():
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.01)
        except OSError as exc:
            raise _fail(step, exc, path) from None
        if frozen:  # do not leave it half frozen
            try:
                self._sc.write(path, "THAWED" if freezer else "0")
            except OSError:
                pass
        raise RuntimeFailure(step, errno.ETIMEDOUT, f"{path} did not settle within {timeout}s")

    # ending ------------------------------------------------------------------

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL every process of the cgroup and wait until none is left.

        Uses cgroup.kill where the kernel has it (v2, 5.14+; also the tracking cgroup on
        hybrid hosts), then, for anything left, freezes, signals every listed pid and thaws,
        repeatedly, until the cgroup is empty or ``timeout`` passes.
        """
        v2 = self.v2_path
        if v2 and self._sc.exists(v2 + "/cgroup.kill"):
            try:
                self._sc.write(v2 + "/cgroup.kill", "1")
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _fail("cgroup kill", exc, v2) from None
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            pids = self.pids()
            if not pids:
                return
            if time.monotonic() > deadline:
                raise RuntimeFailure("cgroup kill", errno.EBUSY,
                                     f"processes {pids} of {self.name!r} survived SIGKILL")
            # Freezing first stops a forking process from outrunning the signals.
            frozen = False
            try:
                self._set_frozen(True, 0.2)
                frozen = True
            except RuntimeFailure:
                pass
            for pid in pids:
                try:
                    self._sc.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if frozen:
                try:
                    self._set_frozen(False, 1.0)
                except RuntimeFailure:
                    pass
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def remove(self, timeout: float = 2.0) -> None:
        """Kill what is left and remove every directory (and nested cgroups).  Idempotent."""
        if self.pids():
            self.kill()
        deadline = time.monotonic() + timeout
        for top in reversed(self.dirs()):
            for d in reversed(self._tree(top)):  # children before parents
                _rmdir(self._sc, d, deadline)

    def _tree(self, top: str) -> list[str]:
        """``top`` and every cgroup below it, parents first."""
        if not self._sc.exists(top):
            return []
        out = [top]
        for d in out:
            out.extend(d + "/" + sub for sub in self._sc.subdirs(d))
        return out

    def _read(self, d: str, file: str) -> str:
        try:
            return self._sc.read(d + "/" + file)
        except OSError as exc:
            raise _fail(f"cgroup read {file}", exc, d) from None


def _rmdir(sc: Syscalls, d: str, deadline: float) -> None:
    delay = 0.001
    while True:
        try:
            sc.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            # A process that was just killed may still be leaving the cgroup.
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise _fail("cgroup rmdir", exc, d) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _events(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        out[key] = value.strip()
    return out


def _int_or_none(sc: Syscalls, path: str) -> int | None:
    try:
        text = sc.read(path).strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _field(sc: Syscalls, path: str, key: str) -> int | None:
    try:
        text = sc.read(path)
    except OSError:
        return None
    value = _events(text).get(key)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _write(sc: Syscalls, d: str, file: str, value: object) -> None:
    try:
        sc.write(d + "/" + file, str(value))
    except OSError as exc:
        raise _fail(f"cgroup write {file}", exc, d, f"writing {str(value)!r}") from None


def _missing(controller: str, name: str, where: str) -> RuntimeFailure:
    return RuntimeFailure(f"cgroup {controller}", errno.EOPNOTSUPP,
                          f"the {controller} controller is not available for {name!r} ({where})")


# --------------------------------------------------------------------------- backends


class _V1:
    """Legacy hierarchies: one directory per controller."""

    @staticmethod
    def check(cg: Cgroup, needed: Iterable[str]) -> None:
        for controller in needed:
            if controller not in cg.paths:
                raise _missing(controller, cg.name, "no v1 hierarchy mounted")

    @staticmethod
    def init(cg: Cgroup, resources: Resources) -> None:
        cpuset = cg.paths.get("cpuset")
        if cpuset:
            parent = os.path.dirname(cpuset)
            if resources.cpuset_cpus is None:
                _copy_cpuset(cg._sc, parent, cpuset, "cpuset.cpus")
            if resources.cpuset_mems is None:
                _copy_cpuset(cg._sc, parent, cpuset, "cpuset.mems")

    @staticmethod
    def apply(cg: Cgroup, r: Resources) -> None:
        sc, p = cg._sc, cg.paths
        mem = p.get("memory")
        if mem:
            _v1_memory(sc, mem, r)
            if r.memory_reservation is not None:
                _write(sc, mem, "memory.soft_limit_in_bytes",
                       r.memory_reservation if r.memory_reservation > 0 else -1)
        cpu = p.get("cpu")
        if cpu:
            if r.cpu_shares is not None:
                _write(sc, cpu, "cpu.shares", r.cpu_shares)
            _v1_cpu_bandwidth(sc, cpu, r)
        if r.pids_limit is not None:
            _write(sc, p["pids"], "pids.max", r.pids_limit if r.pids_limit > 0 else "max")
        if r.cpuset_cpus is not None:
            _write(sc, p["cpuset"], "cpuset.cpus", r.cpuset_cpus)
        if r.cpuset_mems is not None:
            _write(sc, p["cpuset"], "cpuset.mems", r.cpuset_mems)

    @staticmethod
    def stats(cg: Cgroup) -> Stats:
        sc, p = cg._sc, cg.paths
        mem, cpuacct, pids = p.get("memory"), p.get("cpuacct"), p.get("pids")
        limit = _int_or_none(sc, mem + "/memory.limit_in_bytes") if mem else None
        return Stats(
            memory_usage=_int_or_none(sc, mem + "/memory.usage_in_bytes") if mem else None,
            memory_max_usage=_int_or_none(sc, mem + "/memory.max_usage_in_bytes") if mem else None,
            memory_limit=None if limit is None or limit >= _UNLIMITED_V1 else limit,
            cpu_usage_ns=_int_or_none(sc, cpuacct + "/cpuacct.usage") if cpuacct else None,
            pids_current=_int_or_none(sc, pids + "/pids.current") if pids else None,
            oom_kills=_field(sc, mem + "/memory.oom_control", "oom_kill") if mem else None,
        )


def _copy_cpuset(sc: Syscalls, source: str, target: str, file: str) -> None:
    """Give ``target`` its parent's value when empty: v1 cpuset refuses tasks otherwise."""
    try:
        if sc.read(target + "/" + file).strip():
            return
        value = sc.read(source + "/" + file).strip()
    except OSError as exc:
        raise _fail(f"cgroup read {file}", exc, target) from None
    _write(sc, target, file, value)


def _v1_memory(sc: Syscalls, mem: str, r: Resources) -> None:
    memory, swap = r.memory, r.memory_swap
    memsw = "memory.memsw.limit_in_bytes"
    has_memsw = swap is not None and sc.exists(mem + "/" + memsw)
    if memory is not None and has_memsw:
        # The kernel keeps limit <= memsw.limit at every step: order the two writes
        # so that the intermediate state is valid (runc's rule).
        current = _int_or_none(sc, mem + "/memory.limit_in_bytes")
        if swap == -1 or (current is not None and current < swap):
            _write(sc, mem, memsw, swap)
            _write(sc, mem, "memory.limit_in_bytes", memory)
        else:
            _write(sc, mem, "memory.limit_in_bytes", memory)
            _write(sc, mem, memsw, swap)
    elif memory is not None:
        _write(sc, mem, "memory.limit_in_bytes", memory)


def _v1_cpu_bandwidth(sc: Syscalls, cpu: str, r: Resources) -> None:
    period = r.cpu_period
    if period is None and r.cpu_quota is not None and r.cpu_quota != -1:
        period = CPU_PERIOD_DEFAULT
    pending = None
    if period is not None:
        try:
            sc.write(cpu + "/cpu.cfs_period_us", str(period))
        except OSError as exc:
            # A shorter period can be refused (EINVAL) until the new quota is in place;
            # retry after writing the quota, as runc does.
            if exc.errno != errno.EINVAL or r.cpu_quota is None:
                raise _fail("cgroup write cpu.cfs_period_us", exc, cpu, f"writing {period}") from None
            pending = period
    if r.cpu_quota is not None:
        _write(sc, cpu, "cpu.cfs_quota_us", r.cpu_quota)
        if pending is not None:
            _write(sc, cpu, "cpu.cfs_period_us", pending)


class _V2:
    """The unified hierarchy: one directory, controllers enabled by the parent."""

    @staticmethod
    def check(cg: Cgroup, needed: Iterable[str]) -> None:
        d = cg.v2_path
        if d is None:
            raise _missing(next(iter(needed), "cgroup2"), cg.name, "no cgroup2 mount")
        needed = set(needed)
        if not needed:
            return
        try:
            enabled = set(cg._sc.read(d + "/cgroup.controllers").split())
        except OSError as exc:
            raise _fail("cgroup read cgroup.controllers", exc, d) from None
        for controller in sorted(needed - enabled):
            raise _missing(controller, cg.name, f"not in {d}/cgroup.controllers")

    @staticmethod
    def init(cg: Cgroup, resources: Resources) -> None:
        pass  # v2 cpuset: an empty cpuset.cpus means "the parent's", tasks are accepted

    @staticmethod
    def apply(cg: Cgroup, r: Resources) -> None:
        sc, d = cg._sc, cg.v2_path
        assert d is not None
        if r.memory is not None:
            _write(sc, d, "memory.max", "max" if r.memory == -1 else r.memory)
        if r.memory_swap is not None and sc.exists(d + "/memory.swap.max"):
            # v2 limits swap alone; Docker's memory_swap counts memory plus swap.
            swap = "max" if r.memory_swap == -1 else r.memory_swap - (r.memory or 0)
            _write(sc, d, "memory.swap.max", swap)
        if r.memory_reservation is not None:
            _write(sc, d, "memory.low", max(r.memory_reservation, 0))
        if r.cpu_weight is not None:
            _write(sc, d, "cpu.weight", r.cpu_weight)
        if r.cpu_quota is not None or r.cpu_period is not None:
            quota: object = r.cpu_quota
            if quota is None:  # a period alone keeps the current quota
                quota = _read_text(sc, d, "cpu.max").split()[0]
            elif quota == -1:
                quota = "max"
            _write(sc, d, "cpu.max", f"{quota} {r.cpu_period or CPU_PERIOD_DEFAULT}")
        if r.pids_limit is not None:
            _write(sc, d, "pids.max", r.pids_limit if r.pids_limit > 0 else "max")
        if r.cpuset_cpus is not None:
            _write(sc, d, "cpuset.cpus", r.cpuset_cpus)
        if r.cpuset_mems is not None:
            _write(sc, d, "cpuset.mems", r.cpuset_mems)

    @staticmethod
    def stats(cg: Cgroup) -> Stats:
        sc, d = cg._sc, cg.v2_path
        assert d is not None
        usec = _field(sc, d + "/cpu.stat", "usage_usec")
        return Stats(
            memory_usage=_int_or_none(sc, d + "/memory.current"),
            memory_max_usage=_int_or_none(sc, d + "/memory.peak"),
            memory_limit=_int_or_none(sc, d + "/memory.max"),
            cpu_usage_ns=None if usec is None else usec * 1000,
            pids_current=_int_or_none(sc, d + "/pids.current"),
            oom_kills=_field(sc, d + "/memory.events", "oom_kill"),
        )


def _read_text(sc: Syscalls, d: str, file: str) -> str:
    try:
        return sc.read(d + "/" + file)
    except OSError as exc:
        raise _fail(f"cgroup read {file}", exc, d) from None


# --------------------------------------------------------------------------- the manager


class CgroupManager:
    """Creates and finds container cgroups under one parent (``contain`` by default).

    ``CgroupManager.for_host()`` detects the host's layout; ``CgroupManager(layout)``
    takes one, e.g. a fake tree's in tests.  The parent may be nested ("a/b"); its name
    comes from ``parent=``, else ``$CONTAIN_CGROUP_PARENT``, else ``contain``.
    """

    def __init__(
        self,
        layout: Layout,
        parent: str | None = None,
        *,
        systemd: bool = True,
        track_unified: bool = True,
        syscalls: Syscalls | None = None,
        pass_controllers: bool = True,
    ) -> None:
        parent = parent or os.environ.get(PARENT_ENV) or DEFAULT_PARENT
        segments = parent.strip("/").split("/")
        for segment in segments:
            _check_name(segment, "cgroup parent segment")
        self.layout = layout
        self.parent = "/".join(segments)
        self._segments = segments
        self._sc = syscalls or _SYSCALLS
        # v2: enable controllers for the parents' children (False: the top
        # holds processes, where the kernel refuses it with EBUSY).
        self._pass_controllers = pass_controllers
        # Hierarchy key -> mount point, for every hierarchy a container gets a directory in.
        self._mounts: dict[str, str] = {}
        if layout.mode == "v2":
            assert layout.v2 is not None
            self._mounts[UNIFIED] = layout.v2
        else:
            for controller in V1_CONTROLLERS:
                if controller in layout.v1:
                    self._mounts[controller] = layout.v1[controller]
            if systemd and SYSTEMD in layout.v1:
                self._mounts[SYSTEMD] = layout.v1[SYSTEMD]
            # Tracking is a convenience: skip it where the v2 tree is read-only (a
            # container's /sys/fs/cgroup) rather than failing every create.
            if (track_unified and layout.mode == "hybrid" and layout.v2
                    and os.access(layout.v2, os.W_OK)):
                self._mounts[UNIFIED] = layout.v2

    @classmethod
    def for_host(
        cls,
        parent: str | None = None,
        *,
        root: str = DEFAULT_ROOT,
        mountinfo: str = DEFAULT_MOUNTINFO,
        syscalls: Syscalls | None = None,
        **options: bool,
    ) -> "CgroupManager":
        return cls(detect(root, mountinfo, syscalls=syscalls), parent,
                   syscalls=syscalls, **options)

    @property
    def mode(self) -> str:
        return self.layout.mode

    def parent_dirs(self) -> list[str]:
        return _unique(m + "/" + self.parent for m in self._mounts.values())

    def paths(self, name: str) -> dict[str, str]:
        """Where cgroup ``name`` lives in each hierarchy (pure computation)."""
        _check_name(name)
        return {key: f"{mount}/{self.parent}/{name}" for key, mount in self._mounts.items()}

    def create(self, name: str, resources: Resources | None = None) -> Cgroup:
        """Make cgroup ``name`` with ``resources`` applied; on failure nothing of it is left.

        The parent directories are created when missing and kept (they are shared).
        Raises Conflict when the cgroup exists already.
        """
        resources = resources or Resources()
        paths = self.paths(name)
        if self.mode != "v2" and "cpuset" in paths and not (resources.cpuset_cpus or resources.cpuset_mems):
            # Joining a v1 cpuset is slow (milliseconds: the kernel rebuilds
            # scheduler state), and without cpuset limits it changes nothing.
            del paths["cpuset"]
        cg = Cgroup(name, paths, self.mode, self._sc)
        self._precheck(cg, resources.needs())
        # On v1 the shared parents are made (and checked) only when a mkdir
        # says one is missing: nothing else changes them, and checking them
        # costs a start a dozen system calls.  On v2 their controllers are
        # checked every time (the parent's subtree_control is shared).
        parents_checked = self.mode == "v2"
        if parents_checked:
            self._ensure_parent()
        created: list[str] = []
        try:
            for d in cg.dirs():
                parents_checked = self._mkdir(d, name, parents_checked)
                created.append(d)
            cg._backend.init(cg, resources)
            cg.update(resources)
        except BaseException:
            for d in reversed(created):
                try:
                    self._sc.rmdir(d)
                except OSError:
                    pass
            raise
        return cg

    def deferred(self, name: str, resources: Resources | None = None) -> Cgroup | None:
        """Cgroup ``name`` as `create` would make it, but not made: for the
        native start to make while the child builds its root (see
        runtime.CgroupPlan).  Only v1 directories with nothing to write into
        them but device rules qualify; None otherwise (v2 and a hybrid
        host's v2 tracking: the child is born in that directory, clone3;
        resources: their writes read what is there and order themselves)."""
        if self.mode == "v2" or (resources is not None and resources != Resources()):
            return None
        paths = self.paths(name)
        if UNIFIED in paths:
            return None
        paths.pop("cpuset", None)  # as in create: no cpuset limit, no cpuset cgroup
        return Cgroup(name, paths, self.mode, self._sc)

    def open(self, name: str) -> Cgroup:
        """The existing cgroup ``name`` (as far as it exists); NotFound when none."""
        paths = {k: d for k, d in self.paths(name).items() if self._sc.exists(d)}
        if not paths:
            raise NotFound(f"no cgroup {name!r} under {self.parent!r}")
        return Cgroup(name, paths, self.mode, self._sc)

    def leftovers(self) -> list[str]:
        """Names of the cgroups under the parent in any hierarchy (repair after a crash)."""
        names: set[str] = set()
        for d in self.parent_dirs():
            names.update(self._sc.subdirs(d))
        return sorted(names)

    def remove_parent(self) -> None:
        """Remove the parent's last segment everywhere; Conflict while cgroups remain."""
        left = self.leftovers()
        if left:
            raise Conflict(f"cgroup parent {self.parent!r} still holds {left}")
        deadline = time.monotonic() + 2.0
        for d in self.parent_dirs():
            _rmdir(self._sc, d, deadline)

    # -------------------------------------------------------------------------

    def _precheck(self, cg: Cgroup, needed: frozenset[str]) -> None:
        """Fail before any mkdir when a needed controller is absent from the host."""
        if self.mode == "v2":
            for controller in sorted(needed - self.layout.v2_controllers):
                raise _missing(controller, cg.name, f"not in {self.layout.v2}/cgroup.controllers")
        else:
            cg._backend.check(cg, needed)

    def _mkdir(self, d: str, name: str, parents_checked: bool) -> bool:
        """Make one directory of cgroup `name`, the shared parents too if one
        is missing and they were not checked yet; returns whether they are."""
        try:
            self._sc.mkdir(d)
            return parents_checked
        except FileExistsError:
            raise Conflict(f"cgroup {name!r} exists already ({d})") from None
        except FileNotFoundError as exc:
            if parents_checked:
                raise _fail("cgroup mkdir", exc, d) from None
        except OSError as exc:
            raise _fail("cgroup mkdir", exc, d) from None
        self._ensure_parent()
        return self._mkdir(d, name, True)

    def _ensure_parent(self) -> None:
        for key, mount in self._mounts.items():
            v2_controllers = key == UNIFIED and self.mode == "v2" and self._pass_controllers
            d = mount
            for segment in self._segments:
                if v2_controllers:
                    self._enable_controllers(d)
                parent, d = d, d + "/" + segment
                if not self._sc.exists(d):
                    try:
                        self._sc.mkdir(d)
                    except FileExistsError:
                        pass  # another process was quicker
                    except OSError as exc:
                        raise _fail("cgroup mkdir", exc, d) from None
                if key == "cpuset":
                    _copy_cpuset(self._sc, parent, d, "cpuset.cpus")
                    _copy_cpuset(self._sc, parent, d, "cpuset.mems")
            if v2_controllers:
                self._enable_controllers(d)

    def _enable_controllers(self, d: str) -> None:
        """Enable our controllers for ``d``'s children, writing only what is missing."""
        try:
            available = set(self._sc.read(d + "/cgroup.controllers").split())
            enabled = set(self._sc.read(d + "/cgroup.subtree_control").split())
        except OSError as exc:
            raise _fail("cgroup read cgroup.subtree_control", exc, d) from None
        wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if wanted:
            _write(self._sc, d, "cgroup.subtree_control", " ".join("+" + c for c in wanted))


__all__ = [
    "CGROUP2_SUPER_MAGIC",
    "CGROUP_SUPER_MAGIC",
    "Cgroup",
    "CgroupManager",
    "Layout",
    "Resources",
    "Stats",
    "Syscalls",
    "detect",
    "parse_size",
]
