"""Carry out a runtime spec through the native core.

This module only translates: attrs spec -> C structs, C error record ->
RuntimeFailure.  Choosing what goes into the spec is the callers' job.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import NamedTuple, Optional, Sequence, Union

import attrs

from ..errors import InvalidArgument, RuntimeFailure
from .defaults import CAPABILITY_NUMBERS, DEV_SYMLINKS
from .spec import Process, Spec

try:
    from .._native._contain_native import ffi, lib
except ImportError as exc:  # pragma: no cover - a broken install
    raise ImportError(
        "contain's native core is not built; install contain with pip (it needs gcc "
        f"and the Python headers): {exc}"
    ) from exc

CLONE_FLAGS = {
    "mount": lib.CLONE_NEWNS, "pid": lib.CLONE_NEWPID, "uts": lib.CLONE_NEWUTS,
    "ipc": lib.CLONE_NEWIPC, "network": lib.CLONE_NEWNET, "cgroup": lib.CLONE_NEWCGROUP,
    "user": lib.CLONE_NEWUSER,
}

_ATTR_FLAGS = {
    "ro": lib.MOUNT_ATTR_RDONLY, "nosuid": lib.MOUNT_ATTR_NOSUID, "nodev": lib.MOUNT_ATTR_NODEV,
    "noexec": lib.MOUNT_ATTR_NOEXEC, "noatime": lib.MOUNT_ATTR_NOATIME,
    "strictatime": lib.MOUNT_ATTR_STRICTATIME, "relatime": lib.MOUNT_ATTR_RELATIME,
}
_IGNORED_OPTIONS = {"rw", "bind", "rbind", "private", "rprivate", "slave", "rslave", "suid",
                    "dev", "exec", "atime"}


MONITOR_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "_native", "contain-monitor")


@attrs.frozen
class Monitor:
    """A program to become the container's parent (see _native/monitor.c)."""

    argv: Sequence[str]  # an entry "{pid}" becomes the container's pid
    fds: Sequence[int] = ()  # handed over as fds 4, 5, ... (3 is the container's pidfd)
    path: str = MONITOR_PATH
    env: Sequence[str] = ()  # its environment ("K=V"), passed on to a restart process


@attrs.frozen
class CgroupPlan:
    """v1 cgroup directories for spawn to make while the monitor-to-be
    clones the container (ct_spec.cgroup_mkdirs): `mkdirs` in order (a
    missing parent made, an empty one left by an earlier start of the same
    container replaced), then `writes` ((file, text) pairs, one write()
    each: device rules), then the child joins them itself before its
    command runs, writing "0" into each of the `joins` files (absolute
    paths: v1 `tasks` files, Cgroup.join_files)."""

    mkdirs: Sequence[str]
    writes: Sequence[tuple[str, str]] = ()
    joins: Sequence[str] = ()


@attrs.frozen
class Child:
    pid: int
    pidfd: int  # -1 when a monitor is the parent
    # Set when the process started but its command could not be executed:
    # it has exited (126/127) and the reason is here, as Docker reports it.
    exec_error: Optional[RuntimeFailure] = None
    monitor_pid: int = -1
    monitor_pidfd: int = -1
    # Their start times (linux.proc.start_time), read by the native side
    # while the container was being set up; None when gone already.
    start_time: Optional[int] = None
    monitor_start_time: Optional[int] = None


def _failure(err) -> RuntimeFailure:
    step = ffi.string(err.step).decode(errors="replace")
    detail = ffi.string(err.detail).decode(errors="replace")
    if step == "exec" and err.err == 2 and "/" not in detail:
        return RuntimeFailure(step, 0, f'"{detail}": executable file not found in $PATH')
    return RuntimeFailure(step, err.err, detail)


def _caps_mask(names: Sequence[str]) -> int:
    return _caps_mask_of(tuple(names))


