"""A container's place on the network: the one interface Container uses.

    prepared = prepare(root, cid, name=..., hostname=..., network_mode="bridge", ports={80: 9000})
    spawn(..., join_ns_fds=[prepared.netns_fd])  # with Namespace("network", path=<that fd>)
    prepared.close()                             # the container now holds the namespace
    ...
    release(root, cid)                           # on exit/stop/remove; idempotent

prepare() does all network work before the container exists: a fresh network
namespace with lo up and the veth pair, mostly made ahead by a background
thread (pool.py), then the address, the default route, the bridge port, DNAT
rules for published ports and the hosts/hostname/resolv.conf files.  The
container only joins the namespace.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import hashlib
import os
import secrets
import socket
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import attrs

from .._jsonfile import read_json
from .._root import Root, RootArg, get_root
from ..errors import Conflict, InvalidArgument, NotFound
from . import hosts, ipam, links, nft, pool

PortsArg = Union[None, Mapping[Any, Any], Sequence[Any]]
_PROTOS = ("tcp", "udp")


@attrs.frozen
class PortBinding:
    """container port/proto published at host_ip:host_port (None: pick a free one)."""

    port: int
    proto: str = "tcp"
    host_ip: str = ""
    host_port: Optional[int] = None

    @property
    def key(self) -> str:
        return f"{self.port}/{self.proto}"


@attrs.define
class Prepared:
    """What the container needs to start on its network."""

    netns_fd: Optional[int]  # join this (None: a fresh netns for "none", the host's for "host")
    settings: dict  # NetworkSettings, shaped like `docker inspect`
    files: dict[str, str]  # path in the container -> host file to bind-mount there
    container_id: str = ""

    @property
    def netns_path(self) -> Optional[str]:
        """A path naming the namespace while this process holds the fd."""
        return None if self.netns_fd is None else f"/proc/{os.getpid()}/fd/{self.netns_fd}"

    def close(self) -> None:
        """Drop our hold on the namespace (the container keeps it alive)."""
        if self.netns_fd is not None:
            os.close(self.netns_fd)
            self.netns_fd = None

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------ ports
def _port_key(key: Any) -> tuple[int, str]:
    text = str(key)
    port_text, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in _PROTOS:
        raise InvalidArgument(f"unsupported protocol in port {text!r} (tcp or udp)")
    return _port_number(port_text, text), proto


def _port_number(text: Any, whole: Any) -> int:
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise InvalidArgument(f"invalid port {whole!r}") from None
    if not 0 < n < 65536:
        raise InvalidArgument(f"port out of range: {whole!r}")
    return n


def _host_side(value: Any, whole: Any) -> list[tuple[str, Optional[int]]]:
    if value is None or value == "":
        return [("", None)]
    if isinstance(value, list):
        return [b for v in value for b in _host_side(v, whole)]
    if isinstance(value, tuple):
        ip = str(value[0]) if value else ""
        port = value[1] if len(value) > 1 else None
        return [(ip, None if port in (None, "") else _port_number(port, whole))]
    return [("", _port_number(value, whole))]


def _parse_text(text: str) -> PortBinding:
    spec, _, proto = text.partition("/")
    parts = spec.rsplit(":", 2)
    if len(parts) == 1:
        ip, host, cport = "", "", parts[0]
    elif len(parts) == 2:
        ip, (host, cport) = "", parts
    else:
        ip, host, cport = parts
    if "-" in host or "-" in cport:
        raise InvalidArgument(f"port ranges are not supported: {text!r}")
    port, proto = _port_key(f"{cport}/{proto or 'tcp'}")
    return PortBinding(port, proto, ip.strip("[]"), _port_number(host, text) if host else None)


def parse_ports(ports: PortsArg = None, publish_all: bool = False,
                exposed_ports: Iterable[Any] = ()) -> list[PortBinding]:
    """docker-py's and docker's port forms -> bindings.

    {80: 9000}, {"80/tcp": 9000}, {"80/udp": ("127.0.0.1", 9000)}, {80: None},
    {80: [9000, 9001]}; ["9000:80", "127.0.0.1:9000:80/udp", "127.0.0.1::80", "80"].
    publish_all adds a random host port for every exposed port not yet published.
    """
    out: list[PortBinding] = []
    if isinstance(ports, Mapping):
        for key, value in ports.items():
            port, proto = _port_key(key)
            out += [PortBinding(port, proto, ip, hp) for ip, hp in _host_side(value, key)]
    elif ports:
        for item in ports:
            if isinstance(item, int):
                out.append(PortBinding(_port_number(item, item)))
            else:
                out.append(_parse_text(str(item)))
    if publish_all:
        have = {b.key for b in out}
        for key in exposed_ports:
            port, proto = _port_key(key)
            if f"{port}/{proto}" not in have:
                out.append(PortBinding(port, proto))
    for b in out:
        if b.host_ip:
            try:
                socket.inet_pton(socket.AF_INET, b.host_ip)
            except OSError:
                raise InvalidArgument(f"invalid host address for a published port: {b.host_ip!r} "
                                      "(IPv4 only)") from None
    return out


def bind_probe(proto: str, host_ip: str, port: int) -> int:
    """Bind host_ip:port on the host as the container's port would; returns the port."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        if proto == "tcp":
            # TIME_WAIT leftovers are no conflict; a listener still is.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip or "0.0.0.0", port))
        except OSError as exc:
            where = f"{host_ip or '0.0.0.0'}:{port}/{proto}"
            if exc.errno == _errno.EADDRINUSE:
                raise Conflict(f"Bind for {where} failed: port is already allocated") from None
            if exc.errno == _errno.EADDRNOTAVAIL:
                raise InvalidArgument(f"cannot publish {where}: {host_ip} is not an address of this host") from None
            if exc.errno == _errno.EACCES:
                raise InvalidArgument(f"cannot publish {where}: an ordinary user cannot bind ports "
                                      "below net.ipv4.ip_unprivileged_port_start") from None
            raise Conflict(f"cannot publish {where}: {exc.strerror}") from None
        return s.getsockname()[1]


