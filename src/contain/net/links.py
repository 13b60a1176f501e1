"""Links, addresses, routes and network namespaces (the only module that imports pyroute2).

Network namespaces are made without helper processes: a thread of contain's
own (the pool's, or a short-lived one) calls unshare(CLONE_NEWNET), which
moves only that thread into a fresh namespace, opens /proc/thread-self/ns/net
and a netlink socket there (a socket belongs to the namespace of its creator
for life), then returns to the host namespace with setns and configures the
namespace through that socket.  A thread that cannot return ends, so no
Python thread is ever left in a foreign namespace.  The caller keeps the
namespace alive by its fd; when the last holder (that fd, then the container)
goes away the kernel destroys the namespace together with the veth pair in it.

The start path (fresh_pair_here, attach_pair, delete_link) speaks netlink
through rtnl.py: pyroute2 costs milliseconds of Python per request.  The rest
(bridges, host routes and addresses, connect()) uses pyroute2.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import ipaddress
import os
import secrets
import socket
import threading
import time
from typing import Any, Callable, Iterator, Optional, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import RuntimeFailure
from . import rtnl

CLONE_NEWNET = 0x40000000
DEFAULT_MTU = 1500

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _check(rc: int, step: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(step, err)


def _off_event_loop(fn: Callable[..., T]) -> Callable[..., T]:
    """pyroute2 drives its sockets with asyncio and cannot do so on a thread
    whose event loop is already running (a Jupyter cell, an async caller):
    there, the call runs on a short-lived thread of its own."""
    import asyncio
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return fn(*args, **kwargs)
        return _on_own_thread("contain-netlink", fn, *args, **kwargs)

    return wrapper


def _on_own_thread(name: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs) on a short-lived thread; its exception re-raised here."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["result"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=call, name=name)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


@contextlib.contextmanager
def _ipr() -> Iterator[IPRoute]:
    # No multicast groups: we only make requests, and subscribed groups
    # would queue every event of the host on the socket.
    try:
        ipr = IPRoute(groups=0)
    except TypeError:  # older pyroute2 without the keyword
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _netlink_failure(step: str, exc: NetlinkError) -> RuntimeFailure:
    return RuntimeFailure(step, exc.code, str(exc.args[1]) if len(exc.args) > 1 else "")


@_off_event_loop
def in_netns(netns_fd: Optional[int], work: Callable[[IPRoute], T]) -> tuple[T, int]:
    """Run work(ipr) with a netlink socket inside a network namespace.

    netns_fd=None makes a fresh namespace; otherwise the thread joins the
    given one.  Returns work's result and an fd of the namespace (a new fd
    the caller must close, O_CLOEXEC).
    """
    box: dict[str, Any] = {}

    def thread() -> None:
        host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        ns_fd = -1
        try:
            if netns_fd is None:
                _check(_libc.unshare(CLONE_NEWNET), "unshare network namespace")
            else:
                _check(_libc.setns(netns_fd, CLONE_NEWNET), "join network namespace")
            ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                with _ipr() as ipr:
                    box["result"] = work(ipr)
            finally:
                # If this fails the thread ends anyway; nothing else runs in it.
                _libc.setns(host, CLONE_NEWNET)
            box["fd"] = ns_fd
        except BaseException as exc:  # handed to the caller's thread
            if ns_fd >= 0:
                os.close(ns_fd)
            box["error"] = exc
        finally:
            os.close(host)

    t = threading.Thread(target=thread, name="contain-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"], box["fd"]


# ------------------------------------------------------------------ host view
_MTU_TTL = 1.0  # seconds; the route table is read on most starts otherwise
_mtu_cache: tuple[float, int] = (-_MTU_TTL, DEFAULT_MTU)


def host_mtu() -> int:
    """MTU of the interface carrying the host's IPv4 default route (at most a second old)."""
    global _mtu_cache
    now = time.monotonic()
    if now - _mtu_cache[0] >= _MTU_TTL:
        _mtu_cache = (now, _read_host_mtu())
    return _mtu_cache[1]


def _read_host_mtu() -> int:
    # /proc and /sys instead of netlink: this runs on container starts.
    try:
        with open("/proc/net/route") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
                    with open(f"/sys/class/net/{fields[0]}/mtu") as m:
                        return int(m.read())
    except (OSError, ValueError):
        pass
    return DEFAULT_MTU


