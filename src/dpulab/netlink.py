"""Netlink wiring: one route socket per namespace, requests pipelined in batches.

Messages are built and parsed with pyroute2's rtnetlink codec; they are sent many
to a sendmsg() and their acks read back in bulk, so wiring 2,048 links costs a
handful of system calls per namespace instead of one round trip (or fork) per link.

Two shortcuts keep Python off the critical path (the kernel's own work is the floor):

- Link requests are encoded by pyroute2 once per *shape* (which fields are present,
  how long each string is) into a template; later requests of that shape copy the
  template and patch the variable fields (names, MACs, aliases, ints) at offsets found
  by diffing pyroute2's own encodings. Every new template is checked against a full
  pyroute2 encoding of the request that made it, and anything that does not fit the
  scheme is encoded by pyroute2 from scratch (tests/test_netlink_codec.py compares
  many requests byte for byte).
- Link dumps are decoded straight from the bytes into LinkInfo (the few attributes
  dpulab reads), instead of building pyroute2 objects for every attribute.

Requests are sent synchronously at flush(). (A sender thread that ran sendmsg() while
the caller went on encoding was measured slower at 2,048 links: 1.56 s against 1.22 s,
medians of 5. With templates, encoding a whole phase takes a few tens of ms against
the kernel's hundreds, and every GIL hand-off left the kernel idle.)

pyroute2 is imported on first use, not at import time (it costs ~0.15 s of start-up).
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from . import namespaces
from .errors import DpulabError

# linux/netlink.h and linux/rtnetlink.h (the values pyroute2 uses; the codec test checks them)
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLM_F_DUMP = 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
RTM_GETNSID = 90

IFF_UP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
SOL_NETLINK = 270
_BATCH = 128  # requests per sendmsg; acks are capped, so the receive buffer holds them all

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFI = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")

# rtnetlink attribute numbers read by the link decoder (linux/if_link.h)
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_LINK_NETNSID = 16, 18, 20, 37
IFLA_EXT_MASK = 29
IFLA_INFO_KIND = 1
RTEXT_FILTER_SKIP_STATS = 1 << 3  # dumps without the (large, unread) counters
_LINK_ATTRS = frozenset(
    {IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_LINK_NETNSID}
)
IFA_ADDRESS = 1
_IFA = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
IF_OPER_UP = 6
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


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

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> "LinkInfo":
        """Decode one RTM_NEWLINK message (nlmsghdr first) as from_msg() would have it."""
        (length,) = _U32.unpack_from(data, offset)
        end = offset + length
        _family, _type, index, flags, _change = _IFI.unpack_from(data, offset + 16)
        name = kind = mac = alias = peer_index = peer_nsid = master = mtu = oper = None
        unpack, wanted = _NLA.unpack_from, _LINK_ATTRS
        a = offset + 32
        while a + 4 <= end:
            alen, atype = unpack(data, a)
            if alen < 4:
                break
            atype &= _NLA_TYPE_MASK
            if atype in wanted:
                p, q = a + 4, a + alen
                if atype == IFLA_IFNAME:
                    name = _asciiz(data[p:q]) if name is None else name
                elif atype == IFLA_ADDRESS:
                    mac = ":".join(["%02x" % b for b in data[p : p + 6]]) if mac is None else mac
                elif atype == IFLA_IFALIAS:
                    alias = _asciiz(data[p:q]) if alias is None else alias
                elif atype == IFLA_LINK:
                    peer_index = _U32.unpack_from(data, p)[0] if peer_index is None else peer_index
                elif atype == IFLA_LINK_NETNSID:
                    peer_nsid = _I32.unpack_from(data, p)[0] if peer_nsid is None else peer_nsid
                elif atype == IFLA_MASTER:
                    master = _U32.unpack_from(data, p)[0] if master is None else master
                elif atype == IFLA_MTU:
                    mtu = _U32.unpack_from(data, p)[0] if mtu is None else mtu
                elif atype == IFLA_OPERSTATE:
                    oper = data[p] if oper is None else oper
                elif kind is None:  # IFLA_LINKINFO
                    b = p
                    while b + 4 <= q:
                        blen, btype = unpack(data, b)
                        if blen < 4:
                            break
                        if btype & _NLA_TYPE_MASK == IFLA_INFO_KIND:
                            kind = _asciiz(data[b + 4 : b + blen])
                            break
                        b += (blen + 3) & ~3
            a += (alen + 3) & ~3
        return cls(
            name=name,  # type: ignore[arg-type]
            index=index,
            kind=kind,
            up=bool(flags & IFF_UP),
            mac=mac,
            alias=alias,
            peer_index=peer_index,
            peer_nsid=peer_nsid,
            master=master,
            mtu=mtu or 0,
            oper_up=oper == IF_OPER_UP,
        )


def address_from_bytes(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, Any, int]:
    """(ifindex, IFA_ADDRESS, prefixlen) of one RTM_NEWADDR message, as pyroute2 decodes them."""
    (length,) = _U32.unpack_from(data, offset)
    end = offset + length
    family, prefixlen, _flags, _scope, index = _IFA.unpack_from(data, offset + 16)
    a = offset + 24
    while a + 4 <= end:
        alen, atype = _NLA.unpack_from(data, a)
        if alen < 4:
            break
        if atype & _NLA_TYPE_MASK == IFA_ADDRESS:
            return index, socket.inet_ntop(family, bytes(data[a + 4 : a + alen])), prefixlen
        a += (alen + 3) & ~3
    return index, None, prefixlen


def _asciiz(raw: bytes | bytearray | memoryview) -> Any:
    """pyroute2's asciiz: NULs stripped, UTF-8 when it decodes, bytes otherwise."""
    value = bytes(raw).strip(b"\0")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value


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