def _resolve_ports(bindings: Sequence[PortBinding]) -> list[PortBinding]:
    """Fixed ports checked free on the host and in contain's table; free ones picked for the rest."""
    if not bindings:
        return []  # no nft round trip on the common path
    existing = nft.published()
    fixed = [b for b in bindings if b.host_port is not None]
    seen: list[nft.PortRule] = []
    for b in fixed:
        rule = nft.PortRule(b.proto, b.host_ip, b.host_port, "", 0)
        nft.check_free([rule], existing)
        try:
            nft.check_free([rule], [nft.Published("", "", r.proto, r.host_ip, r.host_port, 0) for r in seen])
        except Conflict:
            raise Conflict(f"port {b.host_ip or '0.0.0.0'}:{b.host_port}/{b.proto} is published twice") from None
        bind_probe(b.proto, b.host_ip, b.host_port)
        seen.append(rule)
    taken = {(p.proto, p.host_port) for p in existing} | {(r.proto, r.host_port) for r in seen}
    out = []
    for b in bindings:
        if b.host_port is None:
            for _ in range(50):
                port = bind_probe(b.proto, b.host_ip, 0)
                if (b.proto, port) not in taken:
                    break
            else:
                raise Conflict("no free host port found")
            taken.add((b.proto, port))
            b = attrs.evolve(b, host_port=port)
        out.append(b)
    return out


def _ports_settings(bindings: Sequence[Mapping[str, Any]], exposed: Iterable[Any]) -> dict:
    ports: dict[str, Any] = {}
    for key in exposed:
        port, proto = _port_key(key)
        ports.setdefault(f"{port}/{proto}", None)
    for b in bindings:
        key = f"{b['port']}/{b['proto']}"
        if ports.get(key) is None:
            ports[key] = []
        ports[key].append({"HostIp": b["host_ip"] or "0.0.0.0", "HostPort": str(b["host_port"])})
    return ports


