"""`dpulab graph`: the lab as a picture (Mermaid, Graphviz DOT, SVG, PNG, HTML) or JSON.

The graph is built from the topology (what the lab file asks for) and, when the lab is
running and we are root, from what the kernel has: links up/down/missing, pods and their
addresses, daemons running, impairments set. Many links stay readable: a pair's links are
drawn as VF0 (the gateway link), VF1 (the management port) and one edge for the rest,
with counts and ranges, e.g. "eth0-2..15 ⇄ rep1-2..15 (14)".
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .errors import DpulabError, InputError
from .topology import CLUSTER_IFNAME, Link, Topology, bridge_port_name, templates

if TYPE_CHECKING:
    from .netlink import LinkInfo

FORMATS = ("mermaid", "dot", "svg", "png", "html", "json")
EXTENSIONS = {".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid", ".dot": "dot", ".gv": "dot",
              ".svg": "svg", ".png": "png", ".html": "html", ".htm": "html", ".json": "json"}
ARROW = "⇄"


# -- the model ----------------------------------------------------------------------------
@dataclass
class GNode:
    id: str
    name: str
    role: str  # control-plane | host | dpu | bridge | pod
    lines: list[str] = field(default_factory=list)
    state: str = "planned"  # planned | up | down | missing
    group: str | None = None
    daemons: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GEdge:
    a: str
    b: str
    kind: str  # gateway | mgmt | vfs | cluster | pod-link | pod-on
    a_if: str
    b_if: str
    count: int = 1
    vfs: list[int] = field(default_factory=list)
    role: str = ""  # "VF0 gateway", "VF1 management", …
    up: int | None = None
    down: int | None = None
    missing: int | None = None
    not_up: list[str] = field(default_factory=list)  # host-side names of links not up
    impaired: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.up is None:
            return "planned"
        if self.up == self.count:
            return "up"
        return "down" if self.up == 0 else "partial"

    @property
    def main_label(self) -> str:
        if self.kind == "pod-on":
            return self.role
        ends = f"{self.a_if} {ARROW} {self.b_if}"
        if self.kind == "vfs":
            return f"{ends} ({self.count})"
        return f"{self.role} · {ends}" if self.role else ends

    @property
    def status_label(self) -> str:
        """'13 up, 1 down: eth0-7' (live only)."""
        if self.up is None or self.kind == "pod-on":
            return ""
        if self.up == self.count:
            if self.count == 1:
                return ""  # the colour says it
            parts = [f"{self.up} up"]
        else:
            parts = [f"{self.up} up"] if self.up else []
            if self.down:
                parts.append(f"{self.down} down")
            if self.missing:
                parts.append(f"{self.missing} missing")
            if self.not_up and self.count > 1:
                more = f" +{len(self.not_up) - 3}" if len(self.not_up) > 3 else ""
                parts[-1] += ": " + ", ".join(self.not_up[:3]) + more
        return ", ".join(parts)

    @property
    def label_lines(self) -> list[str]:
        out = [self.main_label]
        if self.status_label:
            out.append(self.status_label)
        if self.impaired:
            out.append("⚠ " + "; ".join(self.impaired[:2]) + (f" +{len(self.impaired) - 2}" if len(self.impaired) > 2 else ""))
        return out


@dataclass
class LabGraph:
    lab: str
    mode: str  # "live" | "planned"
    title: str
    note: str
    nodes: list[GNode]
    edges: list[GEdge]
    groups: dict[str, str]  # group id -> label
    summary: dict[str, Any]

    def node(self, nid: str) -> GNode:
        return next(n for n in self.nodes if n.id == nid)

    def as_dict(self) -> dict[str, Any]:
        edges = []
        for e in self.edges:
            d = asdict(e)
            d.update(state=e.state, label=e.main_label)
            edges.append(d)
        return {
            "lab": self.lab, "mode": self.mode, "title": self.title, "note": self.note,
            "groups": self.groups, "nodes": [asdict(n) for n in self.nodes], "edges": edges, "summary": self.summary,
        }


# -- live state ---------------------------------------------------------------------------
@dataclass
class Live:
    """What the kernel has, as read by `observe` (or made up by a test)."""

    links: dict[str, dict[str, "LinkInfo"] | None]  # namespace -> links by name (None: no namespace)
    netns: Callable[[str], str] = lambda node: node
    cluster_ns: str | None = None
    daemons: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)  # node -> (component, pid)
    qdiscs: dict[str, dict[str, str]] = field(default_factory=dict)  # namespace -> iface -> description
    pod_addrs: dict[str, bool] = field(default_factory=dict)  # pod name -> its IP is on its eth0

    def ns_links(self, ns: str | None) -> dict[str, "LinkInfo"] | None:
        return self.links.get(ns) if ns else None

    def impairment(self, ns: str | None, iface: str) -> str | None:
        return self.qdiscs.get(ns or "", {}).get(iface)


def _up(li: "LinkInfo | None") -> bool:
    return li is not None and li.up and li.oper_up


def _pair_state(a: "LinkInfo | None", b: "LinkInfo | None") -> str:
    if a is None or b is None:
        return "missing"
    return "up" if _up(a) and _up(b) else "down"


# -- ranges -------------------------------------------------------------------------------
def ranges(indices: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def fmt_indices(indices: Iterable[int]) -> str:
    """[2, 3, 4, 6, 8, 9] -> '2..4,6,8..9'."""
    return ",".join(f"{a}" if a == b else f"{a}..{b}" for a, b in ranges(indices))


def name_range(template: str, pair: int, indices: list[int]) -> str:
    """The names of a set of links: 'eth0-2..15', 'eth0-{2,4..15}' (template with {vf} filled)."""
    rs = ranges(indices)
    text = fmt_indices(indices)
    if len(rs) > 1:
        text = "{" + text + "}"
    return template.replace("{vf}", "\0").format(pair=pair, pf=0).replace("\0", text)


# -- building -----------------------------------------------------------------------------
def _sid(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def build(
    topo: Topology,
    *,
    live: Live | None = None,
    pods: Iterable[dict[str, Any]] = (),
    note: str = "",
) -> LabGraph:
    spec = topo.spec
    vf_t, rep_t = templates(spec)
    mgmt_vf = spec.ovn.mgmt_vf if spec.vfs > spec.ovn.mgmt_vf else None
    special = {0: "VF0 gateway"}
    if mgmt_vf is not None and mgmt_vf != 0:
        special[mgmt_vf] = f"VF{mgmt_vf} management"
    pods = list(pods)
    held = {(p["host"], int(p["vf"])): p for p in pods}
    ns_of = live.netns if live else (lambda n: n)
    nodes: list[GNode] = []
    edges: list[GEdge] = []
    groups: dict[str, str] = {}

    def node_state(name: str) -> str:
        if live is None:
            return "planned"
        return "up" if live.ns_links(ns_of(name)) is not None else "missing"

    def daemons_of(name: str) -> list[dict[str, Any]]:
        if live is None:
            return []
        return [{"component": c, "pid": pid, "running": pid is not None} for c, pid in live.daemons.get(name, [])]

    # the cluster network and the control plane
    cns = live.cluster_ns if live else topo.cluster_netns
    groups["net"] = f"cluster network · {spec.cluster.subnet}"
    bridge = GNode("br", topo.cluster_bridge, "bridge",
                   ["bridge" + (f" in {cns}" if cns else ""), f"MTU {spec.cluster.mtu}"],
                   group="net")
    if live is not None and cns is not None:  # a container engine's network is docker's, not a namespace of ours
        blinks = live.ns_links(cns)
        bridge.state = "missing" if blinks is None else ("up" if _up(blinks.get(topo.cluster_bridge)) else "down")
    nodes.append(bridge)
    cp = topo.control_plane
    cpn = GNode("cp", cp.name, "control-plane", ["control plane", cp.cluster_address or ""],
                node_state(cp.name), daemons=daemons_of(cp.name))
    nodes.append(cpn)

    def cluster_edge(nid: str, node_name: str, worker: int) -> GEdge:
        port = bridge_port_name(worker)
        # the control plane is drawn right of the bridge, DPUs left of it
        e = GEdge("br", nid, "cluster", port, CLUSTER_IFNAME) if nid == "cp" else GEdge(nid, "br", "cluster", CLUSTER_IFNAME, port)
        if live is not None:
            mine = (live.ns_links(ns_of(node_name)) or {}).get(CLUSTER_IFNAME)
            st = _pair_state(mine, (live.ns_links(cns) or {}).get(port) if cns else mine)
            e.up, e.down, e.missing = int(st == "up"), int(st == "down"), int(st == "missing")
            e.impaired = [f"{w}: {d}" for w, d in ((node_name.removeprefix(f"{topo.lab}-"), live.impairment(ns_of(node_name), CLUSTER_IFNAME)),
                                                  (port, live.impairment(cns, port))) if d]
        return e

    edges.append(cluster_edge("cp", cp.name, 0))

    totals = {"links": 0, "up": 0, "down": 0, "missing": 0}
    for pair in topo.pairs:
        gid = f"pair{pair.index}"
        groups[gid] = f"pair {pair.index}"
        h, d = pair.host, pair.dpu
        hid, did = f"h{pair.index}", f"d{pair.index}"
        nodes.append(GNode(hid, h.name, "host", ["host · isolated from the cluster network"], node_state(h.name), gid))
        nodes.append(GNode(did, d.name, "dpu", [f"DPU · {d.cluster_address}"], node_state(d.name), gid, daemons_of(d.name)))
        links = topo.links(pair)
        hl = live.ns_links(ns_of(h.name)) if live else None
        dl = live.ns_links(ns_of(d.name)) if live else None

        def link_state(link: Link) -> str:
            pod = held.get((link.host, link.index))
            if pod is not None:
                a = (live.ns_links(pod["netns"]) or {}).get("eth0")  # type: ignore[union-attr]
            else:
                a = (hl or {}).get(link.host_ifname)
            return _pair_state(a, (dl or {}).get(link.rep_ifname))

        def impaired(link: Link) -> list[str]:
            if live is None:
                return []
            pod = held.get((link.host, link.index))
            a_ns, a_if = (pod["netns"], "eth0") if pod else (ns_of(h.name), link.host_ifname)
            out = []
            for ns, iface, label in ((a_ns, a_if, link.host_ifname), (ns_of(d.name), link.rep_ifname, link.rep_ifname)):
                desc = live.impairment(ns, iface)
                if desc:
                    out.append(f"{label}: {desc}")
            return out

        def edge_for(kind: str, chosen: list[Link], role: str = "", a: str = hid) -> GEdge:
            idx = [link.index for link in chosen]
            e = GEdge(a, did, kind, name_range(vf_t, pair.index, idx), name_range(rep_t, pair.index, idx),
                      len(chosen), idx, role)
            if live is not None:
                states = [(link, link_state(link)) for link in chosen]
                e.up = sum(s == "up" for _, s in states)
                e.down = sum(s == "down" for _, s in states)
                e.missing = sum(s == "missing" for _, s in states)
                e.not_up = [link.host_ifname for link, s in states if s != "up"]
                e.impaired = [x for link in chosen for x in impaired(link)]
            return e

        free = [link for link in links if (link.host, link.index) not in held]
        for i, role in special.items():
            if i < len(links) and links[i] in free:
                edges.append(edge_for("gateway" if i == 0 else "mgmt", [links[i]], role))
        rest = [link for link in free if link.index not in special]
        if rest:
            edges.append(edge_for("vfs", rest))
        for link in links:
            pod = held.get((link.host, link.index))
            if pod is None:
                continue
            pid = "pod_" + _sid(pod["name"])
            lines = [f"pod · {pod.get('namespace', 'default')}", pod.get("ip", "")]
            state = "planned"
            if live is not None:
                plinks = live.ns_links(pod["netns"])
                state = "missing" if plinks is None else ("up" if _up(plinks.get("eth0")) else "down")
                if live.pod_addrs and not live.pod_addrs.get(pod["name"], True):
                    lines.append("address missing")
            status = (pod.get("connection_status") or {}).get("Status")
            if status and status != "Ready":
                lines.append(status)
            nodes.append(GNode(pid, pod["name"], "pod", [x for x in lines if x], state, gid))
            edges.append(GEdge(hid, pid, "pod-on", link.host_ifname, "eth0", role=f"VF{link.index} · {link.host_ifname} moved in"))
            pe = edge_for("pod-link", [link], "", a=pid)
            pe.a_if, pe.b_if = f"eth0 (VF{link.index})", pod.get("representor") or link.rep_ifname
            edges.append(pe)
        edges.append(cluster_edge(did, d.name, d.worker))
        if live is not None:
            for e in edges:
                if e.b == did and e.kind in ("gateway", "mgmt", "vfs", "pod-link"):
                    totals["links"] += e.count
                    totals["up"] += e.up or 0
                    totals["down"] += e.down or 0
                    totals["missing"] += e.missing or 0
        else:
            totals["links"] += len(links)

    summary: dict[str, Any] = {
        "pairs": spec.pairs, "vfs": spec.vfs, "engine": spec.engine, "dataplane": spec.dataplane,
        "naming": spec.naming, "nodes": len(topo.nodes), "vf_links": totals["links"], "pods": len(pods),
        "mgmt_vf": mgmt_vf,
    }
    if live is not None:
        summary.update(
            nodes_up=sum(n.state == "up" for n in nodes if n.role in ("control-plane", "host", "dpu")),
            links_up=totals["up"], links_down=totals["down"], links_missing=totals["missing"],
            cluster_ports_up=sum(e.up or 0 for e in edges if e.kind == "cluster"),
            daemons=sum(len(n.daemons) for n in nodes),
            daemons_running=sum(d["running"] for n in nodes for d in n.daemons),
            impaired=sorted({x for e in edges for x in e.impaired}),
        )
    mode = "live" if live is not None else "planned"
    title = f"lab {topo.lab} · {mode} · {spec.pairs} pair{'s' if spec.pairs != 1 else ''} × {spec.vfs} links · {spec.engine}, dataplane {spec.dataplane}"
    return LabGraph(topo.lab, mode, title, note, nodes, edges, groups, summary)


# -- reading the kernel -------------------------------------------------------------------
def observe(lab: str) -> tuple[Topology, Live | None, list[dict[str, Any]], str]:
    """The running lab: (topology, live state or None, pods, note)."""
    import os

    from . import namespaces
    from .engines import get_engine
    from .netlink import Sockets
    from .state import LabState

    state = LabState.require(lab)
    topo = Topology(state.spec)
    pods = list(state.pods.values())
    if os.geteuid() != 0:
        return topo, None, pods, "not root: the planned topology, without kernel state"
    engine = get_engine(state.spec.engine, topo)
    topo = getattr(engine, "topo", topo)
    cns = getattr(engine, "cluster_ns", None)
    spaces = [engine.netns(n.name) for n in topo.nodes] + [p["netns"] for p in pods] + ([cns] if cns else [])
    links: dict[str, Any] = {}
    qdiscs: dict[str, dict[str, str]] = {}
    pod_addrs: dict[str, bool] = {}
    with Sockets() as socks:
        for ns in spaces:
            if not namespaces.exists(ns):
                links[ns] = None
                continue
            try:
                links[ns] = socks(ns).links()
            except OSError:
                links[ns] = None
        for p in pods:
            if links.get(p["netns"]) is not None and p.get("ip"):
                pod_addrs[p["name"]] = any(a == p["ip"] for _, a, _ in socks(p["netns"]).addresses())
    qdiscs = _impairments([ns for ns in spaces if links.get(ns) is not None])
    daemons: dict[str, list[tuple[str, int | None]]] = {}
    if state.spec.dataplane == "ovn":
        from .dataplane import Dataplane

        for d in Dataplane(topo, engine).all_daemons():
            daemons.setdefault(d.node, []).append((d.component, d.pid()))
    live = Live(links, engine.netns, cns, daemons, qdiscs, pod_addrs)
    return topo, live, pods, ""


def _impairments(spaces: list[str]) -> dict[str, dict[str, str]]:
    """Root qdiscs that impair (tbf, netem) per namespace; empty if tc is not there."""
    if shutil.which("tc") is None:
        return {}
    from concurrent.futures import ThreadPoolExecutor

    from .netem import show

    def one(ns: str) -> dict[str, str]:
        try:
            return {i: q["params"].describe() for i, q in show(ns).items()}
        except DpulabError:
            return {}

    with ThreadPoolExecutor(max_workers=8) as pool:
        return {ns: d for ns, d in zip(spaces, pool.map(one, spaces)) if d}


# -- rendering: Mermaid -------------------------------------------------------------------
STYLE = {
    "control-plane": ("#ede7f6", "#5e35b1"),
    "host": ("#e3f2fd", "#1e88e5"),
    "dpu": ("#fff3e0", "#fb8c00"),
    "bridge": ("#eceff1", "#546e7a"),
    "pod": ("#e8f5e9", "#43a047"),
}
EDGE_COLOUR = {"planned": "#607d8b", "up": "#2e7d32", "partial": "#ef6c00", "down": "#c62828"}
MARK = {"up": "●", "down": "○", "missing": "✗", "planned": ""}


def _daemon_line(d: dict[str, Any]) -> str:
    return ("✓ " if d["running"] else "✗ ") + d["component"]


def _mm(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def to_mermaid(g: LabGraph) -> str:
    out = ["---", f"title: {g.title}", "---", "flowchart LR"]

    def node_line(n: GNode) -> str:
        head = f"{MARK.get(n.state, '')} {n.name}".strip()
        body = [head, *[x for x in n.lines if x], *[_daemon_line(d) for d in n.daemons]]
        shape = ('(["', '"])') if n.role == "bridge" else ('("', '")') if n.role == "pod" else ('["', '"]')
        return f"    {n.id}{shape[0]}{'<br/>'.join(_mm(x) for x in body)}{shape[1]}"

    by_group: dict[str | None, list[GNode]] = {}
    for n in g.nodes:
        by_group.setdefault(n.group, []).append(n)
    for n in by_group.get(None, []):
        out.append(node_line(n).replace("    ", "  ", 1))
    for gid, label in g.groups.items():
        out.append(f'  subgraph {gid}["{_mm(label)}"]')
        out += [node_line(n) for n in by_group.get(gid, [])]
        out.append("  end")
    styles = []
    for k, e in enumerate(g.edges):
        label = "<br/>".join(_mm(x) for x in e.label_lines)
        arrow = "-.-" if e.kind == "pod-on" else "---"
        out.append(f'  {e.a} {arrow}|"{label}"| {e.b}')
        colour = EDGE_COLOUR[e.state]
        width = 1 if e.kind == "pod-on" else min(6, 1.5 + e.count.bit_length() * 0.5)
        dash = ",stroke-dasharray:4 3" if e.state in ("down", "partial") and e.missing else ""
        styles.append(f"  linkStyle {k} stroke:{colour},stroke-width:{width:g}px{dash}")
    out += styles
    for role, (fill, stroke) in STYLE.items():
        out.append(f"  classDef {role.replace('-', '')} fill:{fill},stroke:{stroke},color:#1b1b1b")
    for n in g.nodes:
        cls = n.role.replace("-", "")
        if n.state in ("missing", "down"):
            out.append(f"  class {n.id} {cls}")
            out.append(f"  style {n.id} stroke:#c62828,stroke-width:2px,stroke-dasharray:4 3")
        else:
            out.append(f"  class {n.id} {cls}")
    if g.note:
        out.insert(4, f"  %% {g.note}")
    return "\n".join(out) + "\n"


# -- rendering: Graphviz DOT --------------------------------------------------------------
def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _dq(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _node_dot(n: GNode) -> str:
    fill, stroke = STYLE[n.role]
    head = f"{MARK.get(n.state, '')} {n.name}".strip()
    rows = [f"<tr><td><b>{_h(head)}</b></td></tr>"]
    rows += [f'<tr><td><font point-size="9" color="#37474f">{_h(x)}</font></td></tr>' for x in n.lines if x]
    for d in n.daemons:
        c = "#2e7d32" if d["running"] else "#c62828"
        rows.append(f'<tr><td align="left"><font point-size="9" color="{c}">{_h(_daemon_line(d))}</font></td></tr>')
    label = f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">{"".join(rows)}</table>>'
    attrs = [f"label={label}", f'fillcolor="{fill}"', f'color="{stroke}"']
    if n.role == "bridge":
        attrs.append('shape=box, style="rounded,filled,bold"')
    elif n.role == "pod":
        attrs.append('shape=box, style="rounded,filled"')
    if n.state in ("missing", "down"):
        attrs += ['color="#c62828"', 'style="rounded,filled,dashed"', "penwidth=2"]
    return f"  {n.id} [{', '.join(attrs)}];"


def to_dot(g: LabGraph, *, title: bool = True) -> str:
    legend = " · ".join(f'<font color="{c}">━ {s}</font>' for s, c in EDGE_COLOUR.items() if (g.mode == "live") != (s == "planned"))
    legend += " · ⚠ impairment (tc) · ✓/✗ daemon running" if g.mode == "live" else ""
    title_label = (f"<<b>{_h(g.title)}</b>" + (f'<br align="left"/><font point-size="10">{_h(g.note)}</font>' if g.note else "")
             + f'<br align="left"/><font point-size="9">{legend}</font><br align="left"/>>')
    out = [
        f"graph {_dq(g.lab)} {{",
        f'  graph [rankdir=LR, newrank=true, fontname="Helvetica", fontsize=13, labelloc=t, labeljust=l, '
        f'label={title_label if title else _dq("")}, nodesep=0.35, ranksep=1.0, pad=0.3, bgcolor="white"];',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, penwidth=1.3, margin="0.12,0.06"];',
        '  edge [fontname="Helvetica", fontsize=9, penwidth=1.4];',
    ]
    by_group: dict[str | None, list[GNode]] = {}
    for n in g.nodes:
        by_group.setdefault(n.group, []).append(n)
    for gid, label in g.groups.items():
        style = 'style="rounded,dashed"; color="#78909c"' if gid == "net" else 'style="rounded"; color="#b0bec5"'
        out.append(f"  subgraph cluster_{gid} {{")
        out.append(f'    label=<<b>{_h(label)}</b>>; {style}; fontsize=11;')
        out += ["  " + _node_dot(n) for n in by_group.get(gid, [])]
        out.append("  }")
    out += [_node_dot(n) for n in by_group.get(None, [])]
    # dot stacks parallel edges bottom-up in the order given: reversed, VF0 comes out on top
    for e in reversed(g.edges):
        colour = EDGE_COLOUR[e.state]
        attrs = [f"label={_dq(chr(10).join(e.label_lines))}", f'color="{colour}"', f'fontcolor="{colour if e.state != "planned" else "#37474f"}"']
        if e.kind == "pod-on":
            attrs += ['style="dashed"', "penwidth=1", 'color="#90a4ae"', 'fontcolor="#546e7a"']
        else:
            attrs.append(f"penwidth={min(5.0, 1.2 + e.count.bit_length() * 0.45):.1f}")
            if e.state in ("down", "partial") and e.missing:
                attrs.append('style="dashed"')
        out.append(f"  {e.a} -- {e.b} [{', '.join(attrs)}];")
    hosts = [n.id for n in g.nodes if n.role == "host"]
    dpus = [n.id for n in g.nodes if n.role == "dpu"]
    pods = [n.id for n in g.nodes if n.role == "pod"]
    for same in (hosts, pods, dpus):
        if len(same) > 1:
            out.append("  { rank=same; " + "; ".join(same) + "; }")
    out.append("}")
    return "\n".join(out) + "\n"


def render_dot(dot_text: str, fmt: str) -> bytes:
    dot = shutil.which("dot")
    if dot is None:
        raise DpulabError(f"--format {fmt} needs Graphviz `dot` (Debian: apt-get install graphviz); mermaid, dot and json do not")
    res = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=120)
    if res.returncode != 0:
        msg = res.stderr.decode(errors="replace").strip().splitlines()
        raise DpulabError(f"dot -T{fmt} failed: {msg[-1] if msg else f'exit {res.returncode}'}")
    return res.stdout


def to_svg(g: LabGraph, *, title: bool = True) -> str:
    svg = render_dot(to_dot(g, title=title), "svg").decode()
    return svg[svg.index("<svg"):] if "<svg" in svg else svg


# -- rendering: HTML ----------------------------------------------------------------------
_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#1b1b1b;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} .note{color:#6d4c41;margin:0 0 12px}
.card{background:white;border:1px solid #e0e0e0;border-radius:8px;padding:16px;margin:12px 0;overflow:auto}
.card svg{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:13px} td,th{padding:4px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f5f5f5} .up{color:#2e7d32} .partial{color:#ef6c00} .down{color:#c62828} .planned{color:#607d8b}
.kv{display:flex;flex-wrap:wrap;gap:8px} .kv span{background:#eceff1;border-radius:12px;padding:3px 10px;font-size:12px}
.legend span{margin-right:14px;font-size:12px} .sw{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
"""


