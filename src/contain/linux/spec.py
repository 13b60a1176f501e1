"""The runtime spec: the one contract between policy (Python) and mechanism (C).

Shaped like the OCI runtime spec's config.json (process, root, hostname,
mounts, linux.namespaces, linux.resources, ...), so the same bundle can be
written out with `to_oci()` and handed to crun or runc to cross-check.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

NAMESPACES = ("mount", "pid", "uts", "ipc", "network", "cgroup", "user")


@attrs.define
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = attrs.field(factory=list)


@attrs.define
class Capabilities:
    bounding: list[str] = attrs.field(factory=list)
    effective: list[str] = attrs.field(factory=list)
    permitted: list[str] = attrs.field(factory=list)
    inheritable: list[str] = attrs.field(factory=list)
    ambient: list[str] = attrs.field(factory=list)


@attrs.define
class Process:
    args: list[str]
    env: list[str] = attrs.field(factory=list)
    cwd: str = "/"
    user: User = attrs.field(factory=User)
    terminal: bool = False
    capabilities: Optional[Capabilities] = None
    no_new_privileges: bool = True
    oom_score_adj: Optional[int] = None


@attrs.define
class Mount:
    destination: str
    type: str = "bind"  # a filesystem type, or "bind"
    source: str = ""
    options: list[str] = attrs.field(factory=list)


@attrs.define
class Device:
    path: str
    type: str  # "c" or "b"
    major: int
    minor: int
    file_mode: int = 0o666


@attrs.define
class IDMapping:
    container_id: int
    host_id: int
    size: int

    def to_oci(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


@attrs.define
class Namespace:
    type: str
    path: Optional[str] = None  # join this one instead of creating one


@attrs.define
class Linux:
    namespaces: list[Namespace] = attrs.field(factory=list)
    uid_mappings: list[IDMapping] = attrs.field(factory=list)
    gid_mappings: list[IDMapping] = attrs.field(factory=list)
    devices: list[Device] = attrs.field(factory=list)
    masked_paths: list[str] = attrs.field(factory=list)
    readonly_paths: list[str] = attrs.field(factory=list)
    cgroups_path: Optional[str] = None
    resources: dict[str, Any] = attrs.field(factory=dict)
    seccomp: Optional[bytes] = None  # compiled BPF (struct sock_filter[])
    # (/proc/sys/... path, value), checked by linux.sysctl.check_sysctls
    sysctl: list[tuple[str, str]] = attrs.field(factory=list)


@attrs.define
class Root:
    path: str
    readonly: bool = False
    # Overlay layers: the root is `path` with these mounted on it.
    lowerdirs: list[str] = attrs.field(factory=list)
    upperdir: Optional[str] = None
    workdir: Optional[str] = None
    # A FUSE program that mounts the layers instead of the kernel's overlay
    # (fuse-overlayfs, for a user namespace whose kernel refuses overlay;
    # see linux.rootless.rootfs_driver).  None: the kernel's overlay.
    mount_program: Optional[str] = None


@attrs.define
class Spec:
    process: Process
    root: Root
    hostname: str = ""
    mounts: list[Mount] = attrs.field(factory=list)
    linux: Linux = attrs.field(factory=Linux)

    def namespace(self, kind: str) -> Optional[Namespace]:
        for ns in self.linux.namespaces:
            if ns.type == kind:
                return ns
        return None

    def to_oci(self, root_path: Optional[str] = None) -> dict[str, Any]:
        """config.json for crun/runc (the rootfs must already be assembled)."""
        p = self.process
        caps = p.capabilities
        proc: dict[str, Any] = {
            "terminal": p.terminal,
            "user": {"uid": p.user.uid, "gid": p.user.gid, "additionalGids": p.user.additional_gids},
            "args": p.args,
            "env": p.env,
            "cwd": p.cwd,
            "noNewPrivileges": p.no_new_privileges,
        }
        if caps is not None:
            proc["capabilities"] = {k: getattr(caps, k) for k in
                                    ("bounding", "effective", "permitted", "inheritable", "ambient")}
        linux: dict[str, Any] = {
            "namespaces": [{"type": ns.type, **({"path": ns.path} if ns.path else {})}
                           for ns in self.linux.namespaces],
            "maskedPaths": self.linux.masked_paths,
            "readonlyPaths": self.linux.readonly_paths,
            "devices": [{"path": d.path, "type": d.type, "major": d.major, "minor": d.minor,
                         "fileMode": d.file_mode, "uid": 0, "gid": 0} for d in self.linux.devices],
        }
        # What the device nodes above need, for runtimes that default to deny.
        allow = [{"allow": False, "access": "rwm"}]
        allow += [{"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": "rwm"}
                  for d in self.linux.devices]
        allow += [{"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
                  {"allow": True, "type": "c", "major": 136, "access": "rwm"}]
        linux["resources"] = {"devices": allow}
        if self.linux.uid_mappings:
            linux["uidMappings"] = [m.to_oci() for m in self.linux.uid_mappings]
            linux["gidMappings"] = [m.to_oci() for m in self.linux.gid_mappings]
        return {
            "ociVersion": "1.0.2",
            "process": proc,
            "root": {"path": root_path or self.root.path, "readonly": self.root.readonly},
            "hostname": self.hostname,
            "mounts": [{"destination": m.destination, "type": m.type, "source": m.source,
                        "options": m.options} for m in self.mounts],
            "linux": linux,
        }