# -- pyroute2 message builders: the one place each link request's layout is defined ---------
def _ifinfmsg() -> Any:
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    return ifinfmsg()


def link_msg(name: str | None, *, up: bool | None, mac: str | None = None, mtu: int | None = None) -> Any:
    msg = _ifinfmsg()
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


def veth_msg(
    name: str,
    peer: str,
    mac: str | None = None,
    peer_mac: str | None = None,
    netns_fd: int | None = None,
    peer_netns_fd: int | None = None,
    up: bool = True,
    mtu: int | None = None,
) -> Any:
    """RTM_NEWLINK creating a veth, both ends named, the peer placed by namespace fd.

    (The peer cannot be brought up here: the kernel configures it before the pair is
    joined, and opening an unjoined veth fails with ENOTCONN.)"""
    peer_attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", peer)]
    if peer_mac:
        peer_attrs.append(("IFLA_ADDRESS", peer_mac))
    if peer_netns_fd is not None:
        peer_attrs.append(("IFLA_NET_NS_FD", peer_netns_fd))
    if mtu:
        peer_attrs.append(("IFLA_MTU", mtu))
    msg = link_msg(name, up=up, mac=mac, mtu=mtu)
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
    return msg


def set_msg(
    name: str,
    up: bool | None = None,
    alias: str | None = None,
    mac: str | None = None,
    master: int | None = None,
    mtu: int | None = None,
    new_name: str | None = None,
    netns_fd: int | None = None,
    index: int = 0,
) -> Any:
    """RTM_NEWLINK changing an existing link, found by name (or by index when given)."""
    msg = link_msg(name if not index else None, up=up, mac=mac, mtu=mtu)
    msg["index"] = index
    if new_name:
        msg["attrs"].append(("IFLA_IFNAME", new_name))
    if alias is not None:
        msg["attrs"].append(("IFLA_IFALIAS", alias))
    if master is not None:
        msg["attrs"].append(("IFLA_MASTER", master))
    if netns_fd is not None:
        msg["attrs"].append(("IFLA_NET_NS_FD", netns_fd))
    return msg


def name_msg(name: str) -> Any:
    """An ifinfomsg naming one link (for RTM_DELLINK and RTM_GETLINK)."""
    msg = _ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", name)]
    return msg


def empty_msg() -> Any:
    return _ifinfmsg()


def dump_links_msg(ext_mask: int = RTEXT_FILTER_SKIP_STATS) -> Any:
    msg = _ifinfmsg()
    msg["attrs"] = [("IFLA_EXT_MASK", ext_mask)]
    return msg


# -- templates -------------------------------------------------------------------------------
_MAC_FIELDS = frozenset({"mac", "peer_mac"})
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\Z")
_STR, _MAC, _INT = 0, 1, 2
_OPAQUE = object()  # a value the template scheme does not cover: pyroute2 encodes it whole
_MISSING = object()


