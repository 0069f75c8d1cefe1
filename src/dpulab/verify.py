"""`verify`: checks that read the kernel (links, peers, addresses, routes, probes),
never the lab's own records. The topology says what should be; the kernel says what is."""

from __future__ import annotations

import errno
import ipaddress
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from . import namespaces, probe
from .netlink import Sockets
from .topology import CLUSTER_IFNAME, Topology

if TYPE_CHECKING:
    from .engines import Engine
    from .ovnk.options import OvnkOptions


@dataclass
class Check:
    check: str
    node: str
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


# Interfaces the OVS userspace datapath adds on a DPU.
DATAPLANE_IFACES = {"br-int", "br-phy", "ovs-netdev", "genev_sys_6081", "vxlan_sys_4789"}

# What OVN-Kubernetes adds in a kind node once deployed: the OVS kernel datapath, the
# shared gateway bridge on the uplink, the management port (an OVS internal port in full
# mode), the tunnel devices; and the host end of each pod's veth, named by its CNI after
# the container ID (`containerID[:15]`).
OVNK_MGMT_IFNAME = "ovn-k8s-mp0"
OVNK_DPU_IFACES = frozenset({"ovs-system", "br-int", "breth0", "genev_sys_6081", "vxlan_sys_4789", OVNK_MGMT_IFNAME})
OVNK_POD_VETH = r"[0-9a-f]{15}"


@dataclass
class Allowed:
    """What may be on a node besides the lab's own links, given what runs there.

    `*_renamed`: a lab link name -> the name software running there gives that very link
    (found under either; the peers check still proves it is the lab's veth).
    """

    dpu: frozenset[str] = frozenset()
    host: frozenset[str] = frozenset()
    dpu_pattern: str | None = None  # further names allowed on DPUs (a full-match regex)
    dpu_renamed: dict[str, str] = field(default_factory=dict)
    host_renamed: dict[str, str] = field(default_factory=dict)

    def dpu_extra(self, names: set[str]) -> set[str]:
        """Of names not the lab's own on a DPU, those nothing running there explains."""
        return {n for n in names - self.dpu if not (self.dpu_pattern and re.fullmatch(self.dpu_pattern, n))}


def ovnk_allowed(topo: Topology, opts: "OvnkOptions") -> Allowed:
    """On a kind lab with OVN-Kubernetes deployed: its interfaces, and the management VF
    renamed ovn-k8s-mp0 on both ends (dpu-host renames the VF, DPU mode its representor)."""
    mgmt = [link for pair in topo.pairs for link in topo.links(pair) if link.host_ifname == opts.mgmt_port_netdev]
    return Allowed(
        dpu=OVNK_DPU_IFACES,
        dpu_pattern=OVNK_POD_VETH,
        dpu_renamed={link.rep_ifname: OVNK_MGMT_IFNAME for link in mgmt},
        host_renamed={link.host_ifname: OVNK_MGMT_IFNAME for link in mgmt},
    )


def _named(links: dict, name: str, renamed: dict[str, str]) -> str:
    """The name a lab link has in the node: its own, or the one software there gave it."""
    alt = renamed.get(name)
    return alt if name not in links and alt is not None and alt in links else name