# -------------------------------------------------------------- networks
def _root_tag(r: Root) -> str:
    # Tags nft rules with their root, so one root's repair spares another's.
    return hashlib.sha256(os.path.realpath(r.path).encode()).hexdigest()[:8]


def ensure_network(r: Root, name: str) -> ipam.NetworkRecord:
    """The network's record with its bridge and rules in place (the default one made on demand)."""
    try:
        record = ipam.load(r.path, name)
    except NotFound:
        if name != ipam.DEFAULT_NETWORK:
            raise NotFound(f"network {name} not found") from None
        record, _ = ipam.create(r.path, name, exist_ok=True, host_networks=links.host_networks())
    with ipam.locked(r.path, name):
        # Under the network's lock: a second starter waits until the bridge
        # has its address and rules instead of racing past a half-made one.
        if not links.link_exists(record.bridge):
            links.ensure_bridge(record.bridge, record.gateway, record.prefixlen, links.host_mtu())
            nft.add_network(record.id, record.bridge, record.subnet, internal=record.internal)
    return record


def _user_defined(name: str) -> bool:
    return name not in ipam.PREDEFINED


def _dns_names(cid: str, entry: Mapping[str, Any]) -> list[str]:
    names = [entry.get("Name") or "", *entry.get("Aliases", ()), cid[:12]]
    return [n for n in dict.fromkeys(names) if n]


def refresh_hosts(r: Root, cid: str) -> None:
    """Rewrite the container's /etc/hosts from the networks it is on (if it has one)."""
    path = hosts.paths(r.container_dir(cid))["/etc/hosts"]
    if not os.path.exists(path):
        return
    text = _hosts_text(r, cid, ipam.attachments(r.path, cid))
    if text is not None:
        hosts.write_in_place(path, text)


def _hosts_text(r: Root, cid: str, mine: Mapping[str, Mapping[str, Any]]) -> Optional[str]:
    """/etc/hosts for a container on the networks `mine` (name -> entry); None if on none."""
    own, peers = [], []
    for name, entry in mine.items():
        names = [entry.get("Hostname") or cid[:12]]
        if _user_defined(name):
            names += _dns_names(cid, entry)
            for other, peer in ipam.endpoints(r.path, name).items():
                if other != cid:
                    peers.append((peer["IPAddress"], _dns_names(other, peer)))
        own.append((entry["IPAddress"], names))
    if not own:
        return None
    return hosts.hosts_text(own, peers)


def _refresh_network(r: Root, name: str, skip: str = "") -> None:
    if not _user_defined(name):
        return  # the default network resolves no names, as Docker's
    for cid in ipam.endpoints(r.path, name):
        if cid != skip:
            refresh_hosts(r, cid)


def _endpoint_settings(record: ipam.NetworkRecord, entry: Mapping[str, Any], cid: str) -> dict:
    user = _user_defined(record.name)
    return {
        "IPAMConfig": None, "Links": None,
        "Aliases": list(entry.get("Aliases", ())) or None if user else None,
        "MacAddress": entry["MacAddress"], "DriverOpts": None,
        "NetworkID": record.id, "EndpointID": entry.get("EndpointID", ""),
        "Gateway": entry["Gateway"], "IPAddress": entry["IPAddress"],
        "IPPrefixLen": entry["IPPrefixLen"], "IPv6Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "DNSNames": _dns_names(cid, entry) if user else None,
    }


def _empty_settings(mode: str, exposed: Iterable[Any] = ()) -> dict:
    return {"Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
            "Ports": _ports_settings([], exposed) if mode != "host" else {},
            "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
            "MacAddress": "", "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "Networks": {mode: {"IPAMConfig": None, "Links": None, "Aliases": None,
                                "MacAddress": "", "NetworkID": "", "EndpointID": "",
                                "Gateway": "", "IPAddress": "", "IPPrefixLen": 0}}}


