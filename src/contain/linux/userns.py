"""One long-lived user namespace per user, joined by each rootless container.

newuidmap and newgidmap are setuid programs, and running both for every
container costs milliseconds on the start path. Instead, one holder
process per user keeps a user namespace with the user's mapping alive.
The holder is `contain-monitor --hold-userns`, in the role of podman's
pause process. A container's monitor-to-be joins that namespace (setns)
before it clones the container, so the namespaces made for the container
(mount, pid, network, ...) belong to it.

The holder is found through a record in the user's runtime directory:
`userns.json` holds its pid, its start time, and the mapping it was given.
A record counts only when that pid still runs with that start time and
that mapping, as the kernel shows it in /proc/PID/uid_map. Otherwise a new
holder is made, under `userns.lock` (flock), so two processes of the user
never make two. A process keeps the fd it opened. The fd holds the
namespace too, so a holder killed later does not pull it from under a
running Python process; the next process then makes a new holder.

Every container of the user shares that namespace, as with podman. Their
namespaces are still their own; the default capability set holds no
CAP_SYS_ADMIN, and each container's pid namespace hides the others'
processes (and with them their /proc/PID/ns files).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import threading
from typing import Optional

from ..errors import RuntimeFailure

RECORD = "userns.json"
LOCK = "userns.lock"

_lock = threading.Lock()
_fds: dict[tuple, int] = {}  # mapping -> an fd of the namespace, this process's
_mnt: dict[int, int] = {}  # that fd -> an fd of the holder's mount namespace, or -1


def _key(maps) -> tuple:
    return (tuple((m.container_id, m.host_id, m.size) for m in maps.uid_mappings),
            tuple((m.container_id, m.host_id, m.size) for m in maps.gid_mappings))


def _monitor_path() -> str:
    from .runtime import MONITOR_PATH

    return MONITOR_PATH


def start_time(pid: int) -> Optional[str]:
    """Field 22 of /proc/PID/stat (when the process started, in clock
    ticks since boot): with the pid, it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _read_map(path: str) -> tuple:
    with open(path) as f:
        return tuple(tuple(int(x) for x in line.split()) for line in f if line.strip())


def _fits(record: dict, key: tuple) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or pid <= 0 or start_time(pid) != record.get("start"):
        return False
    try:
        return (_read_map(f"/proc/{pid}/uid_map"), _read_map(f"/proc/{pid}/gid_map")) == key
    except (OSError, ValueError):
        return False


def _load(path: str) -> dict:
    import json

    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _save(path: str, record: dict) -> None:
    import json

    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)


def _open_ns(pid: int, start: str) -> Optional[int]:
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # The holder's own mount namespace (a holder of an older contain has
        # none: it is ours then, and helpers make their own).
        mnt = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        if os.fstat(mnt).st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            os.close(mnt)
            mnt = -1
    except OSError:
        mnt = -1
    if start_time(pid) != start:  # the pid was reused between the check and the opens
        os.close(fd)
        if mnt >= 0:
            os.close(mnt)
        return None
    _mnt[fd] = mnt
    return fd


def mount_ns(userns_fd: int) -> int:
    """An fd of the mount namespace the holder of `userns_fd` made in it,
    for helpers that mount there; -1 when there is none."""
    return _mnt.get(userns_fd, -1)


def _run_helpers(maps, pid: int) -> None:
    """newuidmap and newgidmap for `pid`, at once; RuntimeFailure naming
    the one that refused, with its complaint."""
    procs = []
    for argv in (maps.uidmap_helper, maps.gidmap_helper):
        argv = [str(pid) if a == "{pid}" else a for a in argv]
        procs.append((argv, subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE)))
    failure = None
    for argv, p in procs:
        _, err = p.communicate()
        if p.returncode != 0 and failure is None:
            name = os.path.basename(argv[0])
            failure = RuntimeFailure(
                "write user namespace mappings", errno.EPERM,
                f"{name}: exit status {p.returncode}: {err.decode(errors='replace').strip()}")
    if failure is not None:
        raise failure


def _make_holder(maps) -> tuple[int, str]:
    """Start a holder, map it, let it go: its (pid, start time)."""
    proc = subprocess.Popen([_monitor_path(), "--hold-userns"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline().decode(errors="replace").strip()
        proc.wait()  # the first process forks the holder and exits at once
        if not line.isdigit():
            parts = line.split()
            code = int(parts[-1]) if parts and parts[-1].isdigit() else errno.EIO
            raise RuntimeFailure("make user namespace", code,
                                 f"contain-monitor --hold-userns: {line or 'no answer'}")
        pid = int(line)
        start = start_time(pid)
        _run_helpers(maps, pid)
        if start is None:
            raise RuntimeFailure("make user namespace", errno.ESRCH,
                                 f"the holder of the user namespace (pid {pid}) ended at once")
        proc.stdin.write(b"g")
        proc.stdin.flush()
        return pid, start
    finally:
        # EOF before the byte (a failure above) ends the holder.
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def shared(maps, rundir: str) -> Optional[int]:
    """An fd of the user's long-lived user namespace with `maps`, the
    holder made when none fits; None for a mapping written without
    helpers (a single id), which needs no setuid program per container."""
    if not maps.uidmap_helper or not maps.gidmap_helper:
        return None
    key = _key(maps)
    with _lock:
        fd = _fds.get(key)
        if fd is not None:
            return fd
        record_path = os.path.join(rundir, RECORD)
        with open(os.path.join(rundir, LOCK), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = _load(record_path)
            fd = _open_ns(record["pid"], record["start"]) if _fits(record, key) else None
            if fd is None:
                pid, start = _make_holder(maps)
                fd = _open_ns(pid, start)
                if fd is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    raise RuntimeFailure("make user namespace", errno.ESRCH,
                                         f"the holder of the user namespace (pid {pid}) ended at once")
                _save(record_path, {"pid": pid, "start": start,
                                    "uid_map": [list(m) for m in key[0]],
                                    "gid_map": [list(m) for m in key[1]]})
        _fds[key] = fd
        return fd


def holder(rundir: str) -> Optional[int]:
    """The pid of the user's holder, if its record still names a live one."""
    record = _load(os.path.join(rundir, RECORD))
    pid = record.get("pid")
    if isinstance(pid, int) and pid > 0 and start_time(pid) == record.get("start"):
        return pid
    return None


def _after_fork_in_child() -> None:
    # A fork while another thread made a holder would leave the lock taken;
    # the fds stay valid (inherited).
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
