"""/etc/hosts, /etc/hostname and /etc/resolv.conf of a container.

The files live in the container's directory and are bind-mounted over the
image's.  A bind mount pins the inode, so updates rewrite the file in place
(never replace it by rename), as Docker does.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from typing import Iterable, Sequence

HOSTS, HOSTNAME, RESOLV = "hosts", "hostname", "resolv.conf"
_LOCALHOST = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""
# Docker's fallback when the host names only loopback resolvers.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


def paths(container_dir: str) -> dict[str, str]:
    """Destination in the container -> file to bind-mount there."""
    return {"/etc/hosts": os.path.join(container_dir, HOSTS),
            "/etc/hostname": os.path.join(container_dir, HOSTNAME),
            "/etc/resolv.conf": os.path.join(container_dir, RESOLV)}


def hosts_text(own: Sequence[tuple[str, Sequence[str]]],
               peers: Iterable[tuple[str, Sequence[str]]] = ()) -> str:
    """The container's addresses with its names, then its peers' (ip, names)."""
    lines = [_LOCALHOST]
    for ip, names in list(own) + list(peers):
        if names:
            lines.append(f"{ip}\t{' '.join(dict.fromkeys(names))}\n")
    return "".join(lines)


@functools.lru_cache(maxsize=8)
def resolv_text(host_text: str) -> str:
    """The host's resolv.conf without loopback nameservers (unreachable from a
    container's own namespace), falling back to public resolvers as Docker does."""
    out, servers = [], 0
    for line in host_text.splitlines():
        words = line.split()
        if words and words[0] == "nameserver" and len(words) > 1:
            try:
                addr = ipaddress.ip_address(words[1].split("%")[0])
            except ValueError:
                continue
            if addr.is_loopback:
                continue
            servers += 1
        out.append(line)
    if servers == 0:
        out += [f"nameserver {ns}" for ns in FALLBACK_NAMESERVERS]
    return "\n".join(out).strip("\n") + "\n"


def host_resolv_conf(path: str = "/etc/resolv.conf") -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def write_in_place(path: str, text: str) -> None:
    """Rewrite a (possibly bind-mounted) file keeping its inode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = text.encode()
        os.write(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def write_all(container_dir: str, *, hostname: str, hosts: str, resolv: str) -> dict[str, str]:
    """Write the three files; returns paths() for the bind mounts."""
    where = paths(container_dir)
    write_in_place(where["/etc/hostname"], hostname + "\n")
    write_in_place(where["/etc/hosts"], hosts)
    write_in_place(where["/etc/resolv.conf"], resolv)
    return where
