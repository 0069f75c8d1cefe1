"""Netlink wiring: one route socket per namespace, requests pipelined in batches.

Messages are built and parsed with pyroute2's rtnetlink codec; they are sent many
to a sendmsg() and their acks read back in bulk, so wiring 2,048 links costs a
handful of system calls per namespace instead of one round trip (or fork) per link.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Iterable

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNSID,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.nsidmsg import nsidmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from . import namespaces
from .errors import DpulabError

IFF_UP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SOL_NETLINK = 270
_BATCH = 128  # requests per sendmsg; acks are capped, so the receive buffer holds them all


@dataclass
class LinkInfo:
    """What the kernel says about one interface."""

    name: str
    index: int
    kind: str | None
    up: bool
    mac: str | None
    alias: str | None
    peer_index: int | None  # IFLA_LINK: the veth peer's ifindex (in its own namespace)
    peer_nsid: int | None  # IFLA_LINK_NETNSID: where the peer lives, as this namespace numbers it
    master: int | None
    mtu: int
    oper_up: bool

    @classmethod
    def from_msg(cls, m: Any) -> "LinkInfo":
        kind = None
        info = m.get_attr("IFLA_LINKINFO")
        if info is not None:
            kind = info.get_attr("IFLA_INFO_KIND")
        return cls(
            name=m.get_attr("IFLA_IFNAME"),
            index=m["index"],
            kind=kind,
            up=bool(m["flags"] & IFF_UP),
            mac=m.get_attr("IFLA_ADDRESS"),
            alias=m.get_attr("IFLA_IFALIAS"),
            peer_index=m.get_attr("IFLA_LINK"),
            peer_nsid=m.get_attr("IFLA_LINK_NETNSID"),
            master=m.get_attr("IFLA_MASTER"),
            mtu=m.get_attr("IFLA_MTU") or 0,
            oper_up=m.get_attr("IFLA_OPERSTATE") == "UP",
        )


@dataclass
class Failure:
    what: str
    errno: int

    def __str__(self) -> str:
        return f"{self.what}: {os.strerror(self.errno)}"


@dataclass
class _Pending:
    data: bytes
    what: str
    ok_errnos: tuple[int, ...] = ()


class Rtnl:
    """A NETLINK_ROUTE socket living in one namespace (None: the caller's)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        if netns is None:
            self.sock = self._open()
        else:
            with namespaces.entered(str(netns_target(netns))):
                self.sock = self._open()
        self._seq = 0
        self._queue: list[_Pending] = []
        self._marshal = MarshalRtnl()

    @staticmethod
    def _open() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            s.setsockopt(SOL_NETLINK, opt, 1)
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
            s.setsockopt(socket.SOL_SOCKET, 32, 4 << 20)  # SO_SNDBUFFORCE
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((0, 0))
        return s

    def close(self) -> None:
        self.sock.close()

    # -- requests -----------------------------------------------------------------------
    def _encode(self, msg: Any, mtype: int, flags: int) -> bytes:
        self._seq += 1
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        return bytes(msg.data)

    def queue(self, msg: Any, mtype: int, flags: int, what: str, ok: tuple[int, ...] = ()) -> None:
        data = self._encode(msg, mtype, flags | NLM_F_REQUEST | NLM_F_ACK)
        self._queue.append(_Pending(data, what, ok))

    def flush(self) -> list[Failure]:
        """Send everything queued, BATCH requests per sendmsg, and collect the failures."""
        failures: list[Failure] = []
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), _BATCH):
            chunk = queue[start : start + _BATCH]
            by_seq = {self._seq_of(p.data): p for p in chunk}
            self.sock.sendmsg([b"".join(p.data for p in chunk)])
            waiting = len(chunk)
            while waiting:
                data = self.sock.recv(1 << 20)
                offset = 0
                while offset + 16 <= len(data):
                    length, mtype, _flags, seq, _pid = struct.unpack_from("IHHII", data, offset)
                    if mtype == NLMSG_ERROR and seq in by_seq:
                        (err,) = struct.unpack_from("i", data, offset + 16)
                        pending = by_seq.pop(seq)
                        waiting -= 1
                        if err and -err not in pending.ok_errnos:
                            failures.append(Failure(pending.what, -err))
                    offset += (length + 3) & ~3
        return failures

    def run(self) -> None:
        """Flush and raise on the first failure."""
        failures = self.flush()
        if failures:
            more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
            raise DpulabError(f"{self.netns or 'root'}: {failures[0]}{more}")

    @staticmethod
    def _seq_of(data: bytes) -> int:
        return struct.unpack_from("I", data, 8)[0]

    def dump(self, msg: Any, mtype: int) -> list[Any]:
        data = self._encode(msg, mtype, NLM_F_REQUEST | NLM_F_DUMP)
        seq = self._seq
        self.sock.sendall(data)
        out: list[Any] = []
        while True:
            chunk = self.sock.recv(1 << 20)
            for m in self._marshal.parse(chunk):
                if m["header"]["sequence_number"] != seq:
                    continue
                if m["header"]["type"] == NLMSG_DONE:
                    return out
                if m["header"]["type"] == NLMSG_ERROR:
                    code = m.get("error") or 0
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    continue
                out.append(m)

    # -- the operations dpulab needs ----------------------------------------------------
    def links(self) -> dict[str, LinkInfo]:
        msg = ifinfmsg()
        return {li.name: li for li in map(LinkInfo.from_msg, self.dump(msg, RTM_GETLINK))}

    def addresses(self) -> list[tuple[int, str, int]]:
        """(ifindex, address, prefixlen) for every IPv4/IPv6 address."""
        msg = ifaddrmsg()
        return [
            (m["index"], m.get_attr("IFA_ADDRESS"), m["prefixlen"]) for m in self.dump(msg, RTM_GETADDR)
        ]

    def routes(self) -> list[tuple[str | None, int, int | None]]:
        """(destination, prefixlen, oif) of the main-table IPv4 routes."""
        msg = rtmsg()
        msg["family"] = socket.AF_INET
        return [
            (m.get_attr("RTA_DST"), m["dst_len"], m.get_attr("RTA_OIF"))
            for m in self.dump(msg, RTM_GETROUTE)
            if m.get_attr("RTA_TABLE") == 254
        ]

    def nsid_of(self, fd: int) -> int | None:
        """The id this namespace gives to another one (-1/None: none assigned)."""
        msg = nsidmsg()
        msg["attrs"] = [("NETNSA_FD", fd)]
        data = self._encode(msg, RTM_GETNSID, NLM_F_REQUEST)
        self.sock.sendall(data)
        for m in self._marshal.parse(self.sock.recv(65536)):
            if m["header"]["type"] == NLMSG_ERROR:
                return None
            nsid = m.get_attr("NETNSA_NSID")
            return None if nsid is None or nsid < 0 else nsid
        return None

    def add_veth(
        self,
        name: str,
        peer: str,
        *,
        mac: str | None = None,
        peer_mac: str | None = None,
        netns_fd: int | None = None,
        peer_netns_fd: int | None = None,
        up: bool = True,
        mtu: int | None = None,
        what: str = "",
    ) -> None:
        """Queue one veth, both ends named and placed in their namespaces by the one request."""
        peer_attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", peer)]
        if peer_mac:
            peer_attrs.append(("IFLA_ADDRESS", peer_mac))
        if peer_netns_fd is not None:
            peer_attrs.append(("IFLA_NET_NS_FD", peer_netns_fd))
        if mtu:
            peer_attrs.append(("IFLA_MTU", mtu))
        msg = self._link_msg(name, up=up, mac=mac, mtu=mtu)
        if netns_fd is not None:
            msg["attrs"].append(("IFLA_NET_NS_FD", netns_fd))
        msg["attrs"].append(
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "veth"),
                        ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"attrs": peer_attrs})]}),
                    ]
                },
            )
        )
        self.queue(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, what or f"create veth {name}/{peer}")

    def add_bridge(self, name: str, *, mtu: int | None = None, alias: str | None = None) -> None:
        msg = self._link_msg(name, up=True, mtu=mtu)
        msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}))
        self.queue(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create bridge {name}")

    def set_link(
        self,
        name: str,
        *,
        up: bool | None = None,
        alias: str | None = None,
        mac: str | None = None,
        master: int | None = None,
        mtu: int | None = None,
        new_name: str | None = None,
        netns_fd: int | None = None,
        index: int = 0,
    ) -> None:
        """Queue a change to an existing link, found by name (or index when given)."""
        msg = self._link_msg(name if not index else None, up=up, mac=mac, mtu=mtu)
        msg["index"] = index
        if new_name:
            msg["attrs"].append(("IFLA_IFNAME", new_name))
        if alias is not None:
            msg["attrs"].append(("IFLA_IFALIAS", alias))
        if master is not None:
            msg["attrs"].append(("IFLA_MASTER", master))
        if netns_fd is not None:
            msg["attrs"].append(("IFLA_NET_NS_FD", netns_fd))
        self.queue(msg, RTM_NEWLINK, 0, f"set {name}")

    def del_link(self, name: str, *, missing_ok: bool = True) -> None:
        msg = ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        self.queue(msg, RTM_DELLINK, 0, f"delete {name}", (errno.ENODEV,) if missing_ok else ())

    def add_address(self, ifindex: int, cidr: str) -> None:
        addr, plen = cidr.split("/")
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET6 if ":" in addr else socket.AF_INET
        msg["prefixlen"] = int(plen)
        msg["index"] = ifindex
        msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
        self.queue(msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, f"address {cidr}", (errno.EEXIST,))

    def del_address(self, ifindex: int, cidr: str) -> None:
        addr, plen = cidr.split("/")
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET6 if ":" in addr else socket.AF_INET
        msg["prefixlen"] = int(plen)
        msg["index"] = ifindex
        msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
        self.queue(msg, RTM_DELADDR, 0, f"delete address {cidr}", (errno.EADDRNOTAVAIL,))

    def add_route(self, dst: str, *, gateway: str | None = None, oif: int | None = None) -> None:
        msg = rtmsg()
        msg["family"] = socket.AF_INET
        msg["table"] = 254
        msg["proto"] = 4  # static
        msg["scope"] = 0 if gateway else 253  # universe / link
        msg["type"] = 1  # unicast
        attrs: list[tuple[str, Any]] = [("RTA_TABLE", 254)]
        if dst != "default":
            net, plen = dst.split("/")
            msg["dst_len"] = int(plen)
            attrs.append(("RTA_DST", net))
        if gateway:
            attrs.append(("RTA_GATEWAY", gateway))
        if oif:
            attrs.append(("RTA_OIF", oif))
        msg["attrs"] = attrs
        self.queue(msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, f"route {dst}", (errno.EEXIST,))

    @staticmethod
    def _link_msg(name: str | None, *, up: bool | None, mac: str | None = None, mtu: int | None = None) -> Any:
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        if up is not None:
            msg["change"] = IFF_UP
            msg["flags"] = IFF_UP if up else 0
        attrs: list[tuple[str, Any]] = []
        if name:
            attrs.append(("IFLA_IFNAME", name))
        if mac:
            attrs.append(("IFLA_ADDRESS", mac))
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
        msg["attrs"] = attrs
        return msg


def netns_target(name: str) -> str:
    return str(namespaces.path(name))


@dataclass
class Sockets:
    """One Rtnl and one open namespace fd per namespace, reused for a whole command."""

    _socks: dict[str | None, Rtnl] = field(default_factory=dict)
    _fds: dict[str, int] = field(default_factory=dict)

    def __call__(self, netns: str | None) -> Rtnl:
        if netns not in self._socks:
            self._socks[netns] = Rtnl(netns)
        return self._socks[netns]

    def fd(self, netns: str) -> int:
        if netns not in self._fds:
            self._fds[netns] = os.open(netns_target(netns), os.O_RDONLY | os.O_CLOEXEC)
        return self._fds[netns]

    def forget(self, netns: str) -> None:
        sock = self._socks.pop(netns, None)
        if sock:
            sock.close()
        fd = self._fds.pop(netns, None)
        if fd is not None:
            os.close(fd)

    def flush_all(self, order: Iterable[str | None] | None = None) -> list[Failure]:
        failures: list[Failure] = []
        for ns in order if order is not None else list(self._socks):
            if ns in self._socks:
                failures += [Failure(f"{ns or 'root'}: {f.what}", f.errno) for f in self._socks[ns].flush()]
        return failures

    def close(self) -> None:
        for ns in list(self._socks) + list(self._fds):
            self.forget(ns)  # type: ignore[arg-type]

    def __enter__(self) -> "Sockets":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