def settings(root: RootArg, cid: str) -> dict:
    """The container's current NetworkSettings (after connect/disconnect too)."""
    r = get_root(root)
    return _settings(r, cid, ipam.attachments(r.path, cid))


def _settings(r: Root, cid: str, mine: Mapping[str, Mapping[str, Any]],
              records: Optional[Mapping[str, ipam.NetworkRecord]] = None) -> dict:
    out = _empty_settings("", ())
    out["Networks"] = {}
    for name, entry in sorted(mine.items(), key=lambda kv: kv[1].get("Index", 0)):
        record = (records or {}).get(name) or ipam.load(r.path, name)
        ep = _endpoint_settings(record, entry, cid)
        out["Networks"][name] = ep
        if entry.get("Index", 0) == 0:
            out["Ports"] = _ports_settings(entry.get("Ports", ()), entry.get("ExposedPorts", ()))
        if name == ipam.DEFAULT_NETWORK:
            # Docker fills the top-level fields for the default bridge only.
            out.update(Bridge=record.bridge, EndpointID=ep["EndpointID"], Gateway=ep["Gateway"],
                       IPAddress=ep["IPAddress"], IPPrefixLen=ep["IPPrefixLen"],
                       MacAddress=ep["MacAddress"])
    return out


# ------------------------------------------------------------- lifecycle
def prepare(root: RootArg, container_id: str, *, name: str, hostname: str,
            network_mode: Optional[str], aliases: Sequence[str] = (), ports: PortsArg = None,
            publish_all: bool = False, exposed_ports: Iterable[Any] = ()) -> Prepared:
    """Everything the container's network needs, done before it starts.

    Raises Conflict (a host port in use, naming it) before anything is made,
    NotFound for an unknown network.  On any failure nothing is left behind.
    """
    r = get_root(root)
    cdir = r.container_dir(container_id)
    if not os.path.isdir(cdir):  # it usually exists: no mkdir on the start path
        os.makedirs(cdir, mode=0o700, exist_ok=True)
    mode = network_mode or "none"
    exposed = list(exposed_ports)
    bindings = parse_ports(ports, publish_all, exposed)
    resolv = hosts.resolv_text(hosts.host_resolv_conf())
    if mode in ("none", "host"):
        if mode == "host":
            try:
                with open("/etc/hosts") as f:
                    host_hosts = f.read()
            except OSError:
                host_hosts = hosts.hosts_text([])
            files = hosts.write_all(cdir, hostname=hostname, hosts=host_hosts,
                                    resolv=hosts.host_resolv_conf() or resolv)
        else:
            files = hosts.write_all(cdir, hostname=hostname, hosts=hosts.hosts_text([]), resolv=resolv)
            # A namespace made ahead (pool.py), else the child makes one.
            if not r.rootless:
                return Prepared(pool.take_bare(), _empty_settings(mode, exposed), files, container_id)
            userns_fd = r.shared_userns()
            if userns_fd is not None:  # one of the user namespace the container joins
                return Prepared(pool.take_bare_in(userns_fd), _empty_settings(mode, exposed), files,
                                container_id)
        return Prepared(None, _empty_settings(mode, exposed), files, container_id)
    if mode.startswith("container:"):
        raise InvalidArgument("network mode container:<id> is not supported yet")

    release(r, container_id, wait=True)  # what an earlier start of this container left
    record = ensure_network(r, mode)
    try:
        resolved = _resolve_ports(bindings)  # Conflict here: nothing made yet
    except Conflict:
        # The holder may be a container that died without releasing (a
        # crashed caller): repair this root once and look again.
        if not repair(r):
            raise
        resolved = _resolve_ports(bindings)
    port_records = [attrs.asdict(b) for b in resolved]
    entry = {"Name": name, "Hostname": hostname, "Aliases": list(aliases) if _user_defined(mode) else [],
             "HostVeth": "", "Index": 0, "Ifname": "eth0",
             "EndpointID": secrets.token_hex(32), "Ports": port_records,
             "ExposedPorts": [f"{p}/{q}" for p, q in (_port_key(k) for k in exposed)]}
    fd: Optional[int] = None
    pair: Optional[links.FreshPair] = None
    try:
        mtu = links.host_mtu()
        # A namespace with lo up and the veth pair made ahead (pool.py): only
        # what depends on this container is left to do.  The host end keeps
        # the pool's name.
        pair = pool.take()
        entry["HostVeth"] = pair.host_ifname
        entry = ipam.allocate(r.path, mode, container_id, entry, record=record)
        fd = links.attach_pair(pair, alias=f"contain ctr={container_id}", bridge=record.bridge,
                               address=entry["IPAddress"], prefixlen=entry["IPPrefixLen"],
                               mac=entry["MacAddress"], mtu=mtu, gateway=entry["Gateway"])
        if resolved:
            nft.publish(container_id, _root_tag(r), [
                nft.PortRule(b.proto, b.host_ip, b.host_port or 0, entry["IPAddress"], b.port)
                for b in resolved])
        mine = {mode: entry}
        files = hosts.write_all(cdir, hostname=hostname, hosts=_hosts_text(r, container_id, mine),
                                resolv=resolv)
        _refresh_network(r, mode, skip=container_id)
    except BaseException:
        if fd is not None:
            os.close(fd)
        elif pair is not None:
            pair.close()  # (again, should attach_pair have closed it: harmless)
        with contextlib.suppress(Exception):
            release(r, container_id, wait=True)
        raise
    return Prepared(fd, _settings(r, container_id, mine, {mode: record}), files, container_id)