@functools.lru_cache(maxsize=64)  # a handful of capability sets recur at every start
def _caps_mask_of(names: tuple[str, ...]) -> int:
    mask = 0
    for name in names:
        key = name.upper() if name.upper().startswith("CAP_") else "CAP_" + name.upper()
        if key not in CAPABILITY_NUMBERS:
            raise InvalidArgument(f"unknown capability: {name}")
        mask |= 1 << CAPABILITY_NUMBERS[key]
    return mask


# C copies of the strings every start passes (mount targets, file system
# types, options, device paths): made once.  The native side only reads
# them (const char *).  Bounded: per-container paths come and go.
_CSTRINGS: dict = {}
_CSTRINGS_MAX = 4096


class _Keep:
    """Holds every cffi allocation alive until the native call returns."""

    def __init__(self) -> None:
        self.items: list = []

    def str(self, value: Optional[str]):
        if value is None:
            return ffi.NULL
        buf = _CSTRINGS.get(value)
        if buf is None:
            if len(_CSTRINGS) >= _CSTRINGS_MAX:
                _CSTRINGS.clear()
            buf = _CSTRINGS[value] = ffi.new("char[]", os.fsencode(value))
        self.items.append(buf)
        return buf

    def fresh(self, value: str):
        """Like str, uncached: for one container's paths, which would only
        crowd the cache."""
        buf = ffi.new("char[]", os.fsencode(value))
        self.items.append(buf)
        return buf

    def strv(self, values: Sequence[str], cache: Union[bool, Sequence[bool]] = True):
        """A NULL-terminated array; `cache`: whether the strings are kept
        for later calls (str) or made for this one (fresh), for all or for
        each."""
        arr = ffi.new("char *[]", len(values) + 1)
        for i, v in enumerate(values):
            keep = cache if isinstance(cache, bool) else cache[i]
            arr[i] = self.str(v) if keep else self.fresh(v)
        arr[len(values)] = ffi.NULL
        self.items.append(arr)
        return arr


def _fill_process(keep: _Keep, cproc, proc: Process, stdio: Sequence[int],
                  console_socket: int = -1) -> None:
    cproc.argv = keep.strv(proc.args)
    cproc.envp = keep.strv(proc.env)
    cproc.cwd = keep.str(proc.cwd)
    cproc.uid = proc.user.uid
    cproc.gid = proc.user.gid
    groups = ffi.new("unsigned int[]", list(proc.user.additional_gids) or [0])
    keep.items.append(groups)
    cproc.ngroups = len(proc.user.additional_gids)
    cproc.groups = groups
    caps = proc.capabilities
    cproc.set_caps = caps is not None
    if caps is not None:
        cproc.cap_bounding = _caps_mask(caps.bounding)
        cproc.cap_effective = _caps_mask(caps.effective)
        cproc.cap_permitted = _caps_mask(caps.permitted)
        cproc.cap_inheritable = _caps_mask(caps.inheritable)
        cproc.cap_ambient = _caps_mask(caps.ambient)
    cproc.no_new_privs = proc.no_new_privileges
    cproc.seccomp_filter = ffi.NULL
    cproc.seccomp_len = 0
    for i in range(3):
        cproc.stdio[i] = stdio[i] if i < len(stdio) and stdio[i] is not None else -1
    cproc.tty = proc.terminal
    cproc.console_socket = console_socket
    cproc.oom_score_adj_set = proc.oom_score_adj is not None
    cproc.oom_score_adj = proc.oom_score_adj or 0


def _set_seccomp(keep: _Keep, cproc, program: Optional[bytes]) -> None:
    if not program:
        return
    if len(program) % 8:
        raise InvalidArgument("a seccomp program is a whole number of 8-byte instructions")
    buf = ffi.new("char[]", program)
    keep.items.append(buf)
    cproc.seccomp_filter = buf
    cproc.seccomp_len = len(program) // 8


@functools.lru_cache(maxsize=256)  # the same few option lists recur at every start
def _split_options(options: tuple[str, ...]) -> tuple[int, tuple[str, ...], bool]:
    attr, data, recursive = 0, [], False
    for opt in options:
        if opt in _ATTR_FLAGS:
            attr |= _ATTR_FLAGS[opt]
        elif opt == "rbind":
            recursive = True
        elif opt in _IGNORED_OPTIONS:
            continue
        else:
            data.append(opt)
    return attr, tuple(data), recursive


