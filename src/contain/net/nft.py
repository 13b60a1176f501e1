"""contain's nftables table: forwarding, masquerade and published ports.

Everything lives in one table, `ip contain`; no other table is listed for
changes, flushed or edited, so Docker's, Podman's and firewalld's rules keep
working beside ours.  Layout:

    chain prerouting   nat hook prerouting (dstnat): fib daddr type local -> published
    chain output       nat hook output (dstnat):     fib daddr type local -> published
    chain published    one DNAT rule per published port, tagged "contain ctr=<id> ..."
    chain postrouting  nat hook postrouting (srcnat): per network, tagged "contain net=<id>":
                       masquerade leaving the subnet; masquerade 127.0.0.0/8 and
                       hairpin (DNATed from the subnet) sources entering the bridge
    chain forward      filter hook forward, policy accept: established and DNATed
                       traffic accepted, one network's bridge isolated from the others

Rules are found again by their comment and deleted by handle.  Changes are
serialized host-wide by a flock in /run/contain (the table is shared by every
state root on the host).  When the last rule goes, the table goes too and
net.ipv4.ip_forward is put back as it was found.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from typing import Optional, Sequence

import attrs

from ..errors import Conflict, RuntimeFailure
from ..storage.locks import FileLock

FAMILY, TABLE = "ip", "contain"
BRIDGE_GLOB = "cbr-*"  # every contain bridge (see ipam.bridge_name)
RUN_DIR = "/run/contain"
_FORWARD_RECORD = os.path.join(RUN_DIR, "ip_forward.orig")

_BASE = f"""
table {FAMILY} {TABLE} {{
    chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
    chain output {{ type nat hook output priority -100; policy accept; }}
    chain published {{ }}
    chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
    chain forward {{ type filter hook forward priority filter; policy accept; }}
}}
add rule {FAMILY} {TABLE} prerouting fib daddr type local jump published comment "contain base"
add rule {FAMILY} {TABLE} output fib daddr type local jump published comment "contain base"
add rule {FAMILY} {TABLE} forward ct state established,related accept comment "contain base"
add rule {FAMILY} {TABLE} forward ct status dnat accept comment "contain base"
"""


@attrs.frozen
class PortRule:
    """One published port: host_ip:host_port/proto -> address:port."""

    proto: str  # tcp | udp
    host_ip: str  # "" = every host address
    host_port: int
    address: str
    port: int

    def tag(self, container_id: str, root_tag: str) -> str:
        return f"contain ctr={container_id} root={root_tag} {self.proto} {self.host_ip or '*'} {self.host_port}"


@attrs.frozen
class Published:
    """A published port found in the table."""

    container_id: str
    root_tag: str
    proto: str
    host_ip: str
    host_port: int
    handle: int


def lock() -> FileLock:
    os.makedirs(RUN_DIR, mode=0o755, exist_ok=True)
    return FileLock(os.path.join(RUN_DIR, "nft.lock"))


def _nft(args: Sequence[str], script: Optional[str] = None) -> str:
    exe = shutil.which("nft") or "/usr/sbin/nft"
    try:
        proc = subprocess.run([exe, *args], input=script, capture_output=True, text=True,
                              timeout=30)
    except FileNotFoundError:
        raise RuntimeFailure("nftables", 0, "the nft command is missing (apt-get install nftables)") from None
    if proc.returncode != 0:
        raise RuntimeFailure("nftables", 0, proc.stderr.strip() or f"nft {' '.join(args)} failed")
    return proc.stdout


def _apply(script: str) -> None:
    """Apply a batch atomically (nft -f runs it as one transaction)."""
    _nft(["-f", "-"], script)


def _rules() -> Optional[list[dict]]:
    """Every rule of our table (chain, handle, comment), or None without the table."""
    try:
        out = _nft(["-j", "list", "table", FAMILY, TABLE])
    except RuntimeFailure as exc:
        if "No such file" in str(exc):
            return None
        raise
    items = json.loads(out).get("nftables", [])
    return [i["rule"] for i in items if "rule" in i]


def _quote(text: str) -> str:
    if '"' in text or "\\" in text:
        raise ValueError(f"unquotable nft text: {text!r}")
    return f'"{text}"'


def _ensure_table(rules: Optional[list[dict]]) -> list[dict]:
    if rules is None:
        enable_ip_forward()
        _apply(_BASE)
        rules = _rules() or []
    return rules


def enable_ip_forward() -> None:
    """Turn forwarding on, recording the host's setting to put back later."""
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        old = f.read().strip()
    if not os.path.exists(_FORWARD_RECORD):
        with open(_FORWARD_RECORD, "w") as f:
            f.write(old)
    if old != "1":
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")


