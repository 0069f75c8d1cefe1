"""The lab lifecycle: `up` converges, `down` removes exactly what carries our mark."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .engines import NodeStatus, get_engine
from .errors import DpulabError, InputError
from .netlink import Sockets
from .plan import Plan, make_plan
from .spec import LabSpec
from .daemons import stop_all
from .state import LabState, locked, run_dir
from .topology import Topology
from .verify import Check, verify_topology, verify_traffic

if TYPE_CHECKING:
    from .ovnk.flow import OvnkResult, OvnkRun

Progress = Callable[[str, int], None]


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise InputError(f"{what} needs root (it creates network namespaces and interfaces); run it with sudo")
    if not os.path.exists("/proc/self/ns/net"):
        raise InputError("this kernel has no network namespaces (CONFIG_NET_NS)")


def held_vfs(state: LabState | None) -> dict[tuple[str, int], str]:
    """VFs that pods hold: (host, vf) -> pod namespace."""
    if state is None:
        return {}
    return {(p["host"], int(p["vf"])): p["netns"] for p in state.pods.values()}


@dataclass
class UpResult:
    plan: Plan
    timings: dict[str, float] = field(default_factory=dict)
    ovnk: "OvnkResult | None" = None  # OVN-Kubernetes deployed by this up (kind, --ovnk-src/--ovnk-rendered)


def plan_for(spec: LabSpec) -> Plan:
    require_root("plan")
    topo = Topology(spec)
    state = LabState.load(spec.name)
    with Sockets() as socks:
        engine = get_engine(spec.engine, topo)
        return make_plan(topo, engine, socks, held_now(state, engine, socks), pod_namespaces(state))


def pod_namespaces(state: LabState | None) -> set[str]:
    return {p["netns"] for p in state.pods.values()} if state is not None else set()


def held_now(state: LabState | None, engine, socks: Sockets) -> dict[tuple[str, int], str]:
    """VFs that sit in their pod right now (a pod whose VF is gone gets it remade on its host)."""
    if state is None or not state.pods:
        return {}
    from .pods import intact

    return intact(state, engine, socks)


def up(spec: LabSpec, progress: Progress | None = None, ovnk: "OvnkRun | None" = None) -> UpResult:
    """Converge the lab; with `ovnk`, then deploy OVN-Kubernetes onto its kind cluster (ovnk/flow.py)."""
    require_root("up")
    t0 = time.perf_counter()
    if ovnk is not None:
        if spec.engine != "kind":
            raise InputError(f"OVN-Kubernetes is deployed onto a kind cluster: lab {spec.name!r} is on engine {spec.engine}; use --engine kind")
        ovnk.check()  # before the cluster is made: a wrong path is one line, not a lab half done
    with locked(spec.name, "up"):
        state = LabState.load(spec.name)
        if state is not None and state.spec.engine != spec.engine:
            raise InputError(f"lab {spec.name!r} runs on engine {state.spec.engine}; `dpulab down --name {spec.name}` first")
        if state is not None and state.spec.dataplane == "ovn" and spec.dataplane != "ovn":
            raise InputError(f"lab {spec.name!r} runs the ovn data plane; `dpulab down --name {spec.name}` to drop it")
        if state is None:
            state = LabState(spec.name, {"created": time.time()})
        topo = Topology(spec)
        hosts = {h.name for h in topo.hosts}
        stranded = sorted(p for p, rec in state.pods.items() if rec["host"] not in hosts)
        if stranded:
            raise InputError(f"pods {', '.join(stranded)} live on hosts this change drops; `dpulab pod del` them first")
        engine = get_engine(spec.engine, topo)
        with Sockets() as socks:
            plan = make_plan(topo, engine, socks, held_now(state, engine, socks), pod_namespaces(state))
            state.spec = spec  # intent first: an interrupted up is still found by `down`
            state.save()
            t1 = time.perf_counter()
            if spec.dataplane == "ovn":
                from .dataplane import Dataplane

                Dataplane(topo, engine).retire()  # daemons of dropped DPUs, before their namespaces go
            plan.apply(socks, progress)
            t2 = time.perf_counter()
            timings = {"plan": t1 - t0, "wiring": t2 - t1}
            if spec.impairments or state.data.get("impairments"):
                from .netem import converge  # the lab file's `impairments:`, with tc

                changed = converge(topo, engine, state, socks)
                if progress:
                    progress("impairments", changed["set"] + changed["cleared"])
            if spec.dataplane == "ovn":
                from .dataplane import Dataplane

                dp = Dataplane(topo, engine)
                dp.up(socks)
                if state.pods:  # finish interrupted pod adds, re-plumb pods whose VF was remade
                    from .pods import reconcile

                    reconcile(state, topo, engine, dp)
                # pods with a VF named first, so a free-VF pick cannot take theirs
                wanted = sorted((p for p in spec.pods if p.name not in state.pods), key=lambda p: p.vf is None)
                if wanted:  # the lab file's pods; pods added with `pod add` are left as they are
                    from .pods import add_locked

                    for pod in wanted:
                        add_locked(state, topo, engine, dp, spec.pod_host(pod), pod.name, pod.vf, pod.namespace)
                    if progress:
                        progress("pods", len(wanted))
                dp.wait_ready()
                timings["dataplane"] = time.perf_counter() - t2
                if progress:
                    progress("data plane", len(dp.all_daemons()))
        state.save()
        result = UpResult(plan, timings)
        if ovnk is not None:  # the spec's Steps 6-16 on the cluster just converged
            from .ovnk.flow import deploy_lab

            t3 = time.perf_counter()
            result.ovnk = deploy_lab(spec, engine, state, ovnk, progress)
            timings["ovnk"] = time.perf_counter() - t3
    return result


def down(lab: str) -> list[str]:
    """Remove the lab's namespaces (found by mark), daemons and run directory."""
    require_root("down")
    with locked(lab, "down"):
        try:
            state = LabState.load(lab)
            spec = state.spec if state else LabSpec(name=lab)
        except (DpulabError, ValueError, KeyError):  # unreadable: everything is found by its mark all the same
            state, spec = None, LabSpec(name=lab)
        topo = Topology(spec)
        engine = get_engine(spec.engine, topo)
        from .dataplane import Dataplane

        Dataplane(topo, engine).stop()  # daemons first, by the pids in our run directory
        stop_all(run_dir(lab))  # and any other pidfile there: starts in flight, nodes dropped since
        with Sockets() as socks:
            names = engine.orphans()
            removed = engine.delete_nodes(names, socks)
            if state is None:  # no record of the lab's engine: every container engine is asked for its marks
                from .engines import marked_objects

                for other, found in marked_objects(lab):
                    removed += other.delete_nodes(found, socks)
        if state is None:
            state = LabState(lab, {})
        state.remove()
    return removed