class _MountEntry(NamedTuple):
    """One struct ct_mount, as a hashable value."""
    kind: int
    target: str
    source: Optional[str] = None
    fstype: Optional[str] = None
    options: Optional[str] = None
    attr: int = 0
    recursive: bool = False
    is_file: bool = False
    mode: int = 0
    dev: int = 0


_MOUNT_STRUCTS: dict = {}  # entry -> (struct ct_mount *, its strings): most recur every start
_MOUNT_STRUCTS_MAX = 1024
_NEW_MOUNTS: dict = {}  # (type, source, destination, *options) -> entry, for all but bind mounts


def _spec_mount_entries(spec: Spec) -> list[_MountEntry]:
    """The entries of spec.mounts.  A bind mount's source is looked at in
    every start (it may come and go); the others are made once."""
    E = _MountEntry
    entries: list[_MountEntry] = []
    for m in spec.mounts:
        if m.type != "bind":
            key = (m.type, m.source, m.destination, *m.options)
            entry = _NEW_MOUNTS.get(key)
            if entry is None:
                attr, data, _ = _split_options(tuple(m.options))
                if len(_NEW_MOUNTS) >= _MOUNT_STRUCTS_MAX:
                    _NEW_MOUNTS.clear()
                entry = _NEW_MOUNTS[key] = E(lib.CT_MOUNT_NEW, m.destination, source=m.source or m.type,
                                             fstype=m.type, options=",".join(data), attr=attr)
            entries.append(entry)
            continue
        attr, _, recursive = _split_options(tuple(m.options))
        if not os.path.exists(m.source):
            raise InvalidArgument(f"bind mount source does not exist: {m.source}")
        entries.append(E(lib.CT_MOUNT_BIND, m.destination, source=m.source, attr=attr,
                         recursive=True if "bind" not in m.options else recursive,
                         is_file=not os.path.isdir(m.source)))
    return entries


def _linux_entries(spec: Spec, userns: bool, dev_is_tmpfs: bool) -> list[_MountEntry]:
    """The entries of devices, /dev's symlinks, sysctls, masked and
    read-only paths: the same for nearly every start."""
    E = _MountEntry
    entries: list[_MountEntry] = []
    for d in spec.linux.devices:
        if userns:
            # A user namespace may not create device nodes: bind the host's.
            entries.append(E(lib.CT_MOUNT_BIND, d.path, source=d.path, is_file=True))
        else:
            kind_bits = 0o020000 if d.type == "c" else 0o060000
            entries.append(E(lib.CT_MOUNT_MKNOD, d.path, mode=kind_bits | d.file_mode,
                             dev=os.makedev(d.major, d.minor)))
    if dev_is_tmpfs:
        for source, target in DEV_SYMLINKS:
            entries.append(E(lib.CT_MOUNT_SYMLINK, target, source=source))
    for path, value in spec.linux.sysctl:
        entries.append(E(lib.CT_MOUNT_WRITE, path, options=value))
    for path in spec.linux.masked_paths:
        entries.append(E(lib.CT_MOUNT_MASK, path))
    for path in spec.linux.readonly_paths:
        entries.append(E(lib.CT_MOUNT_READONLY, path))
    return entries


def _dev_is_tmpfs(spec: Spec) -> bool:
    return any(m.destination == "/dev" and m.type == "tmpfs" for m in spec.mounts)