@_off_event_loop
def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 prefix the host routes or holds an address in (all tables)."""
    found: list[ipaddress.IPv4Network] = []
    with _ipr() as ipr:
        for route in ipr.get_routes(family=2, table=0):
            dst = route.get_attr("RTA_DST")
            if dst is None or route.get("dst_len", 0) == 0:
                continue  # a default route overlaps everything; it is no collision
            found.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
        for addr in ipr.get_addr(family=2):
            ip = addr.get_attr("IFA_ADDRESS")
            if ip:
                found.append(ipaddress.IPv4Network(f"{ip}/{addr['prefixlen']}", strict=False))
    return found


@_off_event_loop
def host_addresses() -> list[str]:
    """The host's own IPv4 addresses (loopback excluded)."""
    with _ipr() as ipr:
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)
                if a.get_attr("IFA_ADDRESS") and not a.get_attr("IFA_ADDRESS").startswith("127.")]


def link_exists(ifname: str) -> bool:
    """Whether the host namespace has this interface (sysfs: no netlink round trip)."""
    return os.path.exists(f"/sys/class/net/{ifname}")


@_off_event_loop
def links_with_prefix(prefix: str) -> list[str]:
    with _ipr() as ipr:
        return [name for name in (l.get_attr("IFLA_IFNAME") for l in ipr.get_links())
                if name and name.startswith(prefix)]


def set_sysctl(path: str, value: str) -> str:
    """Write a /proc/sys value; returns the previous one."""
    full = os.path.join("/proc/sys", path)
    with open(full) as f:
        old = f.read().strip()
    if old != value:
        with open(full, "w") as f:
            f.write(value)
    return old


# ------------------------------------------------------------------- bridges
@_off_event_loop
def ensure_bridge(name: str, gateway: str, prefixlen: int, mtu: int) -> bool:
    """Make the bridge (with its gateway address, up) unless it exists; True if made."""
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=name)
        created = False
        if not found:
            try:
                # A MAC of its own: a bridge without one takes its lowest
                # port's, and the gateway's MAC would change under the
                # containers' ARP caches as containers come and go.
                mac = bytes([secrets.randbelow(256) & 0xFE | 0x02]) + secrets.token_bytes(5)
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu,
                         address=":".join(f"{b:02x}" for b in mac))
                created = True
            except NetlinkError as exc:
                if exc.code != _errno.EEXIST:  # another process won the race
                    raise _netlink_failure(f"create bridge {name}", exc) from None
            found = ipr.link_lookup(ifname=name)
        index = found[0]
        try:
            ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
        except NetlinkError as exc:
            if exc.code != _errno.EEXIST:
                raise _netlink_failure(f"address {gateway} on {name}", exc) from None
        ipr.link("set", index=index, state="up")
    # Published ports on 127.0.0.1 are DNATed out of this bridge with a
    # loopback source; the kernel routes such packets only with route_localnet.
    set_sysctl(f"net/ipv4/conf/{name}/route_localnet", "1")
    return created


def delete_link(name: str) -> bool:
    """Delete a link by name (a veth takes its peer along); False if absent."""
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return False
    try:
        with rtnl.Socket() as nl:
            nl.delete_link(index)
    except rtnl.NetlinkFailure as exc:
        if exc.errno == _errno.ENODEV:
            return False
        raise RuntimeFailure(f"delete link {name}", exc.errno) from None
    return True


_REAP_DELAY = 0.5  # seconds a dying namespace gets to take its veth along
_reap_lock = threading.Lock()
_reap_queue: list[tuple[float, str, int]] = []
_reaper: Optional[threading.Thread] = None


def delete_link_soon(name: str) -> None:
    """Delete a link in the background unless it goes by itself first.

    A container's host veth usually dies with its namespace when the
    container exits, a moment later (the kernel destroys namespaces
    asynchronously).  Deleting it at once would race that destruction and
    hold the kernel's rtnl lock against the next start; a veth delete also
    takes the kernel ~20 ms (it waits for RCU).  So one background thread
    looks again a little later and deletes only what is still there (a
    namespace someone else keeps alive).  It goes by the link's index as
    well as its name: a restarted container may hold the name by then (the
    kernel does not reuse indexes soon).  Should the process end first, the
    leftover is repair()'s.
    """
    global _reaper
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        return
    with _reap_lock:
        _reap_queue.append((time.monotonic() + _REAP_DELAY, name, index))
        if _reaper is None or not _reaper.is_alive():
            _reaper = threading.Thread(target=_reap, name="contain-unlink", daemon=True)
            _reaper.start()