def verify_topology(
    topo: Topology,
    engine: "Engine",
    socks: Sockets,
    *,
    held: dict[tuple[str, int], str] | None = None,
    dataplane: bool = False,
    allowed: Allowed | None = None,
) -> list[Check]:
    """Host/DPU wiring, isolation and cluster reachability, all read from the kernel.

    `held` maps (host, vf) to the pod namespace a VF was moved into: it counts as present there.
    `dataplane`: dpulab's own OVN data plane runs on the DPUs; `allowed`: what else runs
    there (OVN-Kubernetes on a kind lab). Without either, a node holds the lab's links only.
    """
    held = held or {}
    allowed = allowed or Allowed()
    if dataplane:
        allowed = replace(allowed, dpu=allowed.dpu | DATAPLANE_IFACES)
    checks: list[Check] = []
    present = set()
    for node in topo.nodes:
        ns = engine.netns(node.name)
        ok = namespaces.exists(ns)
        if ok:
            present.add(node.name)
        checks.append(Check("namespace", node.name, ok, str(namespaces.path(ns)) if ok else "missing"))
    links = {n: socks(engine.netns(n)).links() for n in present}
    for pair in topo.pairs:
        h, d = pair.host.name, pair.dpu.name
        if h not in present or d not in present:
            continue
        hl, dl = links[h], links[d]
        want = topo.links(pair)
        # interfaces held by pods live in the pod's namespace, renamed eth0
        pod_ends = {}
        for link in want:
            if (h, link.index) in held:
                pod_ns = held[(h, link.index)]
                info = socks(pod_ns).links().get("eth0") if namespaces.exists(pod_ns) else None
                pod_ends[link.index] = (pod_ns, info)
        hname = {link.index: _named(hl, link.host_ifname, allowed.host_renamed) for link in want}
        names = set(hl) - {"lo"}
        expected = {hname[link.index] for link in want if link.index not in pod_ends}
        unexpected = names - expected - allowed.host
        missing_pod = [i for i, (_, info) in pod_ends.items() if info is None]
        ok = expected <= names and not unexpected and not missing_pod
        detail = f"{len(names & expected) + len(pod_ends) - len(missing_pod)}/{topo.spec.vfs} VFs"
        if pod_ends:
            detail += f" ({len(pod_ends) - len(missing_pod)} in pods)"
        if unexpected:
            detail += f"; unexpected: {', '.join(sorted(unexpected)[:4])}"
        if expected - names or missing_pod:
            detail += f"; missing: {', '.join(sorted(expected - names)[:4] + [f'vf{i}' for i in missing_pod])}"
        checks.append(Check("host interfaces", h, ok, detail))
        down = [n for n in expected & names if not hl[n].up]
        checks.append(Check("host VFs up", h, not down, f"down: {', '.join(down[:4])}" if down else "all up"))

        dname = {link.index: _named(dl, link.rep_ifname, allowed.dpu_renamed) for link in want}
        dnames = set(dl) - {"lo"}
        dexpected = {CLUSTER_IFNAME} | set(dname.values())
        extra = allowed.dpu_extra(dnames - dexpected)
        ok = dexpected <= dnames and not extra
        detail = f"{CLUSTER_IFNAME} + {len(dnames & (dexpected - {CLUSTER_IFNAME}))}/{topo.spec.vfs} representors"
        if extra:
            detail += f"; unexpected: {', '.join(sorted(extra)[:4])}"
        if dexpected - dnames:
            detail += f"; missing: {', '.join(sorted(dexpected - dnames)[:4])}"
        checks.append(Check("dpu interfaces", d, ok, detail))
        rdown = [dname[link.index] for link in want if dname[link.index] in dl and not dl[dname[link.index]].up]
        checks.append(Check("representors up", d, not rdown, f"down: {', '.join(rdown[:4])}" if rdown else "all up"))

        # peers: the kernel's own record of each veth's other end
        nsid_hd = socks(engine.netns(h)).nsid_of(socks.fd(engine.netns(d)))
        bad = []
        for link in want:
            r = dl.get(dname[link.index])
            if link.index in pod_ends:
                pod_ns, e = pod_ends[link.index]
                nsid = socks(pod_ns).nsid_of(socks.fd(engine.netns(d))) if e else None
            else:
                e, nsid = hl.get(hname[link.index]), nsid_hd
            if not (
                e is not None
                and r is not None
                and e.peer_index == r.index
                and r.peer_index == e.index
                and nsid is not None
                and e.peer_nsid == nsid
            ):
                bad.append(link.host_ifname)
        checks.append(
            Check(
                "VF <-> representor peers",
                f"{h} <-> {d}",
                not bad,
                f"not paired: {', '.join(bad[:4])}" if bad else f"{len(want)} veth peers match",
            )
        )
    checks += _isolation(topo, engine, socks, present)
    checks += _cluster_reach(topo, engine, present)
    return checks


def _isolation(topo: Topology, engine: "Engine", socks: Sockets, present: set[str]) -> list[Check]:
    out = []
    cnet = topo.cluster_network
    cp = topo.control_plane.cluster_address
    for host in topo.hosts:
        if host.name not in present:
            continue
        r = socks(engine.netns(host.name))
        addrs = [a for _, a, _ in r.addresses() if ":" not in a and ipaddress.ip_address(a) in cnet]
        routes = [
            f"{dst or 'default'}/{plen}"
            for dst, plen, _ in r.routes()
            if dst is None or ipaddress.ip_network(f"{dst}/{plen}").overlaps(cnet)
        ]
        err = probe.tcp_connect_errno(engine.netns(host.name), cp, 6443, timeout=0.3)
        ok = not addrs and not routes and err in (errno.ENETUNREACH, errno.EHOSTUNREACH)
        detail = f"probe to {cp}:6443: {errno.errorcode.get(err, err) if err else 'connected'}"
        if addrs:
            detail += f"; cluster address {addrs[0]}"
        if routes:
            detail += f"; route {routes[0]}"
        out.append(Check("host isolated", host.name, ok, detail))
    return out