def allowed_extras(state: LabState, topo: Topology):
    """What runs in the nodes besides the lab's links, as far as verify must allow it: on a
    kind lab where OVN-Kubernetes was deployed (or begun to be), what it adds. Other labs
    allow nothing beyond dpulab's own data plane."""
    from .ovnk.flow import deployed

    if state.spec.engine != "kind" or not deployed(state):
        return None
    from .verify import ovnk_allowed

    return ovnk_allowed(topo, state.spec.ovnk)


def verify(lab: str, traffic: bool = False) -> list[Check]:
    require_root("verify")
    state = LabState.require(lab)
    topo = Topology(state.spec)
    engine = get_engine(state.spec.engine, topo)
    ovn = state.spec.dataplane == "ovn"
    if traffic and not ovn:
        raise InputError(f"lab {lab!r} has no data plane to test; `dpulab up --name {lab} --dataplane ovn`")
    with Sockets() as socks:
        for node in topo.nodes:
            engine.node_status(node, socks)  # a dead node container is one line; container namespaces are relinked
        # engine.topo: kind, not the spec, gives a kind cluster its addresses
        checks = verify_topology(engine.topo, engine, socks, held=held_vfs(state), dataplane=ovn, allowed=allowed_extras(state, topo))
        if traffic:
            checks += verify_traffic(topo, engine, socks, list(state.pods.values()))
        return checks


def status(lab: str) -> dict:
    """What exists, read from the kernel, next to what the lab asked for."""
    state = LabState.require(lab)
    spec = state.spec
    topo = Topology(spec)
    engine = get_engine(spec.engine, topo)
    nodes = []
    with Sockets() as socks:
        for n in engine.topo.nodes:
            st = engine.node_status(n, socks) if os.geteuid() == 0 else None
            count = None
            if st is NodeStatus.OURS:
                count = len(set(socks(engine.netns(n.name)).links()) - {"lo"})
            nodes.append(
                {
                    "node": n.name,
                    "role": n.role,
                    "pair": n.pair,
                    "cluster_ip": n.cluster_ip,
                    "state": st.value if st else "unknown (not root)",
                    "interfaces": count,
                }
            )
    return {
        "lab": lab,
        "engine": spec.engine,
        "dataplane": spec.dataplane,
        "pairs": spec.pairs,
        "vfs": spec.vfs,
        "naming": spec.naming,
        "nodes": nodes,
        "pods": list(state.pods.values()),
    }


__all__ = ["up", "down", "verify", "status", "plan_for", "DpulabError"]