def to_html(g: LabGraph) -> str:
    try:
        drawing = to_svg(g, title=False)  # the page has the title and the legend
    except DpulabError as e:
        drawing = f"<p>{_h(str(e))}</p><pre>{_h(to_mermaid(g))}</pre>"
    chips = "".join(f"<span>{_h(str(k).replace('_', ' '))}: {_h(str(v))}</span>" for k, v in g.summary.items()
                    if not isinstance(v, list))
    rows = []
    names = {n.id: n.name for n in g.nodes}
    for e in g.edges:
        if e.kind == "pod-on":
            continue
        rows.append(
            f"<tr><td>{_h(names[e.a])}</td><td>{_h(e.a_if)}</td><td>{ARROW}</td><td>{_h(names[e.b])}</td>"
            f"<td>{_h(e.b_if)}</td><td>{e.count}</td><td>{_h(e.role)}</td>"
            f'<td class="{e.state}">{_h(e.status_label or e.state)}</td><td>{_h("; ".join(e.impaired))}</td></tr>'
        )
    data = json.dumps(g.as_dict()).replace("</", "<\\/")
    note = f'<p class="note">{_h(g.note)}</p>' if g.note else ""
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{s}</span>' for s, c in EDGE_COLOUR.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_h(g.title)}</title>
<meta name="generator" content="dpulab graph"><style>{_CSS}</style></head>
<body>
<h1>{_h(g.title)}</h1>
{note}
<div class="kv">{chips}</div>
<div class="card">{drawing}</div>
<div class="card legend"><b>links:</b> {legend} — VF0 is the gateway link, VF{g.summary.get('mgmt_vf', 1)} the management port; other links are grouped by range</div>
<div class="card"><table><tr><th>from</th><th>interfaces</th><th></th><th>to</th><th>interfaces</th><th>links</th><th>role</th><th>state</th><th>impairment</th></tr>
{''.join(rows)}</table></div>
<script type="application/json" id="dpulab-graph">{data}</script>
</body></html>
"""


def render(g: LabGraph, fmt: str) -> str | bytes:
    if fmt == "mermaid":
        return to_mermaid(g)
    if fmt == "dot":
        return to_dot(g)
    if fmt == "svg":
        return to_svg(g)
    if fmt == "png":
        return render_dot(to_dot(g), "png")
    if fmt == "html":
        return to_html(g)
    if fmt == "json":
        return json.dumps(g.as_dict(), indent=1) + "\n"
    raise InputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")


def format_for(fmt: str | None, output: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
        return fmt
    if output:
        import os

        ext = os.path.splitext(output)[1].lower()
        if ext in EXTENSIONS:
            return EXTENSIONS[ext]
    return "mermaid"
