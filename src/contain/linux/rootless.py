"""Policy for an ordinary (rootless) user: detection, id mappings, where
runtime files live, cgroup delegation, and the spec adjustments a user
namespace needs.

Nothing here is a second runtime: the spec still goes through the one
native spawn path (`runtime.spawn`), which creates the user namespace when
the spec carries uid/gid mappings and, for a rootless caller, has Debian's
setuid helpers newuidmap/newgidmap write the maps (see docs/rootless.md).

Every function reading the host takes its paths as arguments, so tests run
on a temporary tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from typing import Iterable, Optional, Sequence

import attrs

from ..errors import InvalidArgument, NotFound, RuntimeFailure
from .spec import IDMapping, Mount, Spec

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
# Docker's (and podman's) expectation: a container needs 65536 ids to hold
# the usual images (nobody is 65534).
FULL_RANGE = 65536
PID_PLACEHOLDER = "{pid}"


def is_rootless() -> bool:
    """True when the caller is an ordinary user (no root on the host)."""
    return os.geteuid() != 0


@attrs.frozen
class IdRange:
    start: int
    count: int


def free_subid_start(size: int = 65536, paths: tuple[str, str] = (SUBUID, SUBGID)) -> int:
    """The start of a range of `size` subordinate ids (from 1,000,000 on)
    that no entry of /etc/subuid or /etc/subgid overlaps: for an
    administrator giving a new user its range (the rootless tests and
    benchmark do)."""
    used = []
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    parts = line.strip().split(":")
                    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                        used.append((int(parts[1]), int(parts[1]) + int(parts[2])))
        except FileNotFoundError:
            pass
    start = 1_000_000
    while any(a < start + size and start < b for a, b in used):
        start += size
    return start


def read_subids(path: str, user: str, uid: int) -> list[IdRange]:
    """The subordinate ranges of `user` (listed by name or by numeric uid)
    in /etc/subuid or /etc/subgid; [] when the file or the entry is missing."""
    ranges: list[IdRange] = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return ranges
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            continue
        owner, start, count = parts
        if owner != user and owner != str(uid):
            continue
        try:
            r = IdRange(int(start), int(count))
        except ValueError:
            continue
        if r.count > 0 and r not in ranges:
            ranges.append(r)
    return ranges


def find_helper(name: str, search: Sequence[str] = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")) -> Optional[str]:
    """Where newuidmap/newgidmap is, or None.  Only system directories: a
    setuid helper found through the caller's PATH could be anything."""
    for d in search:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@attrs.frozen
class IdMaps:
    """The user namespace of a rootless container."""

    uid_mappings: list[IDMapping]
    gid_mappings: list[IDMapping]
    # argv for runtime.spawn's map helpers ("{pid}" is the child); None:
    # the maps are written directly (a single-id mapping needs no helper).
    uidmap_helper: Optional[list[str]]
    gidmap_helper: Optional[list[str]]
    user: str
    uid: int
    gid: int

    @property
    def single(self) -> bool:
        """Only the user's own id is mapped (to 0): no subordinate range."""
        return len(self.uid_mappings) == 1 and len(self.gid_mappings) == 1

    def uid_count(self) -> int:
        return sum(m.size for m in self.uid_mappings)

    def gid_count(self) -> int:
        return sum(m.size for m in self.gid_mappings)

    def host_uid(self, container_uid: int) -> Optional[int]:
        return _to_host(self.uid_mappings, container_uid)

    def host_gid(self, container_gid: int) -> Optional[int]:
        return _to_host(self.gid_mappings, container_gid)

    def container_uid(self, host_uid: int) -> Optional[int]:
        """The id a host uid has inside (None: not mapped, the kernel shows 65534)."""
        return _to_container(self.uid_mappings, host_uid)

    def container_gid(self, host_gid: int) -> Optional[int]:
        return _to_container(self.gid_mappings, host_gid)

    def check_ids(self, uids: Iterable[int], gids: Iterable[int], what: str = "the image") -> None:
        """InvalidArgument naming the missing range when an id is not mapped."""
        bad_u = sorted({u for u in uids if self.host_uid(u) is None})
        bad_g = sorted({g for g in gids if self.host_gid(g) is None})
        if not bad_u and not bad_g:
            return
        missing = []
        if bad_u:
            missing.append(f"uids {_few(bad_u)} need a range for {self.user} in {SUBUID}")
        if bad_g:
            missing.append(f"gids {_few(bad_g)} need a range for {self.user} in {SUBGID}")
        raise InvalidArgument(
            f"{what} has files or a user outside the ids that user {self.user} may map "
            f"({'; '.join(missing)}); an administrator can add one with "
            f"`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {self.user}`")

    def unshare_argv(self, unshare: str = "unshare") -> list[str]:
        """`unshare` (util-linux >= 2.38) options entering a user namespace
        with the same mapping, for helpers that must run inside one (the
        layer store's: see storage/userns.py)."""
        argv = [unshare, "--user", "--map-user=0", "--map-group=0"]
        for m in self.uid_mappings[1:]:
            argv.append(f"--map-users={m.host_id},{m.container_id},{m.size}")
        for m in self.gid_mappings[1:]:
            argv.append(f"--map-groups={m.host_id},{m.container_id},{m.size}")
        return argv