def _mount_struct(entry: _MountEntry):
    """The native struct of one mount, made once per distinct entry (the
    default mounts, devices and masked paths recur in every start)."""
    cached = _MOUNT_STRUCTS.get(entry)
    if cached is None:
        own = _Keep()
        cm = ffi.new("struct ct_mount *")
        cm.kind = entry.kind
        cm.source = own.str(entry.source)
        cm.target = own.str(entry.target)
        cm.fstype = own.str(entry.fstype)
        cm.options = own.str(entry.options)
        cm.attr = entry.attr
        cm.recursive = bool(entry.recursive)
        cm.is_file = bool(entry.is_file)
        cm.mode = entry.mode
        cm.dev = entry.dev
        cm.fd = -1
        if len(_MOUNT_STRUCTS) >= _MOUNT_STRUCTS_MAX:
            _MOUNT_STRUCTS.clear()
        cached = _MOUNT_STRUCTS[entry] = (cm, own)
    return cached


# The native array of _linux_entries, by what it is made of: (its bytes,
# what keeps the strings its pointers name alive).  Bounded like the rest.
_LINUX_SEGMENTS: dict = {}
_LINUX_SEGMENTS_MAX = 64


def _linux_segment(spec: Spec, userns: bool, dev_is_tmpfs: bool):
    lx = spec.linux
    key = (userns, dev_is_tmpfs,
           tuple((d.path, d.type, d.major, d.minor, d.file_mode) for d in lx.devices),
           tuple(map(tuple, lx.sysctl)), tuple(lx.masked_paths), tuple(lx.readonly_paths))
    seg = _LINUX_SEGMENTS.get(key)
    if seg is None:
        entries = _linux_entries(spec, userns, dev_is_tmpfs)
        size = ffi.sizeof("struct ct_mount")
        arr = ffi.new("struct ct_mount[]", max(len(entries), 1))
        keep = [_mount_struct(e) for e in entries]
        for i, cached in enumerate(keep):
            ffi.memmove(ffi.addressof(arr, i), cached[0], size)
        if len(_LINUX_SEGMENTS) >= _LINUX_SEGMENTS_MAX:
            _LINUX_SEGMENTS.clear()
        seg = _LINUX_SEGMENTS[key] = (bytes(ffi.buffer(arr, size * len(entries))), len(entries), keep)
    return seg


def _mounts(keep: _Keep, spec: Spec, userns: bool):
    """The spec's mounts as the native array (the native side only reads it)."""
    entries = _spec_mount_entries(spec)
    blob, n_linux, strings = _linux_segment(spec, userns, _dev_is_tmpfs(spec))
    keep.items.append(strings)  # the segment's strings live until the call returns
    total = len(entries) + n_linux
    arr = ffi.new("struct ct_mount[]", max(total, 1))
    keep.items.append(arr)
    size = ffi.sizeof("struct ct_mount")
    for i, entry in enumerate(entries):
        cached = _mount_struct(entry)
        keep.items.append(cached)
        ffi.memmove(ffi.addressof(arr, i), cached[0], size)
    if n_linux:
        ffi.memmove(ffi.addressof(arr, len(entries)), blob, len(blob))
    return arr, total


def _idmap(mappings) -> Optional[str]:
    if not mappings:
        return None
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def mount_overlay(lowerdirs: Sequence[str], upperdir: str, workdir: str, *,
                  userxattr: bool = False, userns_fd: int = -1) -> int:
    """A detached overlay mount of the layers (volatile: no sync of the
    host's filesystem when it goes), for spawn(overlay_fd=): making one
    costs milliseconds on a disk with recently deleted inodes, so it can be
    done ahead, off the start path.  With `userns_fd` (rootless: the user's
    long-lived user namespace) it is made as a member of that namespace,
    for containers that join it, with its markers in user.* xattrs.
    Returns the fd (the caller closes it; the mount goes with the last
    reference)."""
    if not lowerdirs:
        raise InvalidArgument("an overlay needs at least one lower layer")
    lower = ":".join(lowerdirs)
    if len(lower) > 4000:
        raise InvalidArgument(f"too many image layers for one overlay mount ({len(lowerdirs)})")
    err = ffi.new("struct ct_error *")
    flags = lib.CT_OVERLAY_VOLATILE | (lib.CT_OVERLAY_USERXATTR if userxattr or userns_fd >= 0 else 0)
    keep = _Keep()
    fd = lib.ct_mount_overlay_in(userns_fd, _mount_ns(userns_fd), keep.str(lower), keep.str(upperdir),
                                 keep.str(workdir), flags, err)
    if fd < 0:
        raise _failure(err)
    return fd