def _shape(name: str, value: Any) -> Any:
    """What a template fixes about a field: presence, truthiness, kind, byte length."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return _INT if 0 < value < 1 << 31 else 0 if value == 0 else _OPAQUE
    if isinstance(value, str):
        if not value:
            return ""
        if name in _MAC_FIELDS:
            return _MAC if _MAC_RE.match(value) else _OPAQUE
        return (_STR, len(value.encode()))
    return _OPAQUE


def _markers(shape: Any, second: bool) -> Any:
    """Two values of one shape that differ in every byte pyroute2 writes for them."""
    if shape == _INT:
        return 0x02020202 if second else 0x01010101
    if shape == _MAC:
        return "02:02:02:02:02:02" if second else "01:01:01:01:01:01"
    return ("b" if second else "a") * shape[1]


class Template:
    """A pyroute2 encoding plus where each variable field sits in it."""

    __slots__ = ("base", "patches")

    def __init__(self, base: bytes, patches: list[tuple[str, int, int, int]]) -> None:
        self.base = base
        self.patches = patches  # (field, offset, kind, length)

    def render(self, seq: int, values: dict[str, Any]) -> bytes:
        out = bytearray(self.base)
        for name, off, kind, n in self.patches:
            v = values[name]
            if kind == _STR:
                out[off : off + n] = v.encode()
            elif kind == _MAC:
                out[off : off + 6] = bytes.fromhex(v.replace(":", ""))
            else:
                _U32.pack_into(out, off, v)
        _U32.pack_into(out, 8, seq)
        return bytes(out)


class Codec:
    """Encodes one kind of request (a builder, a message type, header flags) with templates."""

    MAX_TEMPLATES = 512

    def __init__(self, build: Callable[..., Any], mtype: int, flags: int) -> None:
        self.build = build
        self.mtype = mtype
        self.flags = flags
        self._templates: dict[tuple, Template | None] = {}

    def full(self, seq: int, values: dict[str, Any]) -> bytes:
        """pyroute2's own encoding, from scratch."""
        msg = self.build(**values)
        hdr = msg["header"]
        hdr["type"] = self.mtype
        hdr["flags"] = self.flags
        hdr["sequence_number"] = seq
        msg.encode()
        return bytes(msg.data)

    def encode(self, seq: int, values: dict[str, Any]) -> bytes:
        key = tuple([(k, _shape(k, v)) for k, v in values.items()])
        tpl = self._templates.get(key, _MISSING)
        if tpl is _MISSING:
            if len(self._templates) >= self.MAX_TEMPLATES:
                self._templates.clear()
            tpl = self._templates[key] = self.make_template(key, values, seq)
        if tpl is None:
            return self.full(seq, values)
        return tpl.render(seq, values)  # type: ignore[union-attr]

    def make_template(self, key: tuple, values: dict[str, Any], seq: int) -> Template | None:
        """Encode marker values with pyroute2 and locate each variable field by diffing;
        None (encode every such request in full) if anything is not as expected."""
        if any(shape is _OPAQUE for _, shape in key):
            return None
        variable = [(k, shape) for k, shape in key if shape in (_INT, _MAC) or isinstance(shape, tuple)]
        first = dict(values)
        first.update({k: _markers(shape, False) for k, shape in variable})
        base = self.full(0, first)
        patches = []
        for k, shape in variable:
            other = self.full(0, {**first, k: _markers(shape, True)})
            if len(other) != len(base):
                return None
            diff = [i for i in range(len(base)) if base[i] != other[i]]
            if not diff:
                continue  # not written for this shape (e.g. the name of a link set by index)
            kind, n = (_INT, 4) if shape == _INT else (_MAC, 6) if shape == _MAC else (_STR, shape[1])
            # one run of n bytes per place the field is written (an MTU goes on both veth ends)
            runs = [i for j, i in enumerate(diff) if j == 0 or diff[j - 1] != i - 1]
            if len(diff) != n * len(runs) or any(diff[diff.index(r) + n - 1] != r + n - 1 for r in runs):
                return None
            patches += [(k, r, kind, n) for r in runs]
        tpl = Template(base, patches)
        if tpl.render(seq, values) != self.full(seq, values):
            return None
        return tpl


_REQ_ACK = NLM_F_REQUEST | NLM_F_ACK
CREATE_VETH = Codec(veth_msg, RTM_NEWLINK, _REQ_ACK | NLM_F_CREATE | NLM_F_EXCL)
def _addr_msg(ifindex: int, cidr: str) -> Any:
    """An ifaddrmsg for `cidr` ("a.b.c.d/len" or IPv6) on interface `ifindex`."""
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    addr, plen = cidr.split("/")
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET6 if ":" in addr else socket.AF_INET
    msg["prefixlen"] = int(plen)
    msg["index"] = ifindex
    msg["attrs"] = [("IFA_LOCAL", addr), ("IFA_ADDRESS", addr)]
    return msg


