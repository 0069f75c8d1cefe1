"""The netlink shortcuts are byte-for-byte pyroute2: templated requests equal pyroute2's own
encoding, and the direct link/address decoders read what pyroute2's parser reads.

Runs without root, except the last test (a real dump from a namespace)."""

from __future__ import annotations

import random
import socket
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroute2.netlink import rtnl as p2rtnl
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

import pyroute2.netlink as p2
from dpulab import netlink as nl

from .conftest import needs_root

NAME_CHARS = string.ascii_letters + string.digits + "-_.@"
names = st.text(alphabet=NAME_CHARS, min_size=1, max_size=15)
utf8_names = st.text(alphabet=NAME_CHARS + "éü€", min_size=1, max_size=5)  # multi-byte UTF-8 too
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(lambda b: ":".join("%02x" % x for x in b))
upper_macs = macs.map(str.upper)
ints = st.integers(1, (1 << 31) - 1)
aliases = st.text(alphabet=NAME_CHARS + ":", min_size=0, max_size=60)
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_constants_are_pyroute2s():
    for name in ("NLM_F_REQUEST", "NLM_F_ACK", "NLM_F_EXCL", "NLM_F_CREATE", "NLM_F_DUMP", "NLMSG_ERROR", "NLMSG_DONE"):
        assert getattr(nl, name) == getattr(p2, name), name
    for name in ("RTM_NEWLINK", "RTM_DELLINK", "RTM_GETLINK", "RTM_NEWADDR", "RTM_DELADDR", "RTM_GETADDR",
                 "RTM_NEWROUTE", "RTM_GETROUTE", "RTM_GETNSID"):
        assert getattr(nl, name) == getattr(p2rtnl, name), name
    positions = {entry[0]: i for i, entry in enumerate(ifinfmsg.nla_map)}  # pyroute2 numbers attributes by position
    for name in ("IFLA_ADDRESS", "IFLA_IFNAME", "IFLA_MTU", "IFLA_LINK", "IFLA_MASTER", "IFLA_OPERSTATE",
                 "IFLA_LINKINFO", "IFLA_IFALIAS", "IFLA_LINK_NETNSID", "IFLA_EXT_MASK"):
        assert getattr(nl, name) == positions[name], name


@SETTINGS
@given(
    name=st.one_of(names, utf8_names),
    peer=names,
    mac=st.one_of(st.none(), macs, upper_macs),
    peer_mac=st.one_of(st.none(), macs),
    netns_fd=st.one_of(st.none(), ints),
    peer_netns_fd=st.one_of(st.none(), st.just(0), ints),
    up=st.booleans(),
    mtu=st.one_of(st.none(), st.just(0), ints),
    seq=st.integers(1, (1 << 32) - 1),
)
def test_create_veth_is_pyroute2s_encoding(name, peer, mac, peer_mac, netns_fd, peer_netns_fd, up, mtu, seq):
    values = dict(name=name, peer=peer, mac=mac, peer_mac=peer_mac, netns_fd=netns_fd,
                  peer_netns_fd=peer_netns_fd, up=up, mtu=mtu)
    assert nl.CREATE_VETH.encode(seq, values) == nl.CREATE_VETH.full(seq, values)


@SETTINGS
@given(
    name=st.one_of(names, utf8_names),
    up=st.one_of(st.none(), st.booleans()),
    alias=st.one_of(st.none(), aliases),
    mac=st.one_of(st.none(), macs),
    master=st.one_of(st.none(), ints),
    mtu=st.one_of(st.none(), st.just(0), ints),
    new_name=st.one_of(st.none(), names),
    netns_fd=st.one_of(st.none(), ints),
    index=st.one_of(st.just(0), ints),
    seq=st.integers(1, (1 << 32) - 1),
)
def test_set_link_is_pyroute2s_encoding(name, up, alias, mac, master, mtu, new_name, netns_fd, index, seq):
    values = dict(name=name, up=up, alias=alias, mac=mac, master=master, mtu=mtu, new_name=new_name,
                  netns_fd=netns_fd, index=index)
    assert nl.SET_LINK.encode(seq, values) == nl.SET_LINK.full(seq, values)


@SETTINGS
@given(name=st.one_of(names, utf8_names), seq=st.integers(1, (1 << 32) - 1))
def test_name_requests_are_pyroute2s_encoding(name, seq):
    for codec in (nl.DEL_LINK, nl.GET_LINK):
        assert codec.encode(seq, {"name": name}) == codec.full(seq, {"name": name})
    assert nl.DUMP_LINKS.encode(seq, {}) == nl.DUMP_LINKS.full(seq, {})