def _mount_ns(userns_fd: int) -> int:
    if userns_fd < 0:
        return -1
    from .userns import mount_ns

    return mount_ns(userns_fd)


def clone_mount(mount_fd: int, userns_fd: int = -1) -> int:
    """A second detached mount of the same superblock as the detached mount
    `mount_fd` (a container's root kept for the next container), made as a
    member of `userns_fd` when given.  RuntimeFailure where the kernel
    refuses (older kernels do not clone detached mounts: EINVAL)."""
    err = ffi.new("struct ct_error *")
    fd = lib.ct_clone_mount(userns_fd, _mount_ns(userns_fd), mount_fd, err)
    if fd < 0:
        raise _failure(err)
    return fd


def netns_in(userns_fd: int) -> int:
    """A network namespace with lo up, made as a member of the user
    namespace `userns_fd` (rootless network "none", made ahead for
    containers that join that user namespace); the caller closes the fd."""
    err = ffi.new("struct ct_error *")
    fd = lib.ct_netns_in(userns_fd, err)
    if fd < 0:
        raise _failure(err)
    return fd


_FUSE_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fuse_root.py")


def _fuse_root_helper(root, userns: bool, overlay_fd: int) -> list[str]:
    """argv of the root helper that mounts the layers with root.mount_program
    in the child's mount namespace (see _fuse_root.py)."""
    if not userns:
        raise InvalidArgument("a root mount program (fuse-overlayfs) needs a user namespace in the spec")
    if not root.upperdir or not root.workdir:
        raise InvalidArgument("a root mount program (fuse-overlayfs) needs a writable layer")
    if overlay_fd >= 0:
        raise InvalidArgument("a root mount program and an overlay mounted ahead exclude each other")
    lower = ":".join(root.lowerdirs)
    if len(lower) > 4000:
        raise InvalidArgument(f"too many image layers for one overlay mount ({len(root.lowerdirs)})")
    # -S: the helper needs the standard library only, and starts in 20 ms.
    return [sys.executable, "-I", "-S", _FUSE_ROOT, "{pid}", root.mount_program, lower,
            root.upperdir, root.workdir, root.path]


