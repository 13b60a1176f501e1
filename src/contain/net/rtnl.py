"""A minimal synchronous rtnetlink client for the container start path.

pyroute2 (behind links.py) is convenient but costs milliseconds of Python
per request (an asyncio loop per call) and holds the GIL meanwhile; a
container start needs four requests.  This module packs the few messages the
start path sends (veth add, link set, link delete, link index, address add,
route add) with struct and waits for the kernel's ack on a plain socket,
so the time spent is the kernel's and the GIL is free while it works.

A socket belongs for life to the network namespace of the thread that
opened it: one opened inside a namespace configures that namespace from any
thread, without setns.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import socket
import struct
from typing import Optional

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_NEWROUTE = 20, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_HDR = struct.Struct("=IHHII")  # nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg


class NetlinkFailure(OSError):
    """The kernel refused a request (errno set)."""


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _str(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _mac(text: str) -> bytes:
    return bytes(int(b, 16) for b in text.split(":"))


class Socket:
    """One NETLINK_ROUTE socket in the namespace of the thread that made it."""

    def __init__(self) -> None:
        # socket.socket is close-on-exec; no multicast groups, requests only.
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self._sock.bind((0, 0))
            self._sock.settimeout(30)
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport
    def _request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request and collect the replies up to its ack or error."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._sock.send(_HDR.pack(_HDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HDR.size <= len(data):
                size, mtype, _, mseq, _ = _HDR.unpack_from(data, offset)
                if size < _HDR.size:
                    raise NetlinkFailure(_errno.EPROTO, "malformed netlink reply")
                payload = data[offset + _HDR.size:offset + size]
                offset += (size + 3) & ~3
                if mseq != seq:
                    continue  # a late reply to an earlier request
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise NetlinkFailure(-code, os.strerror(-code))
                    return replies
                if mtype == NLMSG_DONE:
                    return replies
                replies.append((mtype, payload))
                if not flags & NLM_F_ACK:
                    return replies

    # ------------------------------------------------------------- requests
    def link_index(self, ifname: str) -> int:
        """The index of a link of this socket's namespace (ENODEV if absent)."""
        replies = self._request(RTM_GETLINK, 0, _ifinfo() + _str(IFLA_IFNAME, ifname))
        for mtype, payload in replies:
            if mtype == RTM_NEWLINK:
                return _IFINFO.unpack_from(payload)[2]
        raise NetlinkFailure(_errno.ENODEV, f"no link {ifname}")

    def add_veth(self, ifname: str, peer: str, *, mtu: int, peer_netns_fd: Optional[int]) -> None:
        """A veth pair: ifname here, peer in the namespace of peer_netns_fd (else here)."""
        peer_attrs = _str(IFLA_IFNAME, peer) + _u32(IFLA_MTU, mtu)
        if peer_netns_fd is not None:
            peer_attrs += _u32(IFLA_NET_NS_FD, peer_netns_fd)
        info = _str(IFLA_INFO_KIND, "veth") + _attr(
            IFLA_INFO_DATA, _attr(VETH_INFO_PEER, _ifinfo() + peer_attrs))
        body = _ifinfo() + _str(IFLA_IFNAME, ifname) + _u32(IFLA_MTU, mtu) + _attr(IFLA_LINKINFO, info)
        self._request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def set_link(self, index: int, *, up: Optional[bool] = None, ifname: Optional[str] = None,
                 master: Optional[int] = None, mtu: Optional[int] = None,
                 mac: Optional[str] = None, alias: Optional[str] = None) -> None:
        """Change a link in one request (the kernel renames before it brings the link up)."""
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        body = _ifinfo(index, flags, change)
        if ifname is not None:
            body += _str(IFLA_IFNAME, ifname)
        if mac is not None:
            body += _attr(IFLA_ADDRESS, _mac(mac))
        if mtu is not None:
            body += _u32(IFLA_MTU, mtu)
        if master is not None:
            body += _u32(IFLA_MASTER, master)
        if alias is not None:
            body += _attr(IFLA_IFALIAS, alias.encode())
        self._request(RTM_NEWLINK, NLM_F_ACK, body)

    def delete_link(self, index: int) -> None:
        self._request(RTM_DELLINK, NLM_F_ACK, _ifinfo(index))

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        packed = ipaddress.IPv4Address(address).packed
        body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
        self._request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

    def add_default_route(self, gateway: str, oif: int) -> None:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                           RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += _attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed) + _u32(RTA_OIF, oif)
        self._request(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body)