def test_dpulabs_requests_use_templates_and_match_many_inputs():
    """The shapes dpulab sends per link are templated (not silently encoded in full), and one
    template renders thousands of other inputs exactly as pyroute2 would."""
    rnd = random.Random(6)
    codec = nl.Codec(nl.veth_msg, nl.RTM_NEWLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_EXCL)
    setter = nl.Codec(nl.set_msg, nl.RTM_NEWLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK)
    for i in range(3000):
        p, vf = rnd.randrange(64), rnd.randrange(4096)
        mac = lambda: "52:54:00:%02x:%02x:%02x" % (rnd.randrange(256), rnd.randrange(256), vf & 0xFF)  # noqa: E731
        veth = dict(name=f"eth0-{vf}", peer=f"rep{p}-{vf}", mac=mac(), peer_mac=mac(), netns_fd=None,
                    peer_netns_fd=rnd.randrange(3, 4096), up=True, mtu=None)
        seq = rnd.randrange(1, 1 << 32)
        assert codec.encode(seq, veth) == codec.full(seq, veth)
        for values in (
            dict(name=f"eth0-{vf}", up=None, alias=f"dpulab:lab{p}:vf:pf0vf{vf}", mac=None, master=None, mtu=None,
                 new_name=None, netns_fd=None, index=0),
            dict(name=f"rep{p}-{vf}", up=True, alias=f"dpulab:lab{p}:rep:pf0vf{vf}", mac=None, master=None, mtu=None,
                 new_name=None, netns_fd=None, index=0),
            dict(name=f"eth0-{vf}", up=None, alias=None, mac=None, master=None, mtu=None, new_name="eth0",
                 netns_fd=rnd.randrange(3, 100), index=rnd.randrange(1, 1 << 20)),
        ):
            assert setter.encode(seq, values) == setter.full(seq, values)
    for c in (codec, setter):
        assert c._templates and all(t is not None for t in c._templates.values())
    # a handful of shapes (name and alias lengths) serve all 3,000 links
    assert len(codec._templates) < 30 and len(setter._templates) < 60


def test_values_outside_the_scheme_fall_back_to_pyroute2():
    odd = [
        dict(name="a", peer="b", mac="2:0:0:0:0:1", peer_mac=None, netns_fd=None, peer_netns_fd=None, up=True, mtu=None),
        dict(name="a", peer="b", mac=None, peer_mac=None, netns_fd=None, peer_netns_fd=None, up=True, mtu=1 << 31),
    ]
    for values in odd:
        assert nl.CREATE_VETH.encode(9, values) == nl.CREATE_VETH.full(9, values)
    set_by_index = dict(name="x", up=True, alias=None, mac=None, master=None, mtu=None, new_name=None, netns_fd=None,
                        index=-5)
    assert nl.SET_LINK.encode(3, set_by_index) == nl.SET_LINK.full(3, set_by_index)


def test_builder_says_what_it_means():
    """pyroute2 decodes the create request back to the values given (peer placed by fd, peer MAC)."""
    data = nl.CREATE_VETH.encode(7, dict(name="eth0-3", peer="rep1-3", mac="52:54:00:01:02:03",
                                         peer_mac="52:54:00:0a:0b:0c", netns_fd=None, peer_netns_fd=11, up=True,
                                         mtu=None))
    (m,) = MarshalRtnl().parse(data)
    assert m["header"]["type"] == nl.RTM_NEWLINK and m["header"]["sequence_number"] == 7
    assert m["flags"] & 1 and m["change"] & 1
    assert m.get_attr("IFLA_IFNAME") == "eth0-3" and m.get_attr("IFLA_ADDRESS") == "52:54:00:01:02:03"
    info = m.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "rep1-3" and peer.get_attr("IFLA_ADDRESS") == "52:54:00:0a:0b:0c"
    assert peer.get_attr("IFLA_NET_NS_FD") == 11


def _newlink(attrs: list, index: int, flags: int) -> bytes:
    m = ifinfmsg()
    m["index"], m["flags"], m["change"] = index, flags, 0
    m["attrs"] = attrs
    m["header"]["type"] = nl.RTM_NEWLINK
    m["header"]["sequence_number"] = 1
    m.encode()
    return bytes(m.data)


