"""Pods in DPU mode, as OVN-Kubernetes plumbs them.

Host half (the DPU-host CNI): take a free VF, move it into a new pod namespace as
`eth0`, give it MAC/IP/route, write the connection details. DPU half: resolve the
representor from pfId/vfId, plug it into br-int with iface-id `<namespace>_<pod>`,
create the logical port, write the connection status.
"""

from __future__ import annotations

import re
import time
from typing import Any

from . import intent, namespaces
from .dataplane import Dataplane, pod_mac, tx_checksum_off
from .engines import get_engine
from .engines.netns import create_marked_ns, ns_status
from .engines.base import NodeStatus
from .errors import DpulabError, InputError
from .lab import require_root
from .netlink import Sockets
from .representor import resolve
from .spec import POD_NAME_PATTERN
from .state import LabState, locked
from .topology import Topology, fill, templates


def pod_netns(lab: str, pod: str) -> str:
    return f"{lab}-pod-{pod}"


def _context(lab: str):
    state = LabState.require(lab)
    if state.spec.dataplane != "ovn":
        raise InputError(f"lab {lab!r} has no data plane; `dpulab up --name {lab} --dataplane ovn` first")
    topo = Topology(state.spec)
    engine = get_engine(state.spec.engine, topo)
    return state, topo, engine, Dataplane(topo, engine)


def _held(state: LabState) -> dict[tuple[str, int], str]:
    return {(p["host"], int(p["vf"])): p["netns"] for p in state.pods.values()}


def add(lab: str, host: str, pod: str, vf: int | None = None, namespace: str = "default") -> dict[str, Any]:
    require_root("pod add")
    for what, value in (("pod", pod), ("namespace", namespace)):
        if not re.fullmatch(POD_NAME_PATTERN, value):
            raise InputError(f"{value!r} is not a valid {what} name (lowercase letters, digits, '-', at most 32)")
    with locked(lab, "pod add"):
        state, topo, engine, dp = _context(lab)
        return add_locked(state, topo, engine, dp, host, pod, vf, namespace)


def add_locked(state: LabState, topo: Topology, engine, dp: Dataplane, host: str, pod: str,
               vf: int | None = None, namespace: str = "default") -> dict[str, Any]:
    """`add` for a caller that holds the lab's lock (`up` adding the lab file's pods)."""
    lab = state.lab
    if pod in state.pods:
        raise InputError(f"pod {pod!r} exists already (on {state.pods[pod]['host']})")
    pair = topo.pair_as(host, "host")
    reserved = {0, dp.opts.mgmt_vf}
    taken = {int(p["vf"]) for p in state.pods.values() if p["host"] == host}
    if vf is None:
        free = [i for i in range(topo.spec.vfs) if i not in reserved | taken]
        if not free:
            raise InputError(f"{host} has no free VF (VF 0 is the gateway link, VF {dp.opts.mgmt_vf} the management port)")
        vf = free[0]
    elif not 0 <= vf < topo.spec.vfs:
        raise InputError(f"VF {vf} does not exist on {host} (0..{topo.spec.vfs - 1})")
    elif vf in reserved:
        raise InputError(f"VF {vf} is reserved (0: gateway link, {dp.opts.mgmt_vf}: management port)")
    elif vf in taken:
        raise InputError(f"VF {vf} of {host} is in use")
    net = dp.node_nets[host]
    used = {p["ip"] for p in state.pods.values() if p["host"] == host}
    ip = next(net.pod_ip(k) for k in range(net.subnet.num_addresses) if net.pod_ip(k) not in used)
    mac = pod_mac(ip)
    ns = pod_netns(lab, pod)
    vf_name = fill(templates(topo.spec)[0], pair.index, vf)
    record: dict[str, Any] = {
        "name": pod, "namespace": namespace, "host": host, "dpu": pair.dpu.name, "vf": vf,
        "vf_netdev": vf_name, "netns": ns, "ip": ip, "mac": mac, "created": time.time(),
    }
    # record intent before touching anything: `down` and `pod del` find half-made pods
    state.pods[pod] = record
    try:  # (the save inside: a Ctrl-C right after it still rolls back)
        state.save()
        return _plumb(state, topo, engine, dp, record, pair, net, vf_name)
    except BaseException:
        _unplumb(state, topo, engine, dp, pod)
        raise


