"""Representor lookup: (pf, vf) -> the DPU netdev that stands for that host function.

The Python counterpart of the spec's VethRepresentorProvider and upstream's simulated
DPU ops. Three ways, tried in order with `auto`: by the naming scheme, by link alias,
and by veth peer (which works whatever the names are).
"""

from __future__ import annotations

import re
from typing import Literal

from .errors import InputError
from .netlink import Sockets
from .topology import Pair, Topology, fill, templates

Method = Literal["auto", "name", "alias", "peer"]
_ALIAS = re.compile(r"(?:^|:)pf(\d+)vf(\d+)$")


def _by_name(topo: Topology, pair: Pair, links: dict, pf: int, vf: int) -> str | None:
    name = fill(templates(topo.spec)[1], pair.index, vf)
    return name if pf == 0 and name in links else None


def _by_alias(links: dict, pf: int, vf: int) -> str | None:
    for name, info in links.items():
        m = _ALIAS.search(info.alias or "")
        if m and m.group(1) == str(pf) and m.group(2) == str(vf) and ":rep:" in (info.alias or ""):
            return name
    return None


def _by_peer(topo: Topology, pair: Pair, engine, socks: Sockets, links: dict, pf: int, vf: int, held: dict) -> str | None:
    """Find the host function's netdev (in the host, or in the pod that holds it) and follow its peer."""
    if pf != 0 or vf >= topo.spec.vfs:
        return None
    if (pair.host.name, vf) in held:
        ns, ifname = held[(pair.host.name, vf)], "eth0"
    else:
        ns, ifname = engine.netns(pair.host.name), fill(templates(topo.spec)[0], pair.index, vf)
    end = socks(ns).links().get(ifname)
    if end is None or end.peer_index is None:
        return None
    dpu_ns = engine.netns(pair.dpu.name)
    if socks(ns).nsid_of(socks.fd(dpu_ns)) != end.peer_nsid:
        return None
    return next((n for n, info in links.items() if info.index == end.peer_index), None)


def resolve(
    topo: Topology, engine, socks: Sockets, dpu: str, pf: int, vf: int, method: Method = "auto",
    held: dict | None = None,
) -> tuple[str, str]:
    """Return (netdev, method that found it); InputError if nothing matches."""
    pair = topo.pair_as(dpu, "dpu")
    links = socks(engine.netns(dpu)).links()
    finders = {
        "name": lambda: _by_name(topo, pair, links, pf, vf),
        "alias": lambda: _by_alias(links, pf, vf),
        "peer": lambda: _by_peer(topo, pair, engine, socks, links, pf, vf, held or {}),
    }
    for name in (finders if method == "auto" else [method]):
        found = finders[name]()
        if found:
            return found, name
    raise InputError(f"{dpu}: no representor for pf {pf} vf {vf} (by {method})")