SET_LINK = Codec(set_msg, RTM_NEWLINK, _REQ_ACK)
def messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset, type, sequence number) of each netlink message in a received buffer."""
    offset = 0
    while offset + 16 <= len(data):
        length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < 16:
            return
        yield offset, mtype, seq
        offset += (length + 3) & ~3


def _defaults(builder: Any) -> dict[str, Any]:
    """A message builder's optional keywords and their defaults: the one list of them."""
    return {p.name: p.default for p in inspect.signature(builder).parameters.values() if p.default is not p.empty}


def _given(defaults: dict[str, Any], given: dict[str, Any], what: str) -> dict[str, Any]:
    unknown = given.keys() - defaults.keys()
    if unknown:
        raise TypeError(f"{what}: unknown keyword {', '.join(sorted(unknown))}")
    return {**defaults, **given}


_SET_DEFAULTS = _defaults(set_msg)
_VETH_DEFAULTS = _defaults(veth_msg)
DEL_LINK = Codec(name_msg, RTM_DELLINK, _REQ_ACK)
GET_LINK = Codec(name_msg, RTM_GETLINK, NLM_F_REQUEST)
DUMP_LINKS = Codec(dump_links_msg, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP)


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
        self._marshal_: Any = None

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

    @property
    def _marshal(self) -> Any:
        if self._marshal_ is None:
            from pyroute2.netlink.rtnl.marshal import MarshalRtnl

            self._marshal_ = MarshalRtnl()
        return self._marshal_

    def close(self) -> None:
        self.sock.close()

    # -- requests -----------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _encode(self, msg: Any, mtype: int, flags: int) -> bytes:
        self._seq += 1
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        return bytes(msg.data)

    def queue(self, msg: Any, mtype: int, flags: int, what: str, ok: tuple[int, ...] = ()) -> None:
        """Queue a request built as a pyroute2 message."""
        self._push(self._encode(msg, mtype, flags | NLM_F_REQUEST | NLM_F_ACK), what, ok)

    def _push(self, data: bytes, what: str, ok: tuple[int, ...] = ()) -> None:
        self._queue.append(_Pending(data, what, ok))

    def _send(self, chunk: list[_Pending]) -> list[Failure]:
        """One sendmsg() of the chunk, then its acks."""
        failures: list[Failure] = []
        by_seq = {_U32.unpack_from(p.data, 8)[0]: p for p in chunk}
        self.sock.sendmsg([b"".join([p.data for p in chunk])])
        waiting = len(chunk)
        while waiting:
            data = self.sock.recv(1 << 20)
            for offset, mtype, seq in messages(data):
                if mtype == NLMSG_ERROR and seq in by_seq:
                    (err,) = _I32.unpack_from(data, offset + 16)
                    pending = by_seq.pop(seq)
                    waiting -= 1
                    if err and -err not in pending.ok_errnos:
                        failures.append(Failure(pending.what, -err))
        return failures

    def flush(self) -> list[Failure]:
        """Send everything queued, BATCH requests per sendmsg, and collect the failures."""
        failures: list[Failure] = []
        queue, self._queue = self._queue, []
        for start in range(0, len(queue), _BATCH):
            failures += self._send(queue[start : start + _BATCH])
        return failures

    def run(self) -> None:
        """Flush and raise on the first failure."""
        failures = self.flush()
        if failures:
            more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
            raise DpulabError(f"{self.netns or 'root'}: {failures[0]}{more}")

    @staticmethod
    def _seq_of(data: bytes) -> int:
        return _U32.unpack_from(data, 8)[0]

    def _request(self, data: bytes) -> int:
        """Send one request that is answered directly (not queued); its sequence number."""
        self.sock.sendall(data)
        return self._seq_of(data)

    def _replies(self, seq: int) -> Iterable[tuple[bytes, int, int]]:
        """(buffer, offset, type) of every reply to `seq` until NLMSG_DONE; raises on an error."""
        while True:
            data = self.sock.recv(1 << 20)
            for offset, mtype, mseq in messages(data):
                if mseq != seq:
                    continue
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    (code,) = _I32.unpack_from(data, offset + 16)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return
                yield data, offset, mtype

    def dump(self, msg: Any, mtype: int) -> list[Any]:
        data = self._encode(msg, mtype, NLM_F_REQUEST | NLM_F_DUMP)
        seq = self._request(data)
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
        seq = self._request(DUMP_LINKS.encode(self._next_seq(), {}))
        out: dict[str, LinkInfo] = {}
        for data, offset, mtype in self._replies(seq):
            if mtype == RTM_NEWLINK:
                li = LinkInfo.from_bytes(data, offset)
                out[li.name] = li
        return out

    def link(self, name: str) -> LinkInfo | None:
        """One link by name (a single request, not a dump); None if there is none."""
        seq = self._request(GET_LINK.encode(self._next_seq(), {"name": name}))
        try:
            for data, offset, mtype in self._replies(seq):
                if mtype == RTM_NEWLINK:
                    return LinkInfo.from_bytes(data, offset)
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return None

    def addresses(self) -> list[tuple[int, str, int]]:
        """(ifindex, address, prefixlen) for every IPv4/IPv6 address."""
        from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

        msg = ifaddrmsg()
        seq = self._request(self._encode(msg, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP))
        return [address_from_bytes(data, offset) for data, offset, mtype in self._replies(seq) if mtype == RTM_NEWADDR]

    def routes(self) -> list[tuple[str | None, int, int | None]]:
        """(destination, prefixlen, oif) of the main-table IPv4 routes."""
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

        msg = rtmsg()
        msg["family"] = socket.AF_INET
        return [
            (m.get_attr("RTA_DST"), m["dst_len"], m.get_attr("RTA_OIF"))
            for m in self.dump(msg, RTM_GETROUTE)
            if m.get_attr("RTA_TABLE") == 254
        ]

    def nsid_of(self, fd: int) -> int | None:
        """The id this namespace gives to another one (-1/None: none assigned)."""
        from pyroute2.netlink.rtnl.nsidmsg import nsidmsg

        msg = nsidmsg()
        msg["attrs"] = [("NETNSA_FD", fd)]
        self._request(self._encode(msg, RTM_GETNSID, NLM_F_REQUEST))
        for m in self._marshal.parse(self.sock.recv(65536)):
            if m["header"]["type"] == NLMSG_ERROR:
                return None
            nsid = m.get_attr("NETNSA_NSID")
            return None if nsid is None or nsid < 0 else nsid
        return None

    def add_veth(self, name: str, peer: str, *, what: str = "", **options: Any) -> None:
        """Queue one veth, both ends named and placed in their namespaces by the one request;
        `options` are `veth_msg`'s: mac, peer_mac, netns_fd, peer_netns_fd, up, mtu."""
        values = {**_given(_VETH_DEFAULTS, options, "add_veth"), "name": name, "peer": peer}
        self._push(CREATE_VETH.encode(self._next_seq(), values), what or f"create veth {name}/{peer}")

    def add_bridge(self, name: str, *, mtu: int | None = None) -> None:
        msg = link_msg(name, up=True, mtu=mtu)
        msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}))
        self.queue(msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create bridge {name}")

    def set_link(self, name: str, **changes: Any) -> None:
        """Queue a change to an existing link, found by name (or `index` when given); the
        keywords are `set_msg`'s: up, alias, mac, master, mtu, new_name, netns_fd, index."""
        values = {**_given(_SET_DEFAULTS, changes, "set_link"), "name": name}
        self._push(SET_LINK.encode(self._next_seq(), values), f"set {name}")

    def del_link(self, name: str, *, missing_ok: bool = True) -> None:
        self._push(
            DEL_LINK.encode(self._next_seq(), {"name": name}), f"delete {name}", (errno.ENODEV,) if missing_ok else ()
        )

    def add_address(self, ifindex: int, cidr: str) -> None:
        self.queue(_addr_msg(ifindex, cidr), RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, f"address {cidr}", (errno.EEXIST,))

    def del_address(self, ifindex: int, cidr: str) -> None:
        self.queue(_addr_msg(ifindex, cidr), RTM_DELADDR, 0, f"delete address {cidr}", (errno.EADDRNOTAVAIL,))

    def add_route(self, dst: str, *, gateway: str | None = None, oif: int | None = None) -> None:
        from pyroute2.netlink.rtnl.rtmsg import rtmsg

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

    _link_msg = staticmethod(link_msg)


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