def _plumb(state, topo, engine, dp, record, pair, net, vf_name) -> dict[str, Any]:
    lab, ns, host, pod, vf = state.lab, record["netns"], record["host"], record["name"], record["vf"]
    mac, ip, namespace = record["mac"], record["ip"], record["namespace"]
    with Sockets() as socks:
        status = ns_status(lab, ns, socks)
        if status is NodeStatus.FOREIGN:
            raise InputError(f"namespace {ns} exists and is not ours")
        if status is NodeStatus.MISSING:
            create_marked_ns(lab, ns, socks)
        # host half (each step also finishes a pod an interrupted `pod add` left half-made)
        hr = socks(engine.netns(host))
        vf_link = hr.links().get(vf_name)
        if vf_link is not None:
            stale = socks(ns).link("eth0")
            if stale is not None:  # the old VF, on a veth whose DPU end went with a deleted namespace
                socks(ns).del_link("eth0")
                socks(ns).run()
            hr.set_link(vf_name, index=vf_link.index, netns_fd=socks.fd(ns), new_name="eth0")
            hr.run()
        pr = socks(ns)
        eth = pr.links().get("eth0")
        if eth is None:
            raise DpulabError(f"pod {pod}: its VF {vf_name} is neither on {host} nor in {ns}; `dpulab up --name {lab}` remakes it")
        pr.set_link("eth0", mac=mac, mtu=dp.opts.pod_mtu, up=True)
        pr.add_address(eth.index, f"{ip}/{net.subnet.prefixlen}")
        pr.run()
        pr.add_route("default", gateway=net.gateway, oif=eth.index)
        pr.run()
        tx_checksum_off(ns, "eth0")
        record["connection_details"] = {
            "default": {"pfId": "0", "vfId": str(vf), "sandboxId": str(namespaces.path(ns)), "vfNetdevName": vf_name}
        }
        state.save()
        # DPU half
        iface_id = f"{namespace}_{pod}"
        try:
            rep, how = resolve(topo, engine, socks, pair.dpu.name, 0, vf, held=_held(state))
            record.update(representor=rep, resolved_by=how, iface_id=iface_id)
            dp.plug(pair.dpu, rep, iface_id, socks)  # re-plugged if its veth was remade
            dp.nbctl(
                "--may-exist", "lsp-add", net.switch, iface_id,
                "--", "lsp-set-addresses", iface_id, f"{mac} {ip}",
            )
            record["connection_status"] = {"Status": "Ready", "Reason": ""}
        except DpulabError as e:
            record["connection_status"] = {"Status": "Error", "Reason": str(e)}
        state.save()
    return record


def intact(state: LabState, engine, socks: Sockets) -> dict[tuple[str, int], str]:
    """VFs that really sit in their pod: (host, vf) -> pod namespace. Only these are held when
    `up` plans; the VF of a pod whose namespace or veth is gone is remade on its host, and
    `reconcile` moves it back into the pod."""
    return {(p["host"], int(p["vf"])): p["netns"] for p in state.pods.values() if _vf_in_pod(state, p, engine, socks)}


def _vf_in_pod(state: LabState, rec: dict[str, Any], engine, socks: Sockets):
    """The pod's eth0, if it is there and its peer is in the DPU's namespace as it is now (not
    in one deleted by hand that the DPU's daemons still keep alive, until `up` restarts them)."""
    if ns_status(state.lab, rec["netns"], socks) is not NodeStatus.OURS or not namespaces.exists(engine.netns(rec["dpu"])):
        return None
    r = socks(rec["netns"])
    eth = r.link("eth0")
    if eth is None or eth.peer_nsid is None or eth.peer_nsid != r.nsid_of(socks.fd(engine.netns(rec["dpu"]))):
        return None
    return eth


