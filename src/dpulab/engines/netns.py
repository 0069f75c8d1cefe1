"""The embedded default: every node a named network namespace, the cluster network a
bridge in a namespace of its own. Needs nothing but the kernel."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .. import intent, namespaces
from ..netlink import Rtnl, Sockets
from ..plan import ADDRESS, CLUSTER, CREATE_LINK, CREATE_NODE, SET_LINK, Action, is_half_made, is_ours
from ..topology import CLUSTER_IFNAME, Node, bridge_port_name, mac_for, mark
from .base import Engine, NodeStatus

if TYPE_CHECKING:
    from ..topology import Topology


def node_mark(lab: str, ns: str) -> str:
    return mark(lab, "node", ns)


def ns_status(lab: str, ns: str, socks: Sockets) -> NodeStatus:
    """A namespace is ours when its `lo` carries our mark (written the moment it is made)."""
    if not namespaces.exists(ns):
        return NodeStatus.MISSING
    try:
        lo = socks(ns).link("lo")
    except OSError:
        # an empty placeholder our journal names: a create of ours was killed; `up` remakes it
        return NodeStatus.MISSING if intent.leftover(lab, ns) else NodeStatus.FOREIGN
    return NodeStatus.OURS if lo is not None and lo.alias == node_mark(lab, ns) else NodeStatus.FOREIGN


def _mark_lo(lab: str, ns: str) -> None:
    r = Rtnl()  # runs inside namespaces.create: this thread is in the new namespace
    try:
        r.set_link("lo", up=True, alias=node_mark(lab, ns))
        r.run()
    finally:
        r.close()


def create_marked_ns(lab: str, ns: str, socks: Sockets) -> None:
    """Make the namespace with `lo` marked before its name appears, under the intent journal."""
    if intent.leftover(lab, ns):
        socks.forget(ns)
        namespaces.remove(ns)
    intent.record(lab, ns)
    try:
        namespaces.create(ns, setup=lambda: _mark_lo(lab, ns))
    except FileExistsError:
        intent.done(lab, ns)  # not made by us: the journal must not claim it
        raise
    except BaseException:
        if not namespaces.is_placeholder(ns):  # a Ctrl-C can leave the placeholder: the entry stays
            intent.done(lab, ns)
        raise
    intent.done(lab, ns)  # marked now


class NetnsEngine(Engine):
    name = "netns"

    def __init__(self, topo: "Topology") -> None:
        super().__init__(topo)

    @property
    def cluster_ns(self) -> str:
        return self.topo.cluster_netns

    def node_status(self, node: Node, socks: Sockets) -> NodeStatus:
        return ns_status(self.topo.lab, node.name, socks)

    def node_actions(self, socks: Sockets, statuses: dict[str, NodeStatus], keep: set[str]) -> list[Action]:
        lab = self.topo.lab
        actions = [
            Action(CREATE_NODE, n, "network namespace", lambda s, n=n: create_marked_ns(lab, n, s))
            for n, st in statuses.items()
            if st is NodeStatus.MISSING
        ]
        actions += self._cluster_actions(socks, statuses)
        actions += self._surplus_actions(keep)
        return actions

    # -- the cluster network ------------------------------------------------------------
    def _cluster_actions(self, socks: Sockets, statuses: dict[str, NodeStatus]) -> list[Action]:
        from ..errors import NotOursError

        lab, cns, topo = self.topo.lab, self.cluster_ns, self.topo
        bridge = topo.cluster_bridge
        mtu = topo.spec.cluster.mtu
        actions: list[Action] = []
        cstatus = ns_status(lab, cns, socks)
        if cstatus is NodeStatus.FOREIGN:
            raise NotOursError(f"namespace {cns} exists but is not part of lab {lab!r}")
        clinks = socks(cns).links() if cstatus is NodeStatus.OURS else {}
        if cstatus is NodeStatus.MISSING:
            actions.append(Action(CREATE_NODE, cns, "cluster network namespace", lambda s: create_marked_ns(lab, cns, s)))
        br = clinks.get(bridge)
        if br is not None and not is_ours(br, lab):
            raise NotOursError(f"{cns}: bridge {bridge} exists and is not ours")
        if br is None or br.kind != "bridge":

            def make_bridge(s: Sockets) -> None:
                s(cns).add_bridge(bridge, mtu=mtu)
                s(cns).set_link(bridge, alias=mark(lab, "bridge"))

            actions.append(Action(CLUSTER, f"{cns}/{bridge}", "bridge", make_bridge))
        for node in topo.cluster_members:
            nlinks = socks(node.name).links() if statuses[node.name] is NodeStatus.OURS else {}
            actions += self._member_actions(node, nlinks, clinks, br, socks)
        return actions

    def _member_actions(self, node: Node, nlinks: dict, clinks: dict, br, socks: Sockets) -> list[Action]:
        from ..errors import NotOursError

        lab, cns, bridge = self.topo.lab, self.cluster_ns, self.topo.cluster_bridge
        mtu = self.topo.spec.cluster.mtu
        port = bridge_port_name(node.worker)
        mac = mac_for(node.name, "cluster", 0)
        eth, p = nlinks.get(CLUSTER_IFNAME), clinks.get(port)
        # a kill between creating the veth and marking it leaves it unmarked: the node end
        # still carries the MAC only we give it, and the port is its peer
        eth_ours = eth is not None and (is_ours(eth, lab) or is_half_made(eth, mac))
        p_ours = p is not None and (
            is_ours(p, lab) or (eth_ours and p.alias is None and eth.peer_index == p.index and p.peer_index == eth.index)
        )
        for info, where, ours in ((eth, node.name, eth_ours), (p, cns, p_ours)):
            if info is not None and not ours:
                raise NotOursError(f"{where}: interface {info.name} exists and is not ours")
        good = (
            eth is not None
            and p is not None
            and eth.peer_index == p.index
            and p.peer_index == eth.index
            and br is not None
            and p.master == br.index
            and eth.up
            and p.up
        )
        actions: list[Action] = []
        if not good:
            if eth is not None:
                actions.append(Action(CLUSTER, f"{node.name}/{CLUSTER_IFNAME}", "delete (miswired)", lambda s: s(node.name).del_link(CLUSTER_IFNAME)))
            if p is not None:
                actions.append(Action(CLUSTER, f"{cns}/{port}", "delete (miswired)", lambda s: s(cns).del_link(port)))

            def make(s: Sockets) -> None:
                s(node.name).add_veth(CLUSTER_IFNAME, port, mac=mac, peer_netns_fd=s.fd(cns), mtu=mtu)

            def setup(s: Sockets) -> None:
                s(node.name).set_link(CLUSTER_IFNAME, up=True, alias=mark(lab, "cluster", node.name))
                master = s(cns).links()[bridge].index
                s(cns).set_link(port, up=True, alias=mark(lab, "port", node.name), master=master)

            actions.append(Action(CREATE_LINK, f"{node.name}/{CLUSTER_IFNAME}", f"veth <-> {cns}/{port}", make))
            actions.append(Action(SET_LINK, f"{node.name}/{CLUSTER_IFNAME}", "up, mark, bridge port", setup))
        have_addr = False
        if good and eth is not None:
            want = node.cluster_ip.split("/")
            # anywhere in the node: with the data plane the address moves to OVS's br-phy
            have_addr = any(a == want[0] and plen == int(want[1]) for _, a, plen in socks(node.name).addresses())
        if not have_addr:

            def address(s: Sockets) -> None:
                idx = s(node.name).links()[CLUSTER_IFNAME].index
                s(node.name).add_address(idx, node.cluster_ip)

            actions.append(Action(ADDRESS, f"{node.name}/{CLUSTER_IFNAME}", node.cluster_ip, address))
        return actions


    # -- nodes that are ours but no longer wanted ---------------------------------------
    def _surplus_actions(self, keep: set[str]) -> list[Action]:
        from ..plan import DELETE_NODE

        wanted = {n.name for n in self.topo.nodes} | {self.cluster_ns} | keep
        return [
            Action(DELETE_NODE, ns, "ours, no longer in the lab", lambda s, ns=ns: self._remove(ns, s))
            for ns in self.orphans()
            if ns not in wanted
        ]

    def orphans(self) -> list[str]:
        """Namespaces whose `lo` carries this lab's mark, whatever their names."""
        out = []
        lab = self.topo.lab
        prefix = mark(lab, "node") + ":"
        out += intent.leftovers(lab)  # placeholders of creates that were killed
        for ns in namespaces.names():
            if not ns.startswith(lab + "-"):
                continue  # a cheap filter only: the mark decides
            try:
                r = Rtnl(ns)
            except OSError:
                continue
            try:
                lo = r.link("lo")
            finally:
                r.close()
            if lo is not None and lo.alias == prefix + ns:
                out.append(ns)
        return out

    def _remove(self, ns: str, socks: Sockets) -> None:
        socks.forget(ns)
        namespaces.remove(ns)

    def delete_nodes(self, names: Sequence[str], socks: Sockets) -> list[str]:
        removed = []
        for ns in names:
            if ns_status(self.topo.lab, ns, socks) is NodeStatus.OURS or intent.leftover(self.topo.lab, ns):
                self._remove(ns, socks)
                removed.append(ns)
        return removed