def spawn(spec: Spec, *, stdio: Sequence[Optional[int]] = (None, None, None),
          cgroup_procs: Sequence[str] = (), cgroup_dir: Optional[str] = None,
          join_ns_fds: Sequence[int] = (),
          monitor: Optional[Monitor] = None, console_socket: int = -1,
          uidmap_helper: Optional[Sequence[str]] = None,
          gidmap_helper: Optional[Sequence[str]] = None,
          overlay_fd: int = -1, userns_fd: int = -1,
          cgroup_plan: Optional[CgroupPlan] = None) -> Child:
    """Start the spec's process in new namespaces; returns once it has exec'd.

    With a user namespace, `uidmap_helper`/`gidmap_helper` (argv of
    newuidmap/newgidmap, "{pid}" standing for the child; see
    linux.rootless.id_maps) write the maps instead of the parent: what an
    ordinary user needs for more than their own id.

    `userns_fd`: a user namespace to join instead of making one (the
    user's long-lived one, linux.userns), in place of the spec's "user"
    namespace and its mappings; needs a monitor, which joins it before it
    clones the container.

    `overlay_fd`: the root's overlay, mounted ahead by mount_overlay with
    the spec's layers (the caller keeps and closes the fd).  With
    `spec.root.mount_program` (fuse-overlayfs, user namespaces only) the
    layers are mounted by that program instead, from a helper the native
    core runs before the child mounts its root (see _fuse_root.py).

    `cgroup_dir` is a cgroup v2 directory the child is born in (clone3 with
    CLONE_INTO_CGROUP; joined after clone where the kernel lacks it), in
    addition to the `cgroup_procs` files, which the child writes "0" into
    (Cgroup.join_files: `tasks` of v1 hierarchies).  `cgroup_plan`:
    v1 cgroups that do not exist yet, made during the start (see
    CgroupPlan); not with a user namespace.

    Raises RuntimeFailure naming the step when set-up fails (nothing of the
    child is left).  If only the exec failed, the child has exited 126/127
    and `Child.exec_error` tells why.
    """
    keep = _Keep()
    cspec = ffi.new("struct ct_spec *")
    flags = 0
    for ns in spec.linux.namespaces:
        if ns.path is None:
            flags |= CLONE_FLAGS[ns.type]
    if userns_fd >= 0:
        if monitor is None:
            raise InvalidArgument("joining a user namespace needs a monitor")
        if spec.root.mount_program or uidmap_helper or gidmap_helper:
            raise InvalidArgument("a joined user namespace has its mappings and no mount program")
        flags &= ~lib.CLONE_NEWUSER
    cspec.clone_flags = flags
    cspec.userns_fd = userns_fd
    userns = bool(flags & lib.CLONE_NEWUSER) or userns_fd >= 0
    if cgroup_plan is not None:
        if userns:
            raise InvalidArgument("cgroups made at the start are not for a user namespace")
        cspec.cgroup_mkdirs = keep.strv(cgroup_plan.mkdirs, cache=False)
        # The files are this container's; the texts (device rules) recur.
        cspec.cgroup_writes = keep.strv([x for pair in cgroup_plan.writes for x in pair],
                                        cache=[False, True] * len(cgroup_plan.writes))
        # Opened by the child after its pivot_root: below our root.
        cspec.cgroup_join_paths = keep.strv([p.lstrip("/") for p in cgroup_plan.joins], cache=False)
    if len(join_ns_fds) > 7:
        raise InvalidArgument("too many namespaces to join")
    for i, fd in enumerate(join_ns_fds):
        cspec.ns_fds[i] = fd
    cspec.ns_fds[len(join_ns_fds)] = -1
    if len(cgroup_procs) > 11:
        raise InvalidArgument("too many cgroup hierarchies")
    cg_fds: list[int] = []
    try:
        for path in cgroup_procs:
            cg_fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        for i, fd in enumerate(cg_fds):
            cspec.cgroup_procs[i] = fd
        cspec.cgroup_procs[len(cg_fds)] = -1
        cspec.cgroup_dir_fd = cspec.cgroup_join_dirfd = -1
        if cgroup_plan is not None and cgroup_plan.joins:
            cspec.cgroup_join_dirfd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            cg_fds.append(cspec.cgroup_join_dirfd)
        if cgroup_dir is not None:
            cspec.cgroup_dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            cg_fds.append(cspec.cgroup_dir_fd)
        cspec.uid_map = keep.str(_idmap(spec.linux.uid_mappings))
        cspec.gid_map = keep.str(_idmap(spec.linux.gid_mappings))
        if (uidmap_helper or gidmap_helper) and not userns:
            raise InvalidArgument("id map helpers need a user namespace in the spec")
        cspec.uidmap_helper = keep.strv(list(uidmap_helper)) if uidmap_helper else ffi.NULL
        cspec.gidmap_helper = keep.strv(list(gidmap_helper)) if gidmap_helper else ffi.NULL
        cspec.rootfs = keep.str(spec.root.path)
        root = spec.root
        if root.lowerdirs and root.mount_program:
            cspec.overlay = ffi.NULL
            cspec.root_helper = keep.strv(_fuse_root_helper(root, userns, overlay_fd))
        elif root.lowerdirs:
            if root.upperdir:
                opts = (f"lowerdir={':'.join(root.lowerdirs)},upperdir={root.upperdir},"
                        f"workdir={root.workdir},volatile")
            else:
                opts = f"lowerdir={':'.join(root.lowerdirs)}"
                if len(root.lowerdirs) == 1:
                    # overlay wants two lowers when there is no upper layer.
                    opts = f"lowerdir={root.lowerdirs[0]}:{root.lowerdirs[0]}"
            if userns:
                # Inside a user namespace overlay keeps its whiteout and
                # opaque markers in user.overlay.* xattrs (Linux >= 5.11).
                opts += ",userxattr"
            if len(opts) > 4000:
                raise InvalidArgument(f"too many image layers for one overlay mount ({len(root.lowerdirs)})")
            cspec.overlay = keep.str(opts)
        else:
            cspec.overlay = ffi.NULL
        cspec.overlay_fd = overlay_fd
        cspec.readonly_root = root.readonly
        cspec.hostname = keep.str(spec.hostname or None)
        net = spec.namespace("network")
        cspec.loopback_up = net is not None and net.path is None
        cspec.mounts, cspec.nmounts = _mounts(keep, spec, userns)
        _fill_process(keep, cspec.proc, spec.process, [s if s is not None else -1 for s in stdio],
                      console_socket)
        _set_seccomp(keep, cspec.proc, spec.linux.seccomp)
        cmon = ffi.NULL
        if monitor is not None:
            if len(monitor.fds) > 8:
                raise InvalidArgument("a monitor takes at most 8 descriptors")
            cmon = ffi.new("struct ct_monitor *")
            cmon.path = keep.str(monitor.path)
            cmon.argv = keep.strv([monitor.path, *monitor.argv])
            cmon.envp = keep.strv(list(monitor.env))
            for i, fd in enumerate(monitor.fds):
                cmon.fds[i] = fd
            cmon.nfds = len(monitor.fds)
        child = ffi.new("struct ct_child *")
        err = ffi.new("struct ct_error *")
        rc = lib.ct_spawn(cspec, cmon, child, err)
    finally:
        for fd in cg_fds:
            os.close(fd)
    if rc < 0:
        if child.monitor_pidfd >= 0:
            os.close(child.monitor_pidfd)
        raise _failure(err)
    return Child(child.pid, child.pidfd, _failure(err) if rc == 1 else None,
                 child.monitor_pid, child.monitor_pidfd,
                 child.start_time or None, child.monitor_start_time or None)


