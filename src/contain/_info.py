"""`contain.info()`: what `docker info` tells, for one state root.

Docker's keys where there is one (Containers, Images, Driver, DriverStatus,
CgroupDriver, KernelVersion, SecurityOptions, DockerRootDir, ...), and for an
ordinary user the facts rootless containers depend on: which root filesystem
driver they get and why (the kernel's overlayfs in a user namespace, else
fuse-overlayfs), and the id mappings from /etc/subuid and /etc/subgid.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any, Optional

from ._root import RootArg, get_root
from .errors import ContainError

__all__ = ["info"]


def _cgroup() -> tuple[str, str]:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "systemd" if os.path.isdir("/run/systemd/system") else "cgroupfs", "2"
    return "cgroupfs", "1"


def _backing_filesystem(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The type of the filesystem `path` is on ("ext4"), or "" when not found."""
    try:
        dev = os.stat(path).st_dev
        wanted = f"{os.major(dev)}:{os.minor(dev)}"
        with open(mountinfo) as f:
            for line in f:
                fields = line.split()
                if fields[2] == wanted:
                    return fields[fields.index("-") + 1]
    except (OSError, ValueError, IndexError):
        pass
    return ""


def _os_name() -> str:
    with contextlib.suppress(OSError):
        with open("/etc/os-release") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "PRETTY_NAME":
                    return value.strip('"')
    return ""


def _mem_total() -> int:
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    return 0


def _storage(root_path: str, rootless: bool) -> tuple[str, list[list[str]]]:
    """(Driver, DriverStatus) of the containers' root filesystems."""
    status = [["Backing Filesystem", _backing_filesystem(root_path)]]
    if not rootless:
        return "overlay", status + [["Reason", "root: the kernel's overlayfs"]]
    from .linux import rootless as _rootless

    try:
        driver = _rootless.rootfs_driver(root_path)
    except ContainError as e:  # no driver can work: info says why instead of failing
        return "none", status + [["Reason", str(e)]]
    if driver.mount_program:
        status.append(["Mount Program", driver.mount_program])
    else:
        status.append(["userxattr", "true"])
    return driver.name, status + [["Reason", driver.reason]]


def info(*, root: RootArg = None) -> dict[str, Any]:
    """Docker-shaped facts about this host and state root (``docker info``)."""
    from .container import Container
    from .image import Image

    r = get_root(root)
    containers = Container.list(all=True, root=r)
    states = {"running": 0, "paused": 0, "exited": 0, "created": 0}
    for c in containers:
        with contextlib.suppress(ContainError):
            status = c.status
            states[status] = states.get(status, 0) + 1
    rootless = r.rootless
    driver, driver_status = _storage(r.path, rootless)
    cgroup_driver, cgroup_version = _cgroup()
    uname = os.uname()
    security = ["name=seccomp,profile=default"]
    id_mappings: Optional[dict] = None
    if rootless:
        security.append("name=rootless")
        maps = r.id_maps
        id_mappings = {
            "UIDMap": [m.to_oci() for m in maps.uid_mappings],
            "GIDMap": [m.to_oci() for m in maps.gid_mappings],
        }
    from . import __version__

    return {
        "ID": "",
        "Containers": len(containers),
        "ContainersRunning": states["running"],
        "ContainersPaused": states["paused"],
        "ContainersStopped": states["exited"] + states["created"],
        "Images": len(Image.list(root=r)),
        "Driver": driver,
        "DriverStatus": driver_status,
        "LoggingDriver": "contain",
        "CgroupDriver": "none" if rootless and r.cgroups.layout.mode == "none" else cgroup_driver,
        # A rootless root with a delegated subtree works through cgroup v2
        # alone, even on a hybrid host.
        "CgroupVersion": "2" if rootless and r.cgroups.layout.mode == "v2" else cgroup_version,
        "KernelVersion": uname.release,
        "OperatingSystem": _os_name(),
        "OSType": "linux",
        "Architecture": uname.machine,
        "NCPU": os.cpu_count(),
        "MemTotal": _mem_total(),
        "DockerRootDir": r.path,
        "Name": uname.nodename,
        "ServerVersion": __version__,
        "PythonVersion": platform.python_version(),
        "SecurityOptions": security,
        "Rootless": rootless,
        "IDMappings": id_mappings,
    }
