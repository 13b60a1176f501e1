"""Network records and address allocation, persisted under <root>/networks/.

<root>/networks/<name>/network.json   the network's definition (subnet, gateway, bridge)
<root>/networks/<name>/endpoints.json  who holds which address, with what names
<root>/networks/<name>/lock            flock serializing every change of endpoints.json
<root>/networks/.lock                  flock for creating/removing networks (subnet choice)

Files are replaced by rename, so a reader never sees half a file, and every
read-modify-write happens under the flock, so two processes never hand out
one address twice.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import time
from typing import Any, Iterable, Iterator, Optional

import attrs

from ..errors import Conflict, InvalidArgument, NotFound
from .._jsonfile import write_json as _write_json
from ..storage.locks import FileLock

DEFAULT_NETWORK = "bridge"
PREDEFINED = ("bridge", "host", "none")
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")


def _candidates() -> Iterator[ipaddress.IPv4Network]:
    """Default pools: 10.88/16 (as podman), Docker's 172.17-31/16, then 192.168.x/20."""
    yield ipaddress.IPv4Network("10.88.0.0/16")
    for second in range(17, 32):
        yield ipaddress.IPv4Network(f"172.{second}.0.0/16")
    for third in range(0, 256, 16):
        yield ipaddress.IPv4Network(f"192.168.{third}.0/20")
    for second in range(89, 100):
        yield ipaddress.IPv4Network(f"10.{second}.0.0/16")


@attrs.frozen
class NetworkRecord:
    """One network's definition."""

    name: str
    id: str
    subnet: str
    gateway: str
    bridge: str
    created: str
    labels: dict = attrs.field(factory=dict)
    internal: bool = False

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def networks_dir(root_path: str) -> str:
    return os.path.join(root_path, "networks")


def _net_dir(root_path: str, name: str) -> str:
    return os.path.join(networks_dir(root_path), name)