def _few(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:5])
    return shown + (f" (and {len(ids) - 5} more)" if len(ids) > 5 else "")


def _to_host(mappings: Sequence[IDMapping], cid: int) -> Optional[int]:
    for m in mappings:
        if m.container_id <= cid < m.container_id + m.size:
            return m.host_id + cid - m.container_id
    return None


def _to_container(mappings: Sequence[IDMapping], hid: int) -> Optional[int]:
    for m in mappings:
        if m.host_id <= hid < m.host_id + m.size:
            return m.container_id + hid - m.host_id
    return None


def _mappings(own: int, ranges: Sequence[IdRange]) -> list[IDMapping]:
    """Container 0 -> the caller's own id; 1.. -> the subordinate ranges,
    in the order the file lists them (as podman does)."""
    maps = [IDMapping(0, own, 1)]
    next_id = 1
    for r in ranges:
        maps.append(IDMapping(next_id, r.start, r.count))
        next_id += r.count
    return maps


def id_maps(*, uid: Optional[int] = None, gid: Optional[int] = None, user: Optional[str] = None,
            subuid: str = SUBUID, subgid: str = SUBGID,
            newuidmap: Optional[str] = None, newgidmap: Optional[str] = None) -> IdMaps:
    """The mapping for the calling user: 0 -> the user, 1..N -> /etc/subuid
    and /etc/subgid ranges (through newuidmap/newgidmap), or the single id
    when there is no range (or no helper)."""
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    if user is None:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
    sub_u = read_subids(subuid, user, uid)
    sub_g = read_subids(subgid, user, uid)
    newuidmap = newuidmap or find_helper("newuidmap")
    newgidmap = newgidmap or find_helper("newgidmap")
    uid_maps = _mappings(uid, sub_u if newuidmap else [])
    gid_maps = _mappings(gid, sub_g if newgidmap else [])

    def helper(path: Optional[str], maps: list[IDMapping]) -> Optional[list[str]]:
        if path is None or len(maps) == 1:
            return None
        argv = [path, PID_PLACEHOLDER]
        for m in maps:
            argv += [str(m.container_id), str(m.host_id), str(m.size)]
        return argv

    return IdMaps(uid_maps, gid_maps, helper(newuidmap, uid_maps), helper(newgidmap, gid_maps),
                  user, uid, gid)


