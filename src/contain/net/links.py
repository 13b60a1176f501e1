"""Links, addresses and routes through pyroute2 (the only module that imports it).

Network namespaces are made without helper processes: a short-lived thread
calls unshare(CLONE_NEWNET), which moves only that thread into a fresh
namespace, opens /proc/thread-self/ns/net, configures the namespace through a
netlink socket opened in that thread (a socket belongs to the namespace of
its creator for life), then returns to the host namespace with setns.  The
thread exits right after, so no Python thread is ever left in a foreign
namespace even if returning fails.  The caller keeps the namespace alive by
its fd; when the last holder (that fd, then the container) goes away the
kernel destroys the namespace together with the veth pair in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import ipaddress
import os
import threading
from typing import Any, Callable, Iterator, Optional, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import RuntimeFailure

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
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["result"] = fn(*args, **kwargs)
            except BaseException as exc:  # re-raised on the caller's thread
                box["error"] = exc

        t = threading.Thread(target=call, name="contain-netlink")
        t.start()
        t.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    return wrapper


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
@_off_event_loop
def host_mtu() -> int:
    """MTU of the interface carrying the host's IPv4 default route."""
    # /proc and /sys instead of netlink: this runs on every container start.
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


@_off_event_loop
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
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
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


@_off_event_loop
def delete_link(name: str) -> bool:
    """Delete a link by name (a veth takes its peer along); False if absent."""
    if not link_exists(name):
        return False
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return False
        try:
            ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code == _errno.ENODEV:
                return False
            raise _netlink_failure(f"delete link {name}", exc) from None
    return True


def delete_link_soon(name: str) -> None:
    """Delete a link from a short background thread.

    Deleting a veth takes the kernel ~20 ms (it waits for RCU); when its
    namespace is dying anyway (the container exited) nobody should wait for
    that.  Should the process end first, the namespace's death removes it.
    """
    if link_exists(name):
        threading.Thread(target=lambda: delete_link(name), name="contain-unlink", daemon=True).start()


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