def _cluster_reach(topo: Topology, engine: "Engine", present: set[str]) -> list[Check]:
    cp = topo.control_plane
    if cp.name not in present:
        return []
    probes = []
    for dpu in topo.dpus:
        if dpu.name in present:
            probes += [(engine.netns(cp.name), dpu.cluster_address), (engine.netns(dpu.name), cp.cluster_address)]
    rtt = probe.ping(probes, timeout=3.0, tries=6)  # a loaded machine drops a first probe now and then
    out = []
    for dpu in topo.dpus:
        if dpu.name not in present:
            continue
        there = rtt[(engine.netns(cp.name), dpu.cluster_address)]
        back = rtt[(engine.netns(dpu.name), cp.cluster_address)]
        ok = there is not None and back is not None
        detail = f"{dpu.cluster_address}: " + ("%.2f ms" % there if there is not None else "no reply")
        detail += ", back: " + ("%.2f ms" % back if back is not None else "no reply")
        out.append(Check("cluster reach", f"{cp.name} <-> {dpu.name}", ok, detail))
    return out


def verify_traffic(topo: Topology, engine: "Engine", socks: Sockets, pods: list[dict]) -> list[Check]:
    """The data plane: daemons, logical ports, pod<->pod ICMP and TCP, host->own pods via its DPU."""
    from .dataplane import Dataplane
    from .errors import DpulabError

    dp = Dataplane(topo, engine)
    checks = []
    for d in dp.all_daemons():
        pid = d.pid()
        checks.append(Check("daemon", f"{d.node}/{d.component}", pid is not None, f"pid {pid}" if pid else f"not running; log {d.logfile}"))
    try:
        ports = dp.ports_up()
    except DpulabError as e:
        ports = {}
        checks.append(Check("logical ports up", "OVN NB", False, str(e)))
    vifs = [f"k8s-{h.name}" for h in topo.hosts] + [p.get("iface_id", "?") for p in pods]
    down = [v for v in vifs if not ports.get(v)]
    checks.append(Check("logical ports up", "OVN NB", not down and bool(ports), f"down: {', '.join(down[:4])}" if down else f"{len(vifs)} ports up"))
    live = [p for p in pods if namespaces.exists(p["netns"])]
    rtt = probe.ping([(a["netns"], b["ip"]) for a in live for b in live if a is not b], timeout=3.0, tries=6)
    for a in live:
        for b in live:
            if a is b:
                continue
            r = rtt[(a["netns"], b["ip"])]
            where = "cross-host" if a["host"] != b["host"] else "same host"
            checks.append(Check(f"pod ping ({where})", f"{a['name']} -> {b['name']}", r is not None, f"{b['ip']}: " + (f"{r:.2f} ms" if r is not None else "no reply")))
    tcp = probe.tcp_exchange([(a["netns"], b["netns"], b["ip"]) for a in live for b in live if a is not b])
    for a in live:
        for b in live:
            if a is b:
                continue
            why = tcp[(a["netns"], b["netns"])]
            checks.append(Check("pod TCP", f"{a['name']} -> {b['name']}", why is None, "echo ok" if why is None else why))
    mgmt_vf = topo.spec.ovn.mgmt_vf
    host_probes = [(engine.netns(p["host"]), p["ip"]) for p in live]
    hrtt = probe.ping(host_probes, timeout=2.0, tries=4) if host_probes else {}
    for pair in topo.pairs:
        host = pair.host.name
        mgmt = topo.links(pair)[mgmt_vf]
        r = socks(engine.netns(host))
        links = r.links()
        oif = links.get(mgmt.host_ifname)
        via = [dst for dst, plen, o in r.routes() if dst and oif and o == oif.index and f"{dst}/{plen}" == topo.spec.ovn.pod_cidr]
        mine = [p for p in live if p["host"] == host]
        unreached = [p["name"] for p in mine if hrtt.get((engine.netns(host), p["ip"])) is None]
        ok = bool(via) and not unreached
        detail = f"route {topo.spec.ovn.pod_cidr} via {mgmt.host_ifname} (-> {pair.dpu.name}/{mgmt.rep_ifname})" if via else "no pod route via the management VF"
        if mine:
            detail += f"; {len(mine) - len(unreached)}/{len(mine)} own pods reached"
        checks.append(Check("host -> pods via DPU", host, ok, detail))
    from .netem import impairment_checks  # measured RTT and loss, next to the impairments on the path

    checks += impairment_checks(topo, engine, live)
    return checks