def activate(root: RootArg, container_id: str, pid: int) -> None:
    """Nothing to do once the container runs: the namespace was ready before.
    Kept so callers have one place to hook should that change."""


def release(root: RootArg, container_id: str, *, wait: bool = False) -> None:
    """Take away the container's veths, published ports, addresses and
    hosts entries.  Idempotent; works whether or not the container still runs.

    The veths usually vanish with the container's namespace; any still there
    are deleted in the background unless wait=True.
    """
    r = get_root(root)
    attached = ipam.attachments(r.path, container_id)
    had_ports = False
    for name, entry in attached.items():
        had_ports = had_ports or bool(entry.get("Ports"))
        if wait:
            links.delete_link(entry["HostVeth"])
        else:
            links.delete_link_soon(entry["HostVeth"])
        ipam.free(r.path, name, container_id)
    if had_ports:
        nft.unpublish(container_id)
    for name in attached:
        _refresh_network(r, name)


def _container_busy_or_running(r: Root, cid: str) -> bool:
    """True while the container runs or another process holds its lock (starting it)."""
    cdir = r.container_dir(cid)
    try:
        fd = os.open(cdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # Container._locked
    except FileNotFoundError:
        fd = -1
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
        state = read_json(os.path.join(cdir, "state.json"))
        if not isinstance(state, dict):
            return False
        st = state.get("State", {})
        if not st.get("Running"):
            return False
        return _pid_alive(st.get("Pid", 0), state.get("_contain", {}).get("pid_start"))
    finally:
        if fd >= 0:
            os.close(fd)


def _pid_alive(pid: int, start: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return start is None or int(data[data.rindex(b")") + 2:].split()[19]) == start


def repair(root: RootArg) -> list[str]:
    """Release what containers that no longer run left behind (after a crash
    of their caller or monitor); returns the container ids repaired."""
    r = get_root(root)
    fixed: set[str] = set()
    attached: set[str] = set()
    for name in ipam.names(r.path):
        with contextlib.suppress(NotFound):
            attached.update(ipam.endpoints(r.path, name))
    for cid in attached:
        if not _container_busy_or_running(r, cid):
            release(r, cid, wait=True)
            fixed.add(cid)
    # Rules whose container holds no endpoint any more (a crash between
    # publishing and recording, or a record lost with its root's files).
    tag = _root_tag(r)
    live = attached - fixed
    for cid in {p.container_id for p in nft.published() if p.root_tag == tag} - live:
        nft.unpublish(cid)
        fixed.add(cid)
    for name in ipam.names(r.path):
        with contextlib.suppress(NotFound):
            record = ipam.load(r.path, name)
            if ipam.endpoints(r.path, name) and not links.link_exists(record.bridge):
                ensure_network(r, name)
    # Ready-made namespaces of a pool whose process is gone (host-wide: they
    # belong to no root).
    pool.sweep_leftovers()
    return sorted(fixed)


# ------------------------------------------------- running containers (connect)
def connect(root: RootArg, container_id: str, pid: int, network: str, *, name: str,
            hostname: str, aliases: Sequence[str] = ()) -> dict:
    """Attach a running container (its process `pid`) to another network as ethN.

    No default route is added: it stays on the first network, as with Docker.
    Returns the endpoint entry.
    """
    r = get_root(root)
    record = ensure_network(r, network)
    mine = ipam.attachments(r.path, container_id)
    if network in mine:
        raise Conflict(f"container {container_id[:12]} is already attached to network {network}")
    used = {e.get("Index", 0) for e in mine.values()}
    index = next(i for i in range(len(used) + 1) if i not in used)
    try:
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Conflict(f"container {container_id[:12]} is not running") from None
    entry = {"Name": name, "Hostname": hostname,
             "Aliases": list(aliases) if _user_defined(network) else [],
             "HostVeth": ipam.veth_name(container_id, index), "Index": index,
             "Ifname": f"eth{index}", "EndpointID": secrets.token_hex(32), "Ports": []}
    try:
        entry = ipam.allocate(r.path, network, container_id, entry)
        try:
            fd = links.add_veth(target, host_ifname=entry["HostVeth"], ifname=entry["Ifname"],
                                bridge=record.bridge, address=entry["IPAddress"],
                                prefixlen=entry["IPPrefixLen"], mac=entry["MacAddress"],
                                mtu=links.host_mtu(), gateway=None)
            os.close(fd)
        except BaseException:
            ipam.free(r.path, network, container_id)
            raise
    finally:
        os.close(target)
    refresh_hosts(r, container_id)
    _refresh_network(r, network, skip=container_id)
    return entry


def disconnect(root: RootArg, container_id: str, network: str) -> None:
    """Detach the container from one network (deleting the host end of its veth
    takes the container's end along)."""
    r = get_root(root)
    ipam.load(r.path, network)  # NotFound for an unknown network
    entry = ipam.endpoints(r.path, network).get(container_id)
    if entry is None:
        raise NotFound(f"container {container_id[:12]} is not connected to network {network}")
    links.delete_link(entry["HostVeth"])
    ipam.free(r.path, network, container_id)
    if entry.get("Ports"):
        nft.unpublish(container_id)
    refresh_hosts(r, container_id)
    _refresh_network(r, network)


def create_network(root: RootArg, name: str, *, subnet: Optional[str] = None,
                   gateway: Optional[str] = None, labels: Optional[Mapping[str, str]] = None,
                   internal: bool = False) -> ipam.NetworkRecord:
    """Define a network and make its bridge and rules."""
    r = get_root(root)
    record, _ = ipam.create(r.path, name, subnet=subnet, gateway=gateway, labels=dict(labels or {}),
                            internal=internal,
                            host_networks=links.host_networks() if subnet is None else ())
    try:
        ensure_network(r, name)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_network(r, name, force=True)
        raise
    return record


def remove_network(root: RootArg, name: str, *, force: bool = False) -> None:
    """Delete a network's bridge, rules and record; with force, detach its containers first."""
    r = get_root(root)
    record = ipam.load(r.path, name)
    attached = ipam.endpoints(r.path, name)
    if attached and not force:
        raise Conflict(f"network {name} has active endpoints: "
                       + ", ".join(e.get("Name") or cid[:12] for cid, e in attached.items()))
    for cid in attached:
        with contextlib.suppress(NotFound):
            disconnect(r, cid, name)
    links.delete_link(record.bridge)
    nft.remove_network(record.id)
    ipam.delete(r.path, name)