def join(pidfd: int, process: Process, *, namespaces: Sequence[str],
         stdio: Sequence[Optional[int]] = (None, None, None), cgroup_procs: Sequence[str] = (),
         cgroup_dir: Optional[str] = None,
         seccomp: Optional[bytes] = None, console_socket: int = -1) -> Child:
    """Run `process` inside the namespaces and cgroups of a running one.

    `cgroup_procs`: files the process writes "0" into to join (v1 `tasks`,
    Cgroup.join_files); `cgroup_dir`: the container's v2 directory, which
    the process is born in (clone3 CLONE_INTO_CGROUP) or joins."""
    keep = _Keep()
    flags = 0
    for kind in namespaces:
        flags |= CLONE_FLAGS[kind]
    cproc = ffi.new("struct ct_process *")
    _fill_process(keep, cproc, process, [s if s is not None else -1 for s in stdio], console_socket)
    _set_seccomp(keep, cproc, seccomp)
    cg_fds: list[int] = []
    try:
        for path in cgroup_procs:
            cg_fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        fds = ffi.new("int[]", cg_fds + [-1])
        dir_fd = -1
        if cgroup_dir is not None:
            dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            cg_fds.append(dir_fd)
        child = ffi.new("struct ct_child *")
        err = ffi.new("struct ct_error *")
        rc = lib.ct_join(pidfd, flags, fds, dir_fd, cproc, child, err)
    finally:
        for fd in cg_fds:
            os.close(fd)
    if rc < 0:
        raise _failure(err)
    return Child(child.pid, child.pidfd, _failure(err) if rc == 1 else None)


def exit_code(status_info) -> int:
    """Docker's exit code from an os.waitid() result: 128+signal for a signal."""
    import os as _os

    if status_info.si_code == _os.CLD_EXITED:
        return status_info.si_status
    return 128 + status_info.si_status
