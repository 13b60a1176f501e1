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

import os
import pwd
import shutil
import subprocess
import sys
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
        with the same mapping, for helpers that must run inside one (layer
        unpacking: chown to the image's owners)."""
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

    Delegated means: the caller's own v2 cgroup (or, as systemd lays it out,
    its parent: user@UID.service) is writable by the caller, its
    cgroup.procs too, and cgroup.subtree_control enables controllers."""
    unified = _unified_mount(cgroup_root, mountinfo)
    if unified is None:
        return None
    own = _own_cgroup_v2(proc_self_cgroup)
    if own is None:
        return None
    path = os.path.join(unified, own.lstrip("/"))
    for candidate in (path, os.path.dirname(path)):
        if not candidate.startswith(unified) or candidate == unified:
            break
        try:
            with open(os.path.join(candidate, "cgroup.subtree_control")) as f:
                enabled = f.read().split()
        except OSError:
            continue
        if (enabled and os.access(candidate, os.W_OK)
                and os.access(os.path.join(candidate, "cgroup.procs"), os.W_OK)
                and os.access(os.path.join(candidate, "cgroup.subtree_control"), os.W_OK)):
            return candidate
    return None


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


def check_resources(resources, *, delegated: Optional[str], user: Optional[str] = None) -> None:
    """Asking for a limit without a delegated subtree is an error, never a
    silent no-op.  `resources` is a linux.cgroups.Resources (or anything
    with those attributes); only attributes that are set count."""
    if delegated is not None:
        return
    fields = attrs.asdict(resources) if attrs.has(type(resources)) else dict(resources)
    asked = sorted({_DOCKER_NAMES.get(name, name) for name, value in fields.items()
                    if value not in (None, 0, -1, "", [], {}, ())})
    if not asked:
        return
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


def adapt_spec(spec: Spec, maps: IdMaps, *, network_mode: str) -> Spec:
    """Turn a root-shaped spec into a rootless one (in place; returned too):
    a user namespace with the user's mapping, and the mounts an unprivileged
    user namespace can make.  The caller skips cgroups (see NoCgroup)."""
    if network_mode.split(":", 1)[0] not in NETWORK_MODES:
        raise InvalidArgument(
            f"network {network_mode!r} is not available to an ordinary user: use "
            f"network='{DEFAULT_NETWORK}' (the default), 'none' or 'host'")
    if spec.namespace("user") is None:
        from .spec import Namespace

        spec.linux.namespaces.append(Namespace("user"))
    spec.linux.uid_mappings = list(maps.uid_mappings)
    spec.linux.gid_mappings = list(maps.gid_mappings)
    mounts: list[Mount] = []
    for m in spec.mounts:
        if m.type in ("cgroup", "cgroup2") or (m.destination.startswith("/sys/fs/cgroup")):
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
    """Keyword arguments for runtime.spawn carrying the map helpers."""
    return {"uidmap_helper": maps.uidmap_helper, "gidmap_helper": maps.gidmap_helper}


# ------------------------------------------------------------ layer unpack
def unpack_in_userns(maps: IdMaps, blob: str, dest: str, *, media_type: Optional[str] = None,
                     unshare: Optional[str] = None) -> None:
    """Unpack a layer blob into `dest` as root of a user namespace with the
    container's mapping, so that chown to the image's owners works (files
    owned by container uid u land on host uid maps.host_uid(u)).

    Runs `unshare --user --map-user=0 --map-users=...` (util-linux 2.38,
    which calls newuidmap/newgidmap) around a Python child doing
    contain.storage.unpack.unpack_layer."""
    unshare = unshare or shutil.which("unshare") or "/usr/bin/unshare"
    if not os.path.exists(unshare):
        raise NotFound("unshare (util-linux) is not installed")
    code = (
        "import sys\n"
        "from contain.storage.unpack import unpack_layer\n"
        "with open(sys.argv[1], 'rb') as f:\n"
        "    unpack_layer(f, sys.argv[2])\n"
    )
    proc = subprocess.run([*maps.unshare_argv(unshare), sys.executable, "-c", code, blob, dest],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1]
        raise RuntimeFailure("unpack layer in user namespace", 0, last)
