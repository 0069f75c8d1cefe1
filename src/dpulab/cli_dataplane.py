"""`dpulab pod`, `dpulab rep`, `dpulab logs`: working with the data plane."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from .cli_common import JsonOpt, NameOpt, out
from .errors import InputError

pod_app = typer.Typer(help="Pods on host VFs, plugged through their DPU's representors.", no_args_is_help=True)
rep_app = typer.Typer(help="Representors: which DPU netdev stands for a host function.", no_args_is_help=True)


@pod_app.command("add")
def pod_add(
    host: str = typer.Argument(..., help="Host node, e.g. dpu-worker."),
    pod: str = typer.Argument(..., help="Pod name."),
    vf: Optional[int] = typer.Option(None, "--vf", help="VF to use (default: the first free one)."),
    namespace: str = typer.Option("default", "--namespace", help="Kubernetes namespace (iface-id <namespace>_<pod>)."),
    name: str = NameOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Add a pod on a host: VF into the pod (host half), representor into br-int (DPU half)."""
    from . import pods

    rec = pods.add(name, host, pod, vf, namespace)
    if as_json:
        out.print_json(json.dumps(rec))
        return
    st = rec["connection_status"]
    out.print(
        f"pod {pod}: {host} VF {rec['vf']} ({rec['vf_netdev']}) -> {rec['dpu']}/{rec.get('representor', '?')}, "
        f"{rec['ip']} {rec['mac']}, {st['Status']}{': ' + st['Reason'] if st['Reason'] else ''}"
    )
    if st["Status"] != "Ready":
        raise typer.Exit(1)


@pod_app.command("del")
def pod_del(pod: str = typer.Argument(..., help="Pod name."), name: str = NameOpt) -> None:
    """Delete a pod: unplug the representor, return the VF to its host."""
    from . import pods

    rec = pods.delete(name, pod)
    out.print(f"pod {pod}: deleted, {rec['vf_netdev']} back on {rec['host']}")


@pod_app.command("list")
def pod_list(name: str = NameOpt, as_json: bool = JsonOpt) -> None:
    """Pods with host, VF, representor, DPU, IP, MAC, namespace and status."""
    from . import pods

    rows = pods.listing(name)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table()
    cols = ("pod", "host", "vf", "representor", "dpu", "ip", "mac", "netns", "status")
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], r["host"], str(r["vf"]), r.get("representor", "-"), r["dpu"], r["ip"], r["mac"], r["netns"], r["status"])
    out.print(t)


@rep_app.command("resolve")
def rep_resolve(
    dpu: str = typer.Argument(..., help="DPU node, e.g. dpu-worker2."),
    pf: int = typer.Option(0, "--pf"),
    vf: int = typer.Option(..., "--vf"),
    by: str = typer.Option("auto", "--by", help="auto | name | alias | peer"),
    name: str = NameOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Which netdev on a DPU represents host function (pf, vf)."""
    from .engines import get_engine
    from .lab import held_vfs, require_root
    from .netlink import Sockets
    from .representor import resolve
    from .state import LabState
    from .topology import Topology

    if by not in ("auto", "name", "alias", "peer"):
        raise InputError(f"--by {by!r}: use auto, name, alias or peer")
    require_root("rep resolve")
    state = LabState.require(name)
    topo = Topology(state.spec)
    with Sockets() as socks:
        netdev, how = resolve(topo, get_engine(state.spec.engine, topo), socks, dpu, pf, vf, by, held_vfs(state))  # type: ignore[arg-type]
    if as_json:
        out.print_json(json.dumps({"dpu": dpu, "pf": pf, "vf": vf, "netdev": netdev, "by": how}))
    else:
        out.print(f"{netdev}  (found by {how})")


def logs(
    node: str = typer.Argument(..., help="Node whose daemons to show."),
    component: Optional[str] = typer.Argument(None, help="e.g. ovs-vswitchd, ovn-controller, ovnnb, ovn-northd."),
    lines: int = typer.Option(40, "--lines", "-l"),
    name: str = NameOpt,
) -> None:
    """Show the last lines of a node's daemon logs."""
    from .dataplane import Dataplane
    from .engines import get_engine
    from .state import LabState
    from .topology import Topology

    state = LabState.require(name)
    topo = Topology(state.spec)
    daemons = [d for d in Dataplane(topo, get_engine(state.spec.engine, topo)).all_daemons() if d.node == node]
    if not daemons:
        raise InputError(f"{node} runs no daemons in lab {name} (the control plane and DPUs do)")
    if component:
        daemons = [d for d in daemons if d.component == component]
        if not daemons:
            raise InputError(f"{node} has no {component}")
    for d in daemons:
        out.rule(f"{d.node}/{d.component}  {d.logfile}")
        try:
            text = d.logfile.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            text = ["(no log yet)"]
        out.print("\n".join(text), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(pod_app, name="pod")
    app.add_typer(rep_app, name="rep")
    app.command()(logs)