def _reset_reaper_after_fork() -> None:
    # The reaper thread is not in a forked child, and its lock may have been
    # held by it at the fork; the parent's queue stays the parent's.
    global _reap_lock, _reap_queue, _reaper
    _reap_lock, _reap_queue, _reaper = threading.Lock(), [], None


os.register_at_fork(after_in_child=_reset_reaper_after_fork)


def _reap() -> None:
    while True:
        with _reap_lock:
            if not _reap_queue:
                return
            when, name, index = _reap_queue[0]
        pause = when - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        with _reap_lock:
            _reap_queue.pop(0)
        with contextlib.suppress(Exception):
            if socket.if_nametoindex(name) == index:
                with rtnl.Socket() as nl:
                    nl.delete_link(index)


# --------------------------------------------------------------------- veths
@_off_event_loop
def add_veth(netns_fd: Optional[int], *, host_ifname: str, ifname: str, bridge: str,
             address: str, prefixlen: int, mac: str, mtu: int,
             gateway: Optional[str]) -> int:
    """A veth pair: `ifname` inside the namespace (addressed, up, default route
    via gateway if given, lo up), `host_ifname` on the host enslaved to bridge.

    netns_fd=None makes a fresh namespace.  Returns an fd of the namespace.
    """
    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def configure(ipr: IPRoute) -> None:
        step = "loopback up"
        try:
            if netns_fd is None:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            step = f"create veth {ifname}/{host_ifname}"
            # The peer is born in the host namespace: no temporary names to clash.
            ipr.link("add", ifname=ifname, kind="veth", mtu=mtu, address=mac,
                     peer={"ifname": host_ifname, "net_ns_fd": host_ns, "mtu": mtu})
            index = ipr.link_lookup(ifname=ifname)[0]
            step = f"address {address}/{prefixlen} on {ifname}"
            ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
            step = f"{ifname} up"
            ipr.link("set", index=index, state="up")
            if gateway:
                step = f"default route via {gateway}"
                ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=index)
        except NetlinkError as exc:
            raise _netlink_failure(step, exc) from None

    try:
        _, fd = in_netns(netns_fd, configure)
    finally:
        os.close(host_ns)
    try:
        with _ipr() as ipr:
            found = ipr.link_lookup(ifname=bridge)
            if not found:
                raise RuntimeFailure(f"attach {host_ifname}", _errno.ENODEV, f"no bridge {bridge}")
            index = ipr.link_lookup(ifname=host_ifname)[0]
            try:
                ipr.link("set", index=index, master=found[0], state="up")
            except NetlinkError as exc:
                raise _netlink_failure(f"attach {host_ifname} to {bridge}", exc) from None
    except BaseException:
        os.close(fd)
        delete_link(host_ifname)
        raise
    return fd


@_off_event_loop
def netns_links(netns_fd: int) -> list[str]:
    """Interface names inside a namespace."""
    names, fd = in_netns(netns_fd, lambda ipr: [l.get_attr("IFLA_IFNAME") for l in ipr.get_links()])
    os.close(fd)
    return names


# ------------------------------------------------- fresh pairs (the start path)
class StrandedThread(RuntimeFailure):
    """The thread could not return to the host namespace and must end."""


class FreshPair:
    """A never-used network namespace with lo up and a veth pair: `eth0`
    inside and `host_ifname` in the host namespace, both down and unaddressed.

    Held by two descriptors only (the namespace and a netlink socket opened
    inside it): closing them, or the death of this process, destroys the
    namespace and the pair with it.
    """

    __slots__ = ("netns_fd", "nl", "ifindex", "host_ifname", "host_index", "mtu")

    def __init__(self, netns_fd: int, nl: rtnl.Socket, ifindex: int, host_ifname: str,
                 host_index: int, mtu: int) -> None:
        self.netns_fd, self.nl, self.ifindex = netns_fd, nl, ifindex
        self.host_ifname, self.host_index, self.mtu = host_ifname, host_index, mtu

    def close(self) -> None:
        if self.netns_fd >= 0:
            self.nl.close()
            os.close(self.netns_fd)
            self.netns_fd = -1


