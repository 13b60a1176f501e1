"""Networks: user-defined bridge networks, shaped like docker-py's.

    net = Network.create("backend")             # subnet chosen clear of the host's routes
    Container.run(image, cmd, network="backend", name="db")
    net.connect(other_running_container, aliases=["cache"])
    net.inspect()["Containers"]
    net.remove()

The default network "bridge" is made on demand by the first container that
uses it.  Containers on one user-defined network find each other by name and
alias through their /etc/hosts.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, Union

import attrs

from ._root import Root, RootArg, get_root
from .errors import Conflict, InvalidArgument, NotFound
from .net import endpoint, ipam

if TYPE_CHECKING:
    from .container import Container

ContainerArg = Union["Container", str]


@attrs.define(eq=False, repr=False)
class Network:
    """A handle on one network; any process can make one with `get`."""

    name: str
    _root: Root = attrs.field(alias="root")

    def __repr__(self) -> str:
        return f"<Network: {self.short_id} {self.name}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Network) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    # ------------------------------------------------------------ discovery
    @classmethod
    def create(cls, name: str, subnet: Optional[str] = None, gateway: Optional[str] = None, *,
               root: RootArg = None, driver: str = "bridge", internal: bool = False,
               labels: Optional[Mapping[str, str]] = None) -> "Network":
        """Make a bridge network (a free subnet is chosen when none is given)."""
        if driver != "bridge":
            raise InvalidArgument(f"network driver {driver!r} is not supported (only 'bridge')")
        if name in ("host", "none"):
            raise Conflict(f"network with name {name} already exists (it is predefined)")
        r = get_root(root)
        endpoint.create_network(r, name, subnet=subnet, gateway=gateway, labels=labels,
                                internal=internal)
        return cls(name, r)

    @classmethod
    def get(cls, id_or_name: str, *, root: RootArg = None) -> "Network":
        """Find a network by name, full id or unique id prefix."""
        r = get_root(root)
        names = ipam.names(r.path)
        if id_or_name in names:
            return cls(id_or_name, r)
        if id_or_name == ipam.DEFAULT_NETWORK:
            endpoint.ensure_network(r, id_or_name)
            return cls(id_or_name, r)
        matches = []
        for n in names:
            with contextlib.suppress(NotFound):
                if ipam.load(r.path, n).id.startswith(id_or_name):
                    matches.append(n)
        if len(matches) == 1 and id_or_name:
            return cls(matches[0], r)
        if len(matches) > 1:
            raise InvalidArgument(f"multiple networks match the prefix {id_or_name!r}")
        raise NotFound(f"network {id_or_name} not found")

    @classmethod
    def list(cls, names: Sequence[str] = (), ids: Sequence[str] = (), *,
             root: RootArg = None) -> list["Network"]:
        """Networks of the root (optionally only those with these names or ids)."""
        r = get_root(root)
        found = []
        for n in ipam.names(r.path):
            with contextlib.suppress(NotFound):
                rec = ipam.load(r.path, n)
                if (not names or n in names) and (not ids or any(rec.id.startswith(i) for i in ids)):
                    found.append(cls(n, r))
        return found

    @classmethod
    def prune(cls, *, root: RootArg = None) -> dict[str, list[str]]:
        """Remove every user-defined network no container is attached to."""
        r = get_root(root)
        deleted = []
        for net in cls.list(root=r):
            if net.name in ipam.PREDEFINED:
                continue
            with contextlib.suppress(Conflict, NotFound):
                net.remove()
                deleted.append(net.name)
        return {"NetworksDeleted": deleted}

    # ----------------------------------------------------------- attributes
    @property
    def _record(self) -> ipam.NetworkRecord:
        return ipam.load(self._root.path, self.name)

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def attrs(self) -> dict:
        return self.inspect()

    @property
    def containers(self) -> list["Container"]:
        """Containers attached to this network."""
        from .container import Container

        return [Container(cid, self._root) for cid in ipam.endpoints(self._root.path, self.name)]

    def inspect(self) -> dict:
        """Shaped like `docker network inspect`."""
        rec = self._record
        eps = ipam.endpoints(self._root.path, self.name)
        return {
            "Name": rec.name, "Id": rec.id, "Created": rec.created, "Scope": "local",
            "Driver": "bridge", "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None,
                     "Config": [{"Subnet": rec.subnet, "Gateway": rec.gateway}]},
            "Internal": rec.internal, "Attachable": False, "Ingress": False,
            "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": {cid: {"Name": e.get("Name", ""), "EndpointID": e.get("EndpointID", ""),
                                 "MacAddress": e["MacAddress"],
                                 "IPv4Address": f"{e['IPAddress']}/{e['IPPrefixLen']}",
                                 "IPv6Address": ""} for cid, e in eps.items()},
            "Options": {"com.docker.network.bridge.name": rec.bridge},
            "Labels": dict(rec.labels),
        }

    def reload(self) -> None:
        """Fail with NotFound if the network was removed (handles hold no cached state)."""
        self._record

    # -------------------------------------------------------------- changes
    def remove(self, force: bool = False) -> None:
        """Remove the network; refused while containers are attached (and for
        the predefined "bridge") unless force=True, which detaches them."""
        if self.name in ipam.PREDEFINED and not force:
            raise Conflict(f"{self.name} is a pre-defined network and cannot be removed")
        endpoint.remove_network(self._root, self.name, force=force)

    def connect(self, container: ContainerArg, aliases: Optional[Sequence[str]] = None) -> None:
        """Attach a running container (a new interface ethN appears inside it)."""
        c = self._container(container)
        state = c.inspect()
        if not state["State"]["Running"]:
            raise Conflict(f"container {c.short_id} is not running")
        endpoint.connect(self._root, c.id, state["State"]["Pid"], self.name, name=c.name,
                         hostname=state["Config"].get("Hostname") or c.short_id,
                         aliases=list(aliases or ()))

    def disconnect(self, container: ContainerArg, force: bool = False) -> None:
        """Detach a container from this network (its interface disappears)."""
        c = self._container(container)
        try:
            endpoint.disconnect(self._root, c.id, self.name)
        except NotFound:
            if not force:
                raise

    def _container(self, container: ContainerArg) -> "Container":
        from .container import Container

        if isinstance(container, str):
            return Container.get(container, root=self._root)
        return container


__all__ = ["Network"]