@SETTINGS
@given(
    name=names,
    index=ints,
    up=st.booleans(),
    mac=st.one_of(st.none(), macs),
    alias=st.one_of(st.none(), st.text(alphabet=NAME_CHARS + ":", min_size=1, max_size=60)),
    link=st.one_of(st.none(), ints),
    nsid=st.one_of(st.none(), st.integers(-1, 1000)),
    master=st.one_of(st.none(), ints),
    mtu=st.one_of(st.none(), ints),
    oper=st.one_of(st.none(), st.sampled_from(["UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN"])),
    kind=st.one_of(st.none(), st.sampled_from(["veth", "bridge", "dummy"])),
    order=st.randoms(use_true_random=False),
)
def test_link_decoder_reads_what_pyroute2_reads(name, index, up, mac, alias, link, nsid, master, mtu, oper, kind, order):
    attrs: list = [("IFLA_IFNAME", name), ("IFLA_TXQLEN", 1000)]
    for key, value in (("IFLA_ADDRESS", mac), ("IFLA_IFALIAS", alias), ("IFLA_LINK", link),
                       ("IFLA_LINK_NETNSID", nsid), ("IFLA_MASTER", master), ("IFLA_MTU", mtu),
                       ("IFLA_OPERSTATE", oper)):
        if value is not None:
            attrs.append((key, value))
    if kind:
        attrs.append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}))
    order.shuffle(attrs)
    data = _newlink(attrs, index, 1 if up else 0)
    (m,) = MarshalRtnl().parse(data)
    assert nl.LinkInfo.from_bytes(data) == nl.LinkInfo.from_msg(m)


@pytest.mark.parametrize("family,addr,plen", [(socket.AF_INET, "172.18.0.4", 16), (socket.AF_INET6, "fe80::5054:ff:fe01:203", 64)])
def test_address_decoder_reads_what_pyroute2_reads(family, addr, plen):
    m = ifaddrmsg()
    m["family"], m["prefixlen"], m["index"] = family, plen, 42
    m["attrs"] = [("IFA_ADDRESS", addr), ("IFA_LOCAL", addr), ("IFA_LABEL", "eth0")]
    m["header"]["type"] = nl.RTM_NEWADDR
    m.encode()
    data = bytes(m.data)
    (p,) = MarshalRtnl().parse(data)
    assert nl.address_from_bytes(data) == (p["index"], p.get_attr("IFA_ADDRESS"), p["prefixlen"]) == (42, addr, plen)


@needs_root
def test_real_dumps_decode_as_pyroute2_decodes(lab_name):
    from dpulab import namespaces

    ns = f"{lab_name}-codec"
    namespaces.create(ns)
    try:
        r = nl.Rtnl(ns)
        try:
            r.add_bridge("br0", mtu=1400)
            r.add_veth("a0", "b0", mac="52:54:00:00:00:01", peer_mac="52:54:00:00:00:02")
            r.add_veth("a1", "b1")
            r.run()
            br = r.links()["br0"].index
            r.set_link("b0", up=True, alias="dpulab:x:rep:pf0vf0", master=br)
            r.set_link("lo", up=True, alias="dpulab:x:node")
            r.run()
            r.add_address(r.links()["br0"].index, "10.9.8.7/24")
            r.run()
            for codec, mtype, decode in (
                (nl.DUMP_LINKS, nl.RTM_NEWLINK, lambda d: nl.LinkInfo.from_bytes(d)),
                (None, nl.RTM_NEWADDR, nl.address_from_bytes),
            ):
                if codec is not None:
                    r.sock.sendall(codec.encode(99, {}))
                else:
                    m = ifaddrmsg()
                    r.sock.sendall(r._encode(m, nl.RTM_GETADDR, nl.NLM_F_REQUEST | nl.NLM_F_DUMP))
                mine, theirs = [], []
                done = False
                while not done:
                    chunk = r.sock.recv(1 << 20)
                    for m in MarshalRtnl().parse(chunk):
                        if m["header"]["type"] == nl.NLMSG_DONE:
                            done = True
                        elif m["header"]["type"] == mtype:
                            theirs.append(nl.LinkInfo.from_msg(m) if mtype == nl.RTM_NEWLINK
                                          else (m["index"], m.get_attr("IFA_ADDRESS"), m["prefixlen"]))
                    off = 0
                    while off + 16 <= len(chunk):
                        length, t = nl._HDR.unpack_from(chunk, off)[:2]
                        if t == mtype:
                            mine.append(decode(chunk[off : off + length]))
                        off += (length + 3) & ~3
                assert mine == theirs and len(mine) >= (5 if mtype == nl.RTM_NEWLINK else 1)
            assert r.link("b0").alias == "dpulab:x:rep:pf0vf0" and r.link("b0").master == br
            assert r.link("nothere") is None
        finally:
            r.close()
    finally:
        namespaces.remove(ns)