def _root_lock(root_path: str) -> FileLock:
    os.makedirs(networks_dir(root_path), mode=0o711, exist_ok=True)
    return FileLock(os.path.join(networks_dir(root_path), ".lock"))


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidArgument(f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name


def names(root_path: str) -> list[str]:
    """Names of the networks defined in this root."""
    base = networks_dir(root_path)
    try:
        entries = os.listdir(base)
    except FileNotFoundError:
        return []
    return sorted(n for n in entries if os.path.exists(os.path.join(base, n, "network.json")))


def load(root_path: str, name: str) -> NetworkRecord:
    try:
        with open(os.path.join(_net_dir(root_path, name), "network.json")) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise NotFound(f"network {name} not found") from None
    return NetworkRecord(**data)


def _taken(root_path: str, host: Iterable[ipaddress.IPv4Network]) -> list[ipaddress.IPv4Network]:
    taken = list(host)
    for other in names(root_path):
        with contextlib.suppress(NotFound):
            taken.append(load(root_path, other).network)
    return taken


def choose_subnet(taken: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first candidate pool overlapping nothing in `taken`."""
    taken = list(taken)
    for cand in _candidates():
        if not any(cand.overlaps(t) for t in taken):
            return cand
    raise Conflict("no free subnet left in the default pools; give subnet= explicitly")


def create(root_path: str, name: str, *, subnet: Optional[str] = None,
           gateway: Optional[str] = None, labels: Optional[dict] = None,
           internal: bool = False, host_networks: Iterable[ipaddress.IPv4Network] = (),
           exist_ok: bool = False) -> tuple[NetworkRecord, bool]:
    """Define a network; returns (record, created).  host_networks are the
    host's routes and addresses, which a chosen subnet must not overlap."""
    check_name(name)
    with _root_lock(root_path).exclusive():
        with contextlib.suppress(NotFound):
            existing = load(root_path, name)
            if exist_ok:
                return existing, False
            raise Conflict(f"network with name {name} already exists")
        if subnet is None:
            net = choose_subnet(_taken(root_path, host_networks))
        else:
            try:
                net = ipaddress.IPv4Network(subnet, strict=True)
            except ValueError as exc:
                raise InvalidArgument(f"invalid subnet {subnet!r}: {exc}") from None
            if net.prefixlen > 30:
                raise InvalidArgument(f"subnet {subnet} is too small (at most /30)")
            for other in names(root_path):
                with contextlib.suppress(NotFound):
                    if load(root_path, other).network.overlaps(net):
                        raise Conflict(f"subnet {net} overlaps network {other}")
        if gateway is None:
            gw = net.network_address + 1
        else:
            try:
                gw = ipaddress.IPv4Address(gateway)
            except ValueError as exc:
                raise InvalidArgument(f"invalid gateway {gateway!r}: {exc}") from None
            if gw not in net or gw in (net.network_address, net.broadcast_address):
                raise InvalidArgument(f"gateway {gateway} is not a host address of {net}")
        nid = secrets.token_hex(32)
        record = NetworkRecord(name=name, id=nid, subnet=str(net), gateway=str(gw),
                               bridge=bridge_name(nid), created=_now(),
                               labels=dict(labels or {}), internal=internal)
        d = _net_dir(root_path, name)
        os.makedirs(d, mode=0o711, exist_ok=True)
        _write_json(os.path.join(d, "endpoints.json"), {"next": 0, "endpoints": {}})
        _write_json(os.path.join(d, "network.json"), attrs.asdict(record))
        return record, True


def delete(root_path: str, name: str) -> None:
    """Forget a network (the caller has taken its bridge and rules away)."""
    d = _net_dir(root_path, name)
    with _root_lock(root_path).exclusive():
        with _lock(root_path, name).exclusive():
            # network.json goes first: a half-deleted network is no network.
            for f in ("network.json", "endpoints.json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(d, f))
        # The lock file stays (see storage.locks): removing it under a waiter
        # would let two holders in.  The directory is harmless and reused.


def bridge_name(network_id: str) -> str:
    # IFNAMSIZ allows 15 characters; the id makes names unique across roots.
    return "cbr-" + network_id[:11]


def veth_name(container_id: str, index: int) -> str:
    return f"cve{container_id[:11]}{index:x}"


def mac_for(ip: str) -> str:
    """Docker's scheme: 02:42 followed by the IPv4 address (locally administered)."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


# ---------------------------------------------------------------- endpoints
def _lock(root_path: str, name: str) -> FileLock:
    return FileLock(os.path.join(_net_dir(root_path, name), "lock"))


def _read_endpoints(root_path: str, name: str) -> dict:
    try:
        with open(os.path.join(_net_dir(root_path, name), "endpoints.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        raise NotFound(f"network {name} not found") from None


@contextlib.contextmanager
def locked(root_path: str, name: str) -> Iterator[None]:
    """Hold a network's allocation lock (for changes that must see a stable set of peers)."""
    if not os.path.isdir(_net_dir(root_path, name)):
        raise NotFound(f"network {name} not found")
    with _lock(root_path, name).exclusive():
        yield


def endpoints(root_path: str, name: str) -> dict[str, dict]:
    """container id -> endpoint entry (IPAddress, MacAddress, Name, Aliases, ...)."""
    return dict(_read_endpoints(root_path, name)["endpoints"])


def allocate(root_path: str, name: str, container_id: str, entry: dict,
             address: Optional[str] = None, record: Optional[NetworkRecord] = None) -> dict:
    """Give the container an address on the network; returns the stored entry.

    The entry gets IPAddress, IPPrefixLen, Gateway and MacAddress.  Addresses
    are handed out round-robin so a just-freed one is not reused at once (a
    peer's ARP cache may still hold it).  `record` spares reading the
    network's definition again when the caller has it.
    """
    if record is None or record.name != name:
        record = load(root_path, name)
    net = record.network
    with locked(root_path, name):
        data = _read_endpoints(root_path, name)
        eps = data["endpoints"]
        if container_id in eps:
            raise Conflict(f"container {container_id[:12]} is already attached to network {name}")
        used = {e["IPAddress"] for e in eps.values()} | {record.gateway}
        if address is not None:
            if ipaddress.IPv4Address(address) not in net or address in used:
                raise Conflict(f"address {address} is not free on network {name}")
            ip = address
        else:
            first = int(net.network_address) + 1
            size = net.num_addresses - 2  # without network and broadcast
            start = data.get("next", 0) % size
            ip = None
            for step in range(size):
                cand = str(ipaddress.IPv4Address(first + (start + step) % size))
                if cand not in used:
                    ip = cand
                    data["next"] = (start + step + 1) % size
                    break
            if ip is None:
                raise Conflict(f"no free address left on network {name} ({net})")
        stored = dict(entry, IPAddress=ip, IPPrefixLen=net.prefixlen,
                      Gateway=record.gateway, MacAddress=mac_for(ip))
        eps[container_id] = stored
        _write_json(os.path.join(_net_dir(root_path, name), "endpoints.json"), data)
        return stored


def update(root_path: str, name: str, container_id: str, **changes: Any) -> None:
    with locked(root_path, name):
        data = _read_endpoints(root_path, name)
        if container_id in data["endpoints"]:
            data["endpoints"][container_id].update(changes)
            _write_json(os.path.join(_net_dir(root_path, name), "endpoints.json"), data)


def free(root_path: str, name: str, container_id: str) -> Optional[dict]:
    """Release the container's address; returns its entry (None if it had none)."""
    try:
        with locked(root_path, name):
            data = _read_endpoints(root_path, name)
            entry = data["endpoints"].pop(container_id, None)
            if entry is not None:
                _write_json(os.path.join(_net_dir(root_path, name), "endpoints.json"), data)
            return entry
    except NotFound:
        return None


def attachments(root_path: str, container_id: str) -> dict[str, dict]:
    """network name -> entry, for every network the container is on."""
    found = {}
    for name in names(root_path):
        with contextlib.suppress(NotFound):
            entry = endpoints(root_path, name).get(container_id)
            if entry is not None:
                found[name] = entry
    return found
