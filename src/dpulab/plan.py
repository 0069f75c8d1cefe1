"""Diff desired against observed, as ordered actions; `up` applies them, `plan` prints them.

Each action queues netlink requests (or does one engine operation); the actions of a
phase run together and every namespace's socket is flushed once at the phase's end,
so a whole lab is wired with a few batched sendmsg() calls per namespace.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from .errors import DpulabError, NotOursError
from .netlink import LinkInfo, Sockets
from .topology import Link, Topology, mark

if TYPE_CHECKING:
    from .engines import Engine

# Phases, in the order they run.
CREATE_NODE, MARK_NODE, CLUSTER, DELETE_LINK, CREATE_LINK, SET_LINK, ADDRESS, DELETE_NODE = range(8)
PHASE_NAMES = ["create node", "mark node", "cluster network", "delete link", "create link", "set link", "address", "delete node"]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a plan is made or applied: they allocate many
    small acyclic objects (actions, requests), whose allocations trigger full collections
    of everything the process has imported (pydantic, typer, pyroute2): ~30 ms each,
    as much as wiring 2 x 64 links takes. Collection resumes afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class Action:
    phase: int
    target: str
    detail: str
    run: Callable[[Sockets], None] = field(repr=False, compare=False)

    def describe(self) -> str:
        return f"{PHASE_NAMES[self.phase]:<15} {self.target:<28} {self.detail}"


@dataclass
class Plan:
    actions: list[Action]

    def __bool__(self) -> bool:
        return bool(self.actions)

    def ordered(self) -> list[Action]:
        return sorted(self.actions, key=lambda a: a.phase)

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.actions:
            out[PHASE_NAMES[a.phase]] = out.get(PHASE_NAMES[a.phase], 0) + 1
        return out

    @_gc_paused()
    def apply(self, socks: Sockets, progress: Callable[[str, int], None] | None = None) -> None:
        actions = self.ordered()
        for phase in sorted({a.phase for a in actions}):
            batch = [a for a in actions if a.phase == phase]
            for a in batch:
                a.run(socks)
            failures = socks.flush_all()
            if failures:
                more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
                raise DpulabError(f"{PHASE_NAMES[phase]}: {failures[0]}{more}")
            if progress:
                progress(PHASE_NAMES[phase], len(batch))


def is_ours(info: LinkInfo | None, lab: str) -> bool:
    return bool(info and info.alias and info.alias.startswith(mark(lab) + ":"))


def is_half_made(info: LinkInfo | None, mac: str) -> bool:
    """A veth of ours that a kill caught between creating and marking it: no mark yet, but
    the create request itself gave it the MAC only we derive (sha256 of node and role)."""
    return bool(info and info.alias is None and info.kind == "veth" and info.mac == mac)


def vf_mark(lab: str, link: Link) -> str:
    return mark(lab, "vf", f"pf{link.pf}vf{link.index}")


def rep_mark(lab: str, link: Link) -> str:
    return mark(lab, "rep", f"pf{link.pf}vf{link.index}")


@dataclass
class Observed:
    """The kernel's view of the lab's node namespaces (links by name)."""

    links: dict[str, dict[str, LinkInfo]]
    nsids: dict[tuple[str, str], int | None]  # (from ns, to ns) -> nsid

    @classmethod
    def read(cls, topo: Topology, engine: "Engine", socks: Sockets, present: Iterable[str]) -> "Observed":
        present = set(present)
        links = {n: socks(engine.netns(n)).links() for n in present}
        nsids: dict[tuple[str, str], int | None] = {}
        for pair in topo.pairs:
            h, d = pair.host.name, pair.dpu.name
            if h in present and d in present:
                nsids[(h, d)] = socks(engine.netns(h)).nsid_of(socks.fd(engine.netns(d)))
        return cls(links, nsids)


def link_actions(topo: Topology, engine: "Engine", socks: Sockets, obs: Observed, held: dict[tuple[str, int], str]) -> list[Action]:
    """Actions for the VF <-> representor veths of every pair.

    `held` maps (host, vf index) of VFs that sit in a pod to the pod's namespace: those
    count as present and are left alone.
    """
    lab = topo.lab
    actions: list[Action] = []
    for pair in topo.pairs:
        h, d = pair.host.name, pair.dpu.name
        hns, dns = engine.netns(h), engine.netns(d)
        hlinks, dlinks = obs.links.get(h, {}), obs.links.get(d, {})
        wanted_h, wanted_d = set(), set()
        nsid = obs.nsids.get((h, d))
        for link in topo.links(pair):
            wanted_h.add(link.host_ifname)
            wanted_d.add(link.rep_ifname)
            if (h, link.index) in held:
                continue
            hl, rl = hlinks.get(link.host_ifname), dlinks.get(link.rep_ifname)
            for info, node, mac in ((hl, h, link.host_mac), (rl, d, link.rep_mac)):
                if info is not None and not is_ours(info, lab) and not is_half_made(info, mac):
                    raise NotOursError(f"{node}: interface {info.name} exists and is not ours; not touching it")
            paired = (
                hl is not None
                and rl is not None
                and hl.kind == rl.kind == "veth"
                and hl.peer_index == rl.index
                and rl.peer_index == hl.index
                and nsid is not None
                and hl.peer_nsid == nsid
            )
            if not paired:
                for info, ns, node in ((hl, hns, h), (rl, dns, d)):
                    if info is not None:
                        actions.append(_delete(ns, node, info.name))
                actions.append(_create(topo, engine, link))
                actions.append(_mark_new(engine, link, lab, host=True))
                actions.append(_mark_new(engine, link, lab, host=False))
                continue
            if not hl.up or hl.mac != link.host_mac or hl.alias != vf_mark(lab, link):
                actions.append(_set_vf(engine, link, lab, host=True))
            if not rl.up or rl.mac != link.rep_mac or rl.alias != rep_mark(lab, link):
                actions.append(_set_vf(engine, link, lab, host=False))
        for links_, wanted, ns, node, role in ((hlinks, wanted_h, hns, h, "vf"), (dlinks, wanted_d, dns, d, "rep")):
            for name, info in links_.items():
                if name not in wanted and is_ours(info, lab) and info.alias.split(":")[2] == role:
                    actions.append(_delete(ns, node, name))
    return actions


def _delete(ns: str, node: str, ifname: str) -> Action:
    return Action(DELETE_LINK, f"{node}/{ifname}", "ours, not as desired", lambda s: s(ns).del_link(ifname))


def _create(topo: Topology, engine: "Engine", link: Link) -> Action:
    hns, dns = engine.netns(link.host), engine.netns(link.dpu)

    def run(s: Sockets) -> None:
        s(hns).add_veth(
            link.host_ifname,
            link.rep_ifname,
            mac=link.host_mac,
            peer_mac=link.rep_mac,
            peer_netns_fd=s.fd(dns),
            what=f"create {link.host}/{link.host_ifname} <-> {link.dpu}/{link.rep_ifname}",
        )

    return Action(CREATE_LINK, f"{link.host}/{link.host_ifname}", f"veth <-> {link.dpu}/{link.rep_ifname}", run)


def _set_vf(engine: "Engine", link: Link, lab: str, *, host: bool) -> Action:
    if host:
        ns, node, name, mac, alias = engine.netns(link.host), link.host, link.host_ifname, link.host_mac, vf_mark(lab, link)
    else:
        ns, node, name, mac, alias = engine.netns(link.dpu), link.dpu, link.rep_ifname, link.rep_mac, rep_mark(lab, link)
    return Action(SET_LINK, f"{node}/{name}", "up, MAC, mark", lambda s: s(ns).set_link(name, up=True, mac=mac, alias=alias))


def _mark_new(engine: "Engine", link: Link, lab: str, *, host: bool) -> Action:
    """Finish a veth just created: the create already set both MACs and brought the host
    end up (the peer cannot be: see netlink.veth_msg), so what is left is the mark on
    each end and the representor's UP."""
    if host:
        ns, node, name, alias = engine.netns(link.host), link.host, link.host_ifname, vf_mark(lab, link)
        return Action(SET_LINK, f"{node}/{name}", "mark", lambda s: s(ns).set_link(name, alias=alias))
    ns, node, name, alias = engine.netns(link.dpu), link.dpu, link.rep_ifname, rep_mark(lab, link)
    return Action(SET_LINK, f"{node}/{name}", "up, mark", lambda s: s(ns).set_link(name, up=True, alias=alias))


@_gc_paused()
def make_plan(
    topo: Topology, engine: "Engine", socks: Sockets, held: dict[tuple[str, int], str] | None = None,
    keep: set[str] | None = None,
) -> Plan:
    """Everything `up` would do, in order; raises NotOursError before anything is done.

    `keep`: namespaces of ours to leave in place besides those holding VFs (every pod's,
    also one whose VF is gone and is remade on its host)."""
    from .engines import NodeStatus

    statuses = {n.name: engine.node_status(n, socks) for n in topo.nodes}
    foreign = [n for n, s in statuses.items() if s is NodeStatus.FOREIGN]
    if foreign:
        raise NotOursError(
            f"{foreign[0]} exists but is not part of lab {topo.lab!r}; choose another --name or remove it yourself"
        )
    actions = engine.node_actions(socks, statuses, keep=set((held or {}).values()) | (keep or set()))
    present = [n for n, s in statuses.items() if s is NodeStatus.OURS]
    obs = Observed.read(topo, engine, socks, present)
    actions += link_actions(topo, engine, socks, obs, held or {})
    return Plan(actions)
