"""Each lab node's OVN-K pods against what its role should run (spec Steps 14 and 16).

`ovnk_status` is pure, over API-shaped dicts (what `kubectl get -o json` prints), so every
verdict is testable; `fetch_status_inputs` is the thin layer that lists them from a cluster.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .manifests import DPU_HOST_LABEL, DPU_LABEL

RUNNING = ("Running",)
PENDING_OK = ("Pending", "Running")  # Step 14: isolated hosts cannot start their pods


@dataclass(frozen=True)
class StatusRow:
    node: str
    role: str
    component: str
    expected: str
    actual: str
    ok: bool
    why: str = ""


def expected_components(role: str, dpu_mode: bool) -> dict[str, tuple[str, ...]]:
    """Component (pod label `name`) -> acceptable phases, for a node of `role`.

    Once nodes carry the DPU labels, the full-mode ovnkube-node and (on hosts) ovs-node
    stop matching their node affinity, and the DPU-mode DaemonSets take over. A lab's
    hosts are isolated from the cluster network (the spec: "OVN-K will work on DPU nodes
    but fail on isolated host nodes"), so their pods may stay Pending in either mode.
    """
    if role == "control-plane":
        return dict.fromkeys(("ovs-node", "ovnkube-identity", "ovnkube-control-plane", "ovnkube-node"), RUNNING)
    if role == "dpu":
        return {"ovs-node": RUNNING, ("ovnkube-node-dpu" if dpu_mode else "ovnkube-node"): RUNNING}
    if role == "host":
        return {"ovnkube-node-dpu-host": PENDING_OK} if dpu_mode else dict.fromkeys(("ovs-node", "ovnkube-node"), PENDING_OK)
    raise ValueError(f"unknown role {role!r}")


def pod_node(pod: dict) -> str | None:
    """The node a pod is bound to, or, for an unscheduled DaemonSet pod, the one it is meant for."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    for term in (required or {}).get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return field["values"][0]
    return None


def component_of(pod: dict) -> str:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    return labels.get("name") or labels.get("app") or meta.get("name", "?")


def _waiting(pod: dict) -> list[str]:
    status = pod.get("status") or {}
    out = []
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            out.append(f"{cs.get('name')} waiting: {waiting.get('reason', '?')}")
    return out


def _reasons(pod: dict, events: list[dict]) -> list[str]:
    """Why a pod is as it is: unschedulable condition, waiting containers, its latest event."""
    out = [
        f"{c.get('reason', 'not scheduled')}: {c.get('message', '')}".rstrip(": ")
        for c in (pod.get("status") or {}).get("conditions") or []
        if c.get("type") == "PodScheduled" and c.get("status") == "False"
    ]
    out += _waiting(pod)
    name = (pod.get("metadata") or {}).get("name")
    mine = [e for e in events if (e.get("involvedObject") or {}).get("kind") == "Pod" and e["involvedObject"].get("name") == name]
    if mine:
        latest = max(mine, key=lambda e: (e.get("type") == "Warning", e.get("lastTimestamp") or e.get("eventTime") or ""))
        out.append(f"event {latest.get('reason', '?')}: {latest.get('message', '').strip()}")
    return out


def _created(pod: dict) -> str:
    return (pod.get("metadata") or {}).get("creationTimestamp") or ""


def _phase(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or "Unknown"


def _node_state(nodes: list[dict]) -> tuple[dict[str, str], bool]:
    """Ready status per node, and whether any node carries a DPU label (DPU mode is on)."""
    ready, dpu_mode = {}, False
    for n in nodes:
        meta = n.get("metadata") or {}
        labels = meta.get("labels") or {}
        dpu_mode = dpu_mode or DPU_LABEL in labels or DPU_HOST_LABEL in labels
        conditions = (n.get("status") or {}).get("conditions") or []
        ready[meta.get("name")] = next((c.get("status") for c in conditions if c.get("type") == "Ready"), "Unknown")
    return ready, dpu_mode


def ovnk_status(
    pods: list[dict], nodes: list[dict], roles: dict[str, str], events: list[dict] = (), dpu_mode: bool | None = None
) -> list[StatusRow]:
    """One row per (node, component) expected or found; `ok` False says which node differs and why."""
    ready, labelled = _node_state(nodes)
    dpu_mode = labelled if dpu_mode is None else dpu_mode
    by_node: dict[str, list[dict]] = defaultdict(list)
    for pod in pods:
        by_node[pod_node(pod)].append(pod)
    events = list(events)
    rows = []
    for node, role in roles.items():
        node_note = [] if ready.get(node) == "True" else [f"node {'not in cluster' if node not in ready else 'not Ready'}"]
        expected = expected_components(role, dpu_mode)
        here = by_node.get(node, [])
        for comp, phases in expected.items():
            mine = [p for p in here if component_of(p) == comp]
            want = " or ".join(phases)
            if not mine:
                rows.append(StatusRow(node, role, comp, want, "no pod", False, "; ".join([*node_note, "no pod for this node"])))
                continue
            pod = next((p for p in mine if _phase(p) == "Running"), None) or max(mine, key=_created)
            phase = _phase(pod)
            ok = phase in phases and not (phase == "Running" and _waiting(pod))
            why = [] if ok and phase == "Running" else [*node_note, *_reasons(pod, events)]
            if ok and phase != "Running":
                why.insert(0, "expected: isolated host")
            rows.append(StatusRow(node, role, comp, want, phase, ok, "; ".join(why)))
        for pod in here:
            if component_of(pod) not in expected:
                why = f"{component_of(pod)} should not run on a {role} node{' in DPU mode' if dpu_mode else ''}"
                rows.append(StatusRow(node, role, component_of(pod), "absent", _phase(pod), False, why))
    return rows


def fetch_status_inputs(kubeconfig: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """OVN-K pods, nodes and OVN-K events from the cluster, as API-shaped dicts."""
    from .deploy import KubeCluster

    return KubeCluster(kubeconfig).status_inputs()