def _drop_table_if_unused(rules: list[dict]) -> None:
    if any(r.get("comment") != "contain base" for r in rules):
        return
    with contextlib.suppress(RuntimeFailure):
        _nft(["delete", "table", FAMILY, TABLE])
    try:
        with open(_FORWARD_RECORD) as f:
            old = f.read().strip()
    except FileNotFoundError:
        return
    # Only put it back if no one else has turned it on meanwhile for their own
    # use; we cannot know, so follow the record (Docker never restores it).
    if old in ("0", "1"):
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write(old)
    os.unlink(_FORWARD_RECORD)


def _delete_rules(rules: list[dict], predicate) -> None:
    doomed = [r for r in rules if predicate(r.get("comment", ""))]
    if doomed:
        _apply("".join(f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}\n"
                       for r in doomed))


# ------------------------------------------------------------------ networks
def add_network(network_id: str, bridge: str, subnet: str, *, internal: bool = False) -> None:
    """Masquerade and forwarding rules of one network (idempotent)."""
    tag = _quote(f"contain net={network_id}")
    br = _quote(bridge)
    with lock().exclusive():
        rules = _ensure_table(_rules())
        if any(r.get("comment") == tag.strip('"') for r in rules):
            return
        lines = [
            # Docker's isolation: no forwarding from one contain network into another.
            f"add rule {FAMILY} {TABLE} forward iifname {br} oifname {_quote(BRIDGE_GLOB)} oifname != {br} drop comment {tag}",
            f"add rule {FAMILY} {TABLE} forward iifname {br} accept comment {tag}",
            # Host-originated DNAT from 127.0.0.1 leaves with a loopback source;
            # the container could not answer it without this.
            f"add rule {FAMILY} {TABLE} postrouting oifname {br} ip saddr 127.0.0.0/8 masquerade comment {tag}",
            # Hairpin: a container reaching a published port of the same bridge
            # would get the reply straight over the bridge, bypassing conntrack.
            f"add rule {FAMILY} {TABLE} postrouting oifname {br} ip saddr {subnet} ct status dnat masquerade comment {tag}",
        ]
        if internal:
            lines.insert(0, f"add rule {FAMILY} {TABLE} forward iifname {br} oifname != {br} drop comment {tag}")
        else:
            lines.append(f"add rule {FAMILY} {TABLE} postrouting ip saddr {subnet} oifname != {br} masquerade comment {tag}")
        _apply("\n".join(lines) + "\n")


def remove_network(network_id: str) -> None:
    """Remove a network's rules; the table goes when nothing of contain is left."""
    tag = f"contain net={network_id}"
    with lock().exclusive():
        rules = _rules()
        if rules is None:
            return
        _delete_rules(rules, lambda c: c == tag)
        _drop_table_if_unused(_rules() or [])


def has_network(network_id: str) -> bool:
    rules = _rules()
    return bool(rules) and any(r.get("comment") == f"contain net={network_id}" for r in rules)


# --------------------------------------------------------------------- ports
def published() -> list[Published]:
    """Every port any contain root publishes on this host."""
    found = []
    for r in _rules() or []:
        words = r.get("comment", "").split()
        if len(words) == 6 and words[0] == "contain" and words[1].startswith("ctr="):
            found.append(Published(words[1][4:], words[2][5:], words[3],
                                   "" if words[4] == "*" else words[4], int(words[5]),
                                   r["handle"]))
    return found


def _clash(a_ip: str, b_ip: str) -> bool:
    any_ip = ("", "0.0.0.0")
    return a_ip in any_ip or b_ip in any_ip or a_ip == b_ip


def check_free(wanted: Sequence[PortRule], existing: Optional[Sequence[Published]] = None) -> None:
    """Conflict if another container already publishes one of these ports."""
    existing = published() if existing is None else existing
    for w in wanted:
        for p in existing:
            if p.proto == w.proto and p.host_port == w.host_port and _clash(p.host_ip, w.host_ip):
                raise Conflict(f"port is already allocated: {w.host_ip or '0.0.0.0'}:{w.host_port}/{w.proto} "
                               f"(published by container {p.container_id[:12]})")


def publish(container_id: str, root_tag: str, ports: Sequence[PortRule]) -> None:
    """DNAT rules for the container's published ports, after a last check for clashes."""
    if not ports:
        return
    with lock().exclusive():
        _ensure_table(_rules())
        check_free(ports)
        lines = []
        for p in ports:
            match = f"ip daddr {p.host_ip} " if p.host_ip not in ("", "0.0.0.0") else ""
            lines.append(f"add rule {FAMILY} {TABLE} published {match}{p.proto} dport {p.host_port} "
                         f"dnat to {p.address}:{p.port} comment {_quote(p.tag(container_id, root_tag))}")
        _apply("\n".join(lines) + "\n")


def unpublish(container_id: str) -> None:
    """Remove the container's DNAT rules (idempotent)."""
    prefix = f"contain ctr={container_id} "
    with lock().exclusive():
        rules = _rules()
        if rules is None:
            return
        _delete_rules(rules, lambda c: c.startswith(prefix))
        _drop_table_if_unused(_rules() or [])


def table_exists() -> bool:
    return _rules() is not None

