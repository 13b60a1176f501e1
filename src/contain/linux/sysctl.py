"""Which sysctls a container may set: only those its own namespaces scope.

A sysctl outside the container's namespaces (kernel.core_pattern,
vm.overcommit_memory, ...) would change the host; CRI-O's CVE-2022-0811
let a crafted value ("1+kernel.core_pattern=|/evil") smuggle one in.  So:
keys are checked against Docker's (runc's) namespaced list, names and
values against a strict alphabet, and the result is a list of
(/proc/sys path, value) pairs written by the native side inside the new
namespaces (after /proc is mounted, before /proc/sys is made read-only).
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

from ..errors import InvalidArgument

# IPC namespace (runc validate.go).
IPC_SYSCTLS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
})
IPC_PREFIXES = ("fs.mqueue.",)
UTS_SYSCTLS = frozenset({"kernel.domainname", "kernel.hostname"})
NET_PREFIX = "net."

_KEY = re.compile(r"[a-z0-9_][a-z0-9_\-]*(\.[a-z0-9_][a-z0-9_\-]*)+", re.I)
_MAX_VALUE = 4096
# Numbers, lists ("250 32000 32 128", "8080,9148"), ranges and names
# ("cubic", "fq_codel"); nothing that could be read as a separator of a
# second assignment ("+", "=", newline).
_VALUE = re.compile(r"[A-Za-z0-9 \t,.:_/\-]*")


def _key(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidArgument(f"invalid sysctl name: {name!r}")
    key = name.replace("/", ".")
    if not _KEY.fullmatch(key):
        raise InvalidArgument(f"invalid sysctl name: {name!r}")
    return key


def _value(key: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidArgument(f"sysctl {key}: value must be a string or an integer, not {value!r}")
    text = str(value)
    if len(text) > _MAX_VALUE or not _VALUE.fullmatch(text):
        raise InvalidArgument(f"sysctl {key}: invalid value {text!r}")
    return text


def check_sysctls(sysctls: Optional[Mapping[str, object]], *, host_network: bool = False,
                  host_ipc: bool = False, host_uts: bool = False) -> list[tuple[str, str]]:
    """Validate docker-py's `sysctls={"net.ipv4.ip_forward": "1"}`; returns
    [("/proc/sys/net/ipv4/ip_forward", "1"), ...] in the given order.

    Raises InvalidArgument for a sysctl the container's namespaces do not
    scope (or whose namespace is the host's: net.* with network_mode=host)."""
    if not sysctls:
        return []
    if not isinstance(sysctls, Mapping):
        raise InvalidArgument("sysctls must be a mapping of name to value")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in sysctls.items():
        key = _key(name)
        if key in seen:
            raise InvalidArgument(f"sysctl {key} given twice")
        seen.add(key)
        if key in IPC_SYSCTLS or key.startswith(IPC_PREFIXES):
            if host_ipc:
                raise InvalidArgument(f"sysctl {key} is not allowed with the host's IPC namespace")
        elif key in UTS_SYSCTLS:
            if host_uts:
                raise InvalidArgument(f"sysctl {key} is not allowed with the host's UTS namespace")
        elif key.startswith(NET_PREFIX):
            if host_network:
                raise InvalidArgument(f"sysctl {key} is not allowed with network_mode=host")
        else:
            raise InvalidArgument(
                f"sysctl {key} is not namespaced: it would change the host "
                "(allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, "
                "kernel.hostname, kernel.domainname)")
        out.append(("/proc/sys/" + key.replace(".", "/"), _value(key, value)))
    return out


__all__ = ["check_sysctls"]