def _new_netns_here(host: int) -> tuple[int, rtnl.Socket]:
    """Enter a new network namespace on this thread for two system calls
    (open it, open a netlink socket in it) and go back to `host`.  Raises
    StrandedThread if the thread could not go back."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare network namespace")
    ns_fd, nl, ok = -1, None, False
    try:
        ns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        nl = rtnl.Socket()
        ok = True
    finally:
        back = _libc.setns(host, CLONE_NEWNET) == 0
        e = ctypes.get_errno()
        if not (ok and back):
            if nl is not None:
                nl.close()
            if ns_fd >= 0:
                os.close(ns_fd)
        if not back:
            raise StrandedThread("return to the host network namespace", e)
    return ns_fd, nl


def fresh_pair_here(host_ifname: str, mtu: int, alias: str = "") -> FreshPair:
    """Make a FreshPair on the calling thread, which must be one of contain's
    own: it enters the new namespace for two system calls (open the namespace,
    open a netlink socket there) and goes back; everything else is done from
    the host namespace through that socket.  Raises StrandedThread if the
    thread could not go back (the caller must then let the thread end)."""
    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ns_fd, nl = -1, None
    try:
        ns_fd, nl = _new_netns_here(host)
        step = "loopback up"
        try:
            nl.set_link(nl.link_index("lo"), up=True)
            step = f"create veth eth0/{host_ifname}"
            # The peer is born in the host namespace: no temporary names.
            nl.add_veth("eth0", host_ifname, mtu=mtu, peer_netns_fd=host)
            ifindex = nl.link_index("eth0")
            step = f"find {host_ifname}"
            host_index = socket.if_nametoindex(host_ifname)
            if alias:
                step = f"alias of {host_ifname}"
                with rtnl.Socket() as host_nl:
                    host_nl.set_link(host_index, alias=alias)
        except OSError as exc:
            raise RuntimeFailure(step, exc.errno or 0) from None
        return FreshPair(ns_fd, nl, ifindex, host_ifname, host_index, mtu)
    except BaseException:
        if nl is not None:
            nl.close()
        if ns_fd >= 0:
            os.close(ns_fd)  # the namespace dies, and the pair with it
        raise
    finally:
        os.close(host)


def bare_netns_here() -> int:
    """A new network namespace with only `lo`, up, as an fd (what a
    container with network "none" gets), made on the calling thread, which
    must be one of contain's own (see fresh_pair_here)."""
    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    ns_fd, nl = -1, None
    try:
        ns_fd, nl = _new_netns_here(host)
        try:
            nl.set_link(nl.link_index("lo"), up=True)
        except OSError as exc:
            raise RuntimeFailure("loopback up", exc.errno or 0) from None
        return ns_fd
    except BaseException:
        if ns_fd >= 0:
            os.close(ns_fd)
        raise
    finally:
        if nl is not None:
            nl.close()
        os.close(host)


def fresh_pair(host_ifname: str, mtu: int, alias: str = "") -> FreshPair:
    """fresh_pair_here on a short-lived thread of its own (for any caller)."""
    return _on_own_thread("contain-netns", fresh_pair_here, host_ifname, mtu, alias)


def attach_pair(pair: FreshPair, *, alias: str, bridge: str, address: str, prefixlen: int,
                mac: str, mtu: int, gateway: Optional[str]) -> int:
    """Give a FreshPair its container's identity: the host end enslaved to
    bridge, up and labelled `alias` (its name stays: a rename costs the
    kernel an RCU grace period under its rtnl lock); eth0 with mac, address
    and the default route, up.  Four netlink requests, no thread, no helper
    process.

    Returns the namespace's fd (the caller owns it now); the pair's socket is
    closed.  On failure the pair is closed (and so destroyed).
    """
    step = f"attach {pair.host_ifname} to {bridge}"
    try:
        try:
            master = socket.if_nametoindex(bridge)
        except OSError:
            raise RuntimeFailure(step, _errno.ENODEV, f"no bridge {bridge}") from None
        new_mtu = mtu if mtu != pair.mtu else None
        with rtnl.Socket() as host_nl:
            host_nl.set_link(pair.host_index, master=master, mtu=new_mtu, alias=alias, up=True)
        nl = pair.nl
        step = "eth0 up"
        nl.set_link(pair.ifindex, mac=mac, mtu=new_mtu, up=True)
        step = f"address {address}/{prefixlen} on eth0"
        nl.add_address(pair.ifindex, address, prefixlen)
        if gateway:
            step = f"default route via {gateway}"
            nl.add_default_route(gateway, pair.ifindex)
    except rtnl.NetlinkFailure as exc:
        pair.close()
        raise RuntimeFailure(step, exc.errno) from None
    except BaseException:
        pair.close()
        raise
    pair.nl.close()  # a socket in the namespace would keep it alive after the container
    fd, pair.netns_fd = pair.netns_fd, -1
    return fd
