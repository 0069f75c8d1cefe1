"""The lab as pure data: nodes, host/DPU pairs, links, names, MACs, addresses.

No side effects: everything here is computed from a LabSpec, so it is testable
without root and is what `plan`, the engines and `verify` all agree on.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Iterator, Literal

if TYPE_CHECKING:
    from .spec import LabSpec

Role = Literal["control-plane", "host", "dpu"]
CLUSTER_IFNAME = "eth0"
MARK_PREFIX = "dpulab"


def worker_name(lab: str, n: int) -> str:
    """kind's worker names: worker 1 has no number."""
    return f"{lab}-worker" if n == 1 else f"{lab}-worker{n}"


PRESETS = {"seed": ("eth0-{vf}", "rep{pair}-{vf}"), "ovnk": ("eth0-{vf}", "rep0-{vf}")}


def templates(spec: "LabSpec") -> tuple[str, str]:
    vf, rep = PRESETS[spec.naming]
    return spec.names.vf or vf, spec.names.rep or rep


def fill(template: str, pair: int, index: int) -> str:
    return template.format(pair=pair, pf=0, vf=index)


def mac_for(node: str, role: str, index: int) -> str:
    """Upstream's deterministic MAC: 52:54:00 + sha256(node NUL role)[:2] + index byte."""
    digest = hashlib.sha256(f"{node}\x00{role}".encode()).digest()
    # upstream's formula for index < 256; above, the high byte is folded in so MACs stay unique
    return "52:54:00:%02x:%02x:%02x" % (digest[0], digest[1] ^ (index >> 8 & 0xFF), index & 0xFF)


def mark(lab: str, *parts: object) -> str:
    """The ownership mark dpulab writes as an interface alias: `dpulab:<lab>:<what>`."""
    return ":".join([MARK_PREFIX, lab, *map(str, parts)])


def interface_names(spec: "LabSpec") -> Iterator[str]:
    """Every interface name the spec will produce (checked against IFNAMSIZ at parse time)."""
    yield CLUSTER_IFNAME
    vf, rep = templates(spec)
    for pair in (0, spec.pairs - 1):
        for index in (0, spec.vfs - 1):
            yield fill(vf, pair, index)
            yield fill(rep, pair, index)
    yield bridge_port_name(2 * spec.pairs)


def bridge_port_name(worker: int) -> str:
    """Name of a node's port on the cluster bridge (inside the cluster-network namespace)."""
    return "cp" if worker == 0 else f"w{worker}"


@dataclass(frozen=True)
class Node:
    name: str
    role: Role
    worker: int  # 0 for the control plane, kind's worker number otherwise
    pair: int | None = None
    cluster_ip: str | None = None  # "a.b.c.d/len" on eth0; hosts have none

    @property
    def cluster_address(self) -> str | None:
        return self.cluster_ip.split("/")[0] if self.cluster_ip else None


@dataclass(frozen=True)
class Link:
    """One simulated VF: host `eth0-<i>` <-> DPU representor, one veth."""

    pair: int
    index: int
    host: str
    host_ifname: str
    host_mac: str
    dpu: str
    rep_ifname: str
    rep_mac: str

    @property
    def pf(self) -> int:
        return 0  # each DPU serves one host: one PF


@dataclass(frozen=True)
class Pair:
    index: int
    host: Node
    dpu: Node


@dataclass(frozen=True)
class Topology:
    spec: "LabSpec"

    @property
    def lab(self) -> str:
        return self.spec.name

    @cached_property
    def control_plane(self) -> Node:
        return Node(f"{self.lab}-control-plane", "control-plane", 0, None, self._cluster_ip(0))

    @cached_property
    def pairs(self) -> tuple[Pair, ...]:
        out = []
        for p in range(self.spec.pairs):
            hw, dw = 2 * p + 1, 2 * p + 2
            host = Node(worker_name(self.lab, hw), "host", hw, p)
            dpu = Node(worker_name(self.lab, dw), "dpu", dw, p, self._cluster_ip(dw))
            out.append(Pair(p, host, dpu))
        return tuple(out)

    @cached_property
    def nodes(self) -> tuple[Node, ...]:
        """All nodes in kind's order: control plane, then workers by number."""
        return (self.control_plane, *(n for pr in self.pairs for n in (pr.host, pr.dpu)))

    @property
    def hosts(self) -> tuple[Node, ...]:
        return tuple(p.host for p in self.pairs)

    @property
    def dpus(self) -> tuple[Node, ...]:
        return tuple(p.dpu for p in self.pairs)

    @property
    def cluster_members(self) -> tuple[Node, ...]:
        return (self.control_plane, *self.dpus)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def pair_of(self, node: str) -> Pair:
        for p in self.pairs:
            if node in (p.host.name, p.dpu.name):
                return p
        raise KeyError(node)

    def pair_as(self, node: str, role: Role) -> Pair:
        """The pair whose `role` node is `node`; InputError (one line) for anything else."""
        from .errors import InputError

        try:
            pair = self.pair_of(node)
        except KeyError:
            raise InputError(f"{node} is not a node of lab {self.lab}") from None
        want = getattr(pair, role).name
        if want != node:
            raise InputError(f"{node} is not a {role}: its pair's {role} is {want}")
        return pair

    def links(self, pair: Pair) -> tuple[Link, ...]:
        h, d = pair.host.name, pair.dpu.name
        vf, rep = templates(self.spec)
        return tuple(
            Link(
                pair.index,
                i,
                h,
                fill(vf, pair.index, i),
                mac_for(h, "host", i),
                d,
                fill(rep, pair.index, i),
                mac_for(d, "dpu", i),
            )
            for i in range(self.spec.vfs)
        )

    @property
    def all_links(self) -> Iterator[Link]:
        for p in self.pairs:
            yield from self.links(p)

    @property
    def cluster_netns(self) -> str:
        """Namespace holding the cluster bridge (netns engine): never the machine's own."""
        return f"{self.lab}-net"

    @property
    def cluster_bridge(self) -> str:
        return "kind"

    @cached_property
    def cluster_network(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.spec.cluster.subnet)

    def _cluster_ip(self, worker: int) -> str:
        net = ipaddress.ip_network(self.spec.cluster.subnet)
        return f"{net.network_address + 2 + worker}/{net.prefixlen}"