def _complete(state: LabState, rec: dict[str, Any], engine, socks: Sockets) -> bool:
    if rec.get("connection_status", {}).get("Status") != "Ready" or not rec.get("representor"):
        return False
    eth = _vf_in_pod(state, rec, engine, socks)
    addrs = socks(rec["netns"]).addresses() if eth is not None else []
    return eth is not None and eth.up and eth.mac == rec["mac"] and any(a == rec["ip"] for i, a, _ in addrs if i == eth.index)


def reconcile(state: LabState, topo: Topology, engine, dp: Dataplane) -> list[str]:
    """`up`'s part for pods (after the plan and the data plane): finish each pod an interrupted
    `pod add` left half-made and re-plumb each whose VF, representor or namespace was deleted,
    representor re-plugged into br-int. Pods already whole are not touched."""
    hosts = {h.name for h in topo.hosts}
    redone = []
    with Sockets() as socks:
        todo = [rec for rec in state.pods.values() if rec["host"] in hosts and not _complete(state, rec, engine, socks)]
    for rec in todo:
        pair = topo.pair_of(rec["host"])
        _plumb(state, topo, engine, dp, rec, pair, dp.node_nets[rec["host"]], rec["vf_netdev"])
        redone.append(rec["name"])
    return redone


def delete(lab: str, pod: str) -> dict[str, Any]:
    require_root("pod del")
    with locked(lab, "pod del"):
        state, topo, engine, dp = _context(lab)
        if pod not in state.pods:
            raise InputError(f"no pod {pod!r} in lab {lab} (pods: {', '.join(state.pods) or 'none'})")
        return _unplumb(state, topo, engine, dp, pod)


def _unplumb(state, topo, engine, dp, pod: str) -> dict[str, Any]:
    """Undo both halves of a pod, whatever state it reached; the VF goes back to its host."""
    lab = state.lab
    rec = state.pods[pod]
    pair = topo.pair_of(rec["host"])
    link = topo.links(pair)[int(rec["vf"])]
    iface_id = rec.get("iface_id", f"{rec['namespace']}_{pod}")
    dp.nbctl("--if-exists", "lsp-del", iface_id)
    if rec.get("representor"):
        dp.vsctl(pair.dpu, "--if-exists", "del-port", "br-int", rec["representor"])
    with Sockets() as socks:
        ns = rec["netns"]
        if intent.leftover(lab, ns):
            namespaces.remove(ns)  # the placeholder of a create that was killed
        if ns_status(lab, ns, socks) is NodeStatus.OURS:
            pr = socks(ns)
            eth = pr.links().get("eth0")
            if eth is not None:
                pr.set_link("eth0", up=False)
                pr.set_link(
                    "eth0", index=eth.index, netns_fd=socks.fd(engine.netns(rec["host"])), new_name=link.host_ifname
                )
                pr.run()
            socks.forget(ns)
            namespaces.remove(ns)
        hr = socks(engine.netns(rec["host"]))
        if link.host_ifname in hr.links():
            hr.set_link(link.host_ifname, mac=link.host_mac, mtu=1500, up=True)
            hr.run()
    del state.pods[pod]
    state.save()
    return rec


def listing(lab: str) -> list[dict[str, Any]]:
    """Pods with their status as the kernel and OVN have it now."""
    state, topo, engine, dp = _context(lab)
    ports = {}
    try:
        ports = dp.ports_up()
    except DpulabError:
        pass
    rows = []
    for rec in state.pods.values():
        status = rec.get("connection_status", {}).get("Status", "Pending")
        if not namespaces.exists(rec["netns"]):
            status = "Missing"
        elif status == "Ready" and not ports.get(rec.get("iface_id", ""), False):
            status = "Ready (port down)"
        rows.append({**rec, "status": status})
    return rows