def runtime_dir(uid: Optional[int] = None, environ: Optional[dict] = None, tmp: str = "/tmp") -> str:
    """$XDG_RUNTIME_DIR/contain, or a private /tmp/contain-<uid> (mode 0700,
    owned by the user: refused when someone else made it first)."""
    env = os.environ if environ is None else environ
    uid = os.getuid() if uid is None else uid
    base = env.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        path = os.path.join(base, "contain")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path
    path = os.path.join(tmp, f"contain-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    import stat as _stat

    if not _stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise RuntimeFailure("runtime directory", 0,
                             f"{path} exists but is not a private directory of uid {uid}")
    return path


# ------------------------------------------------------------------ cgroups
def _own_cgroup_v2(proc_self_cgroup: str) -> Optional[str]:
    try:
        with open(proc_self_cgroup) as f:
            for line in f:
                hid, _controllers, path = line.rstrip("\n").split(":", 2)
                if hid == "0":
                    return path
    except (OSError, ValueError):
        return None
    return None


def delegated_cgroup(*, cgroup_root: str = "/sys/fs/cgroup", proc_self_cgroup: str = "/proc/self/cgroup",
                     mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """The directory of a cgroup v2 subtree delegated to the caller, or None.

    Delegated means: the caller may manage it: the directory, its
    cgroup.procs and its cgroup.subtree_control are writable by the caller.
    The parent of the caller's own cgroup comes first (systemd lays it out
    so: user@UID.service/app.slice holds the caller's scope, and only a
    cgroup without processes of its own can pass controllers on); then the
    caller's own cgroup (a subtree an administrator put the caller in).

    A subtree may offer no controllers at all (a hybrid host's v2 tree):
    containers still get a cgroup of their own there (ps, pause, kill),
    and a limit is refused naming the missing controller (check_resources).
    Moving a process needs write access to the cgroup.procs of the common
    ancestor: for the parent, that is the parent itself."""
    unified = _unified_mount(cgroup_root, mountinfo)
    if unified is None:
        return None
    own = _own_cgroup_v2(proc_self_cgroup)
    if own is None:
        return None
    path = os.path.normpath(os.path.join(unified, own.lstrip("/")))
    for candidate in (os.path.dirname(path), path):
        if not candidate.startswith(unified + "/"):
            continue
        if (os.access(candidate, os.W_OK | os.X_OK)
                and os.access(os.path.join(candidate, "cgroup.procs"), os.W_OK)
                and os.access(os.path.join(candidate, "cgroup.subtree_control"), os.W_OK)):
            return candidate
    return None


def holds_caller(delegated: str, *, cgroup_root: str = "/sys/fs/cgroup",
                 proc_self_cgroup: str = "/proc/self/cgroup", mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether the delegated subtree is the caller's own cgroup, with the
    caller in it: cgroup v2 lets only a cgroup without processes pass
    controllers on to children (the no-internal-process rule)."""
    unified = _unified_mount(cgroup_root, mountinfo)
    own = _own_cgroup_v2(proc_self_cgroup)
    return (unified is not None and own is not None
            and os.path.normpath(os.path.join(unified, own.lstrip("/"))) == os.path.normpath(delegated))


def delegated_controllers(delegated: str, *, passed_on: bool = True) -> frozenset:
    """The controllers a delegated subtree offers its children (its
    cgroup.controllers: what its parent enabled for it); none when it
    cannot pass them on (`passed_on` False: it holds the caller)."""
    if not passed_on:
        return frozenset()
    try:
        with open(os.path.join(delegated, "cgroup.controllers")) as f:
            return frozenset(f.read().split())
    except OSError:
        return frozenset()


def delegated_manager(delegated: str, *, cgroup_root: str = "/sys/fs/cgroup",
                      mountinfo: str = "/proc/self/mountinfo", proc_self_cgroup: str = "/proc/self/cgroup",
                      syscalls=None):
    """The cgroup manager of a rootless root with a delegated subtree:
    container cgroups under DELEGATED/contain (or $CONTAIN_CGROUP_PARENT),
    limits and stats through the v2 files as for root.  A subtree that is
    the caller's own cgroup gets container cgroups without controllers
    (enabling any there fails with EBUSY while the caller is in it)."""
    from .cgroups import CgroupManager, Layout

    own = holds_caller(delegated, cgroup_root=cgroup_root, proc_self_cgroup=proc_self_cgroup,
                       mountinfo=mountinfo)
    layout = Layout(mode="v2", root=_unified_mount(cgroup_root, mountinfo) or delegated,
                    v2=delegated, v2_controllers=delegated_controllers(delegated, passed_on=not own))
    return CgroupManager(layout, systemd=False, track_unified=False, syscalls=syscalls,
                         pass_controllers=not own)


def _unified_mount(cgroup_root: str, mountinfo: str) -> Optional[str]:
    """Where the cgroup2 hierarchy is mounted (the root itself on a v2 host,
    cgroup_root/unified on a hybrid one)."""
    try:
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2" and fields[4].startswith(cgroup_root):
                    return fields[4]
    except (OSError, ValueError, IndexError):
        return None
    return None


_DOCKER_NAMES = {"memory": "mem_limit", "memory_swap": "memswap_limit",
                 "memory_reservation": "mem_reservation", "cpu_quota": "cpus/cpu_quota",
                 "cpu_period": "cpu_period", "cpu_shares": "cpu_shares", "pids_limit": "pids_limit",
                 "cpuset_cpus": "cpuset_cpus", "cpuset_mems": "cpuset_mems"}
_CONTROLLER_OF = {"memory": "memory", "memory_swap": "memory", "memory_reservation": "memory",
                  "cpu_quota": "cpu", "cpu_period": "cpu", "cpu_shares": "cpu", "pids_limit": "pids",
                  "cpuset_cpus": "cpuset", "cpuset_mems": "cpuset"}


def check_resources(resources, *, delegated: Optional[str], user: Optional[str] = None) -> None:
    """Asking for a limit without a delegated subtree, or one the subtree
    has no controller for, is an error, never a silent no-op.  `resources`
    is a linux.cgroups.Resources (or anything with those attributes); only
    attributes that are set count."""
    fields = attrs.asdict(resources) if attrs.has(type(resources)) else dict(resources)
    set_fields = {name for name, value in fields.items() if value not in (None, 0, -1, "", [], {}, ())}
    if not set_fields:
        return
    if delegated is not None:
        own = holds_caller(delegated)
        offered = delegated_controllers(delegated, passed_on=not own)
        lacking: dict[str, set] = {}
        for name in set_fields:
            controller = _CONTROLLER_OF.get(name)
            if controller is not None and controller not in offered:
                lacking.setdefault(controller, set()).add(_DOCKER_NAMES.get(name, name))
        if not lacking:
            return
        missing = sorted(lacking)
        asked = sorted(set().union(*lacking.values()))
        if own:
            raise InvalidArgument(
                f"the delegated cgroup v2 subtree {delegated} holds this process itself, and cgroup "
                "v2 passes controllers on only from a cgroup without processes: limits "
                f"({', '.join(asked)}) need this process started in a leaf below it "
                f"(mkdir {delegated}/leaf; echo $$ > {delegated}/leaf/cgroup.procs)")
        raise InvalidArgument(
            f"the delegated cgroup v2 subtree {delegated} offers no {', '.join(missing)} "
            f"controller{'s' if len(missing) > 1 else ''} (its cgroup.controllers: "
            f"{' '.join(sorted(offered)) or 'none'}): limits ({', '.join(asked)}) need "
            f"{'them' if len(missing) > 1 else 'it'}; have it delegated (systemd: Delegate= of "
            "user@.service), or run without these limits")
    asked = sorted({_DOCKER_NAMES.get(name, name) for name in set_fields})
    who = user or _user_name()
    raise InvalidArgument(
        f"no delegated cgroup v2 subtree for user {who}: limits ({', '.join(asked)}) "
        "need cgroup v2 delegation (a systemd user session, or a subtree an administrator "
        "delegated); run without limits, or as root")


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


class NoCgroup:
    """Stands in for a cgroup when the user has no delegated subtree: the
    container runs in the caller's cgroup; nothing to create or remove."""

    paths: dict = {}
    v2_path = None

    def procs_files(self, *, include_v2: bool = True) -> list[str]:
        return []

    def join_files(self, *, include_v2: bool = True) -> list[str]:
        return []

    def dirs(self) -> list[str]:
        return []

    def remove(self) -> None:
        pass

    def pids(self) -> list[int]:
        return []


@attrs.frozen
class _NoLayout:
    mode: str = "none"
    v1: tuple = ()
    v2: Optional[str] = None


class NoCgroupManager:
    """The cgroup manager of a rootless root without delegation: containers
    get no cgroup (they stay in the caller's), any limit is refused with the
    reason (check_resources), and nothing is ever found to remove."""

    layout = _NoLayout()

    def __init__(self, user: Optional[str] = None) -> None:
        self.user = user or _user_name()

    def create(self, name: str, resources=None) -> NoCgroup:
        if resources is not None:
            check_resources(resources, delegated=None, user=self.user)
        return NoCgroup()

    def open(self, name: str):
        raise NotFound(f"container {name} has no cgroup (rootless, no delegated cgroup v2 subtree)")


# --------------------------------------------------------------------- spec
# slirp4netns (contain.net.userspace) is the default; "bridge" means it for
# an ordinary user, as with podman.  Options follow podman's spelling:
# "slirp4netns:allow_host_loopback=true".
DEFAULT_NETWORK = "slirp4netns"
NETWORK_MODES = ("none", "host", DEFAULT_NETWORK)


def network_mode(requested: Optional[str]) -> str:
    """The network mode an ordinary user's container gets for `requested`
    (None: the default).  InvalidArgument, saying why, for what this
    backend cannot do: user-defined networks, container:<id>, pasta."""
    mode = requested or DEFAULT_NETWORK
    if mode in ("bridge", "default"):
        mode = DEFAULT_NETWORK
    base = mode.split(":", 1)[0]
    if mode in ("none", "host"):
        return mode
    if base == DEFAULT_NETWORK:
        from ..net import userspace

        userspace.parse_mode(mode)  # InvalidArgument for an unknown option
        userspace.require()  # InvalidArgument: not installed, no /dev/net/tun
        return mode
    if base == "pasta":
        raise InvalidArgument(
            "network 'pasta' is not supported: this pasta (passt 0.0~git20230309) cannot be "
            "tied to a container's lifetime; the rootless default is slirp4netns")
    if base == "container":
        raise InvalidArgument("network mode container:<id> is not supported for an ordinary user")
    raise InvalidArgument(
        f"network {mode!r}: user-defined networks are not supported for an ordinary user "
        f"(each rootless container gets its own {DEFAULT_NETWORK} network and cannot reach "
        f"another by address); use the default ({DEFAULT_NETWORK}, also called 'bridge'), "
        "network='none' or network='host', with published ports between containers")


# ------------------------------------------------------- root filesystem
DRIVER_ENV = "CONTAIN_ROOTFS_DRIVER"
DRIVERS = ("overlay", "fuse-overlayfs")
DEV_FUSE = "/dev/fuse"


@attrs.frozen
class RootfsDriver:
    """How an ordinary user's containers get their root filesystem, and why."""

    name: str  # "overlay" (the kernel's) or "fuse-overlayfs"
    reason: str
    mount_program: Optional[str] = None  # fuse-overlayfs's path


def choose_rootfs_driver(kernel_overlay: tuple[bool, str], *, forced: Optional[str],
                         fuse_program: Optional[str], dev_fuse: tuple[bool, str]) -> RootfsDriver:
    """The decision, from what was found: `kernel_overlay` is (works, why not) of a
    trial mount in a user namespace, `forced` the driver CONTAIN_ROOTFS_DRIVER
    names (or None), `fuse_program` where fuse-overlayfs is (or None) and
    `dev_fuse` (usable, why not) for /dev/fuse.  InvalidArgument, saying what
    to install or change, when no driver can work."""
    def fuse_missing() -> Optional[str]:
        if fuse_program is None:
            return "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)"
        if not dev_fuse[0]:
            return dev_fuse[1]
        return None

    if forced is not None:
        if forced not in DRIVERS:
            raise InvalidArgument(f"{DRIVER_ENV}={forced!r}: the drivers are {', '.join(DRIVERS)}")
        if forced == "overlay":
            return RootfsDriver("overlay", f"chosen by {DRIVER_ENV}")
        missing = fuse_missing()
        if missing:
            raise InvalidArgument(f"{DRIVER_ENV}=fuse-overlayfs, but {missing}")
        return RootfsDriver("fuse-overlayfs", f"chosen by {DRIVER_ENV}", fuse_program)
    works, why_not = kernel_overlay
    if works:
        return RootfsDriver("overlay", "the kernel's overlayfs mounts in a user namespace (Linux 5.11+)")
    missing = fuse_missing()
    if missing is None:
        return RootfsDriver("fuse-overlayfs",
                            f"the kernel refuses overlayfs in a user namespace ({why_not})",
                            fuse_program)
    raise InvalidArgument(
        f"no root filesystem for an ordinary user's containers: the kernel refuses overlayfs "
        f"in a user namespace ({why_not}; it needs Linux 5.11 or later), and {missing}")


_PROBE = """
import ctypes, os, sys
lower1, lower2, upper, work, target = sys.argv[1:]
libc = ctypes.CDLL(None, use_errno=True)
opts = f"lowerdir={lower1}:{lower2},upperdir={upper},workdir={work},volatile,userxattr"
if libc.mount(b"overlay", target.encode(), b"overlay", 0, opts.encode()) != 0:
    print(os.strerror(ctypes.get_errno()))
    sys.exit(1)
"""
_drivers: dict = {}


def probe_kernel_overlay(directory: str, unshare: Optional[str] = None) -> tuple[bool, str]:
    """Mount an overlay of two layers with a writable one, as a container's
    root is mounted (volatile, userxattr), in a new user namespace, on the
    filesystem of `directory`; (it worked, the kernel's answer)."""
    unshare = unshare or shutil.which("unshare") or "/usr/bin/unshare"
    if not os.path.exists(unshare):
        return False, "unshare (util-linux) is not installed to try it"
    work = tempfile.mkdtemp(prefix=".rootfs-probe-", dir=directory)
    try:
        dirs = [os.path.join(work, d) for d in ("lower1", "lower2", "upper", "work", "merged")]
        for d in dirs:
            os.mkdir(d)
        proc = subprocess.run([unshare, "--user", "--map-root-user", "--mount",
                               sys.executable, "-I", "-S", "-c", _PROBE, *dirs],
                              capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False, "a trial mount did not finish in 30 s"
    finally:
        for parent, subdirs, _ in os.walk(work):
            for d in subdirs:  # overlay leaves work/work mode 000: ours to open again
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(parent, d), 0o700)
        shutil.rmtree(work, ignore_errors=True)
    if proc.returncode == 0:
        return True, ""
    said = (proc.stdout.strip() or proc.stderr.strip() or f"exit status {proc.returncode}")
    return False, f"mount -t overlay: {said.splitlines()[-1]}"


def dev_fuse_usable(path: str = DEV_FUSE) -> tuple[bool, str]:
    if not os.path.exists(path):
        return False, f"there is no {path} (modprobe fuse)"
    if not os.access(path, os.R_OK | os.W_OK):
        return False, f"{path} is not readable and writable by this user (Debian has it 0666)"
    return True, ""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def kernel_overlay_works(directory: str) -> tuple[bool, str]:
    """probe_kernel_overlay's answer for the filesystem of `directory`,
    kept there (overlay-probe.json) until the next boot: a process that
    starts one container (the CLI) should not pay 30 ms for the trial."""
    dev = os.stat(directory).st_dev
    boot = _boot_id()
    path = os.path.join(directory, "overlay-probe.json")
    try:
        with open(path) as f:
            record = json.load(f)
        if boot and record["boot"] == boot and record["dev"] == dev:
            return bool(record["works"]), str(record["why"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    works, why = probe_kernel_overlay(directory)
    tmp = f"{path}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"boot": boot, "dev": dev, "works": works, "why": why}, f)
    os.replace(tmp, path)
    return works, why


def rootfs_driver(directory: str, *, environ: Optional[dict] = None) -> RootfsDriver:
    """The driver for containers whose layers live on the filesystem of
    `directory` (a store root): the kernel's overlayfs when it mounts in a
    user namespace (kernel_overlay_works), else fuse-overlayfs;
    CONTAIN_ROOTFS_DRIVER=overlay|fuse-overlayfs chooses."""
    env = os.environ if environ is None else environ
    forced = env.get(DRIVER_ENV) or None
    key = (os.stat(directory).st_dev, forced)
    driver = _drivers.get(key)
    if driver is None:
        kernel = (True, "") if forced else kernel_overlay_works(directory)
        program = find_helper("fuse-overlayfs")
        driver = _drivers[key] = choose_rootfs_driver(kernel, forced=forced, fuse_program=program,
                                                       dev_fuse=dev_fuse_usable())
    return driver


def adapt_spec(spec: Spec, maps: IdMaps, *, network_mode: str, own_cgroup: bool = False) -> Spec:
    """Turn a root-shaped spec into a rootless one (in place; returned too):
    a user namespace with the user's mapping, the root filesystem driver
    (rootfs_driver), and the mounts an unprivileged user namespace can make.
    own_cgroup: the container has a cgroup of its own (a delegated
    subtree), whose cgroup2 view stays mounted; without one the caller
    skips cgroups (see NoCgroup)."""
    if network_mode.split(":", 1)[0] not in NETWORK_MODES:
        raise InvalidArgument(
            f"network {network_mode!r} is not available to an ordinary user: use "
            f"network='{DEFAULT_NETWORK}' (the default), 'none' or 'host'")
    if spec.namespace("user") is None:
        from .spec import Namespace

        spec.linux.namespaces.append(Namespace("user"))
    spec.linux.uid_mappings = list(maps.uid_mappings)
    spec.linux.gid_mappings = list(maps.gid_mappings)
    if spec.root.lowerdirs:
        driver = rootfs_driver(os.path.dirname(spec.root.path))
        spec.root.mount_program = driver.mount_program
    mounts: list[Mount] = []
    for m in spec.mounts:
        if m.type == "cgroup2" and own_cgroup:
            pass  # its own cgroup, through its cgroup namespace
        elif m.type in ("cgroup", "cgroup2") or (m.destination.startswith("/sys/fs/cgroup")):
            # v1 hierarchies cannot be mounted in a user namespace, and with
            # no cgroup of its own the container has nothing to see there.
            continue
        if m.type == "devpts" and maps.host_gid(5) is None:
            m = Mount(m.destination, m.type, m.source, [o for o in m.options if o != "gid=5"])
        if m.destination == "/sys" and m.type == "sysfs" and network_mode == "host":
            # sysfs belongs to the network namespace: one we do not own
            # cannot be mounted anew.
            m = Mount("/sys", "bind", "/sys", ["rbind", "ro", "nosuid", "noexec", "nodev"])
        mounts.append(m)
    spec.mounts = mounts
    return spec


def spawn_options(maps: IdMaps) -> dict:
    """Keyword arguments for runtime.spawn carrying the map helpers, for a
    user namespace of the container's own (Root.shared_userns is the fd of
    the one a container joins instead)."""
    return {"uidmap_helper": maps.uidmap_helper, "gidmap_helper": maps.gidmap_helper}
