"""`dpulab kind ...` and `dpulab ovnk ...`: the kind config and OVN-Kubernetes in DPU mode.

Errors the user can fix are one line on stderr with the error's exit code (2 for bad
input), never a traceback, also when these apps run on their own.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import typer
import yaml

from .errors import DpulabError, InputError
from .kindconfig import DEFAULT_NODE_IMAGE, lab_nodes, render_kind_config
from .spec import LabSpec, load_spec
from .state import LabState

kind_app = typer.Typer(no_args_is_help=True)
ovnk_app = typer.Typer(help="OVN-Kubernetes in DPU mode on a lab's kind cluster (spec Steps 8-16).", no_args_is_help=True)

REPRESENTOR_MODES = ("veth", "simulate-dpu")
NameOpt = typer.Option("dpu", "--name", "-n", help="Lab (kind cluster) name: its stored spec gives the rest.")
PairsOpt = typer.Option(None, "--pairs", help="Host/DPU pairs [the lab's; 2 without a lab].")
OvnkSrcOpt = typer.Option(None, "--ovnk-src", help="ovn-kubernetes checkout with dist/images/daemonset.sh.")
RenderedOpt = typer.Option(None, "--rendered", help="Directory daemonset.sh already rendered.")
ModeOpt = typer.Option(
    None, "--representor-mode", help="veth (the spec) | simulate-dpu (upstream) [the lab's ovnk.representor_mode; veth]."
)
NodeImageOpt = typer.Option(None, "--node-image", help=f"kind node image: its version picks the schemas [the lab's; {DEFAULT_NODE_IMAGE}].")


# A callback keeps `config` a subcommand (Typer runs a lone command directly otherwise).
@kind_app.callback()
def _kind() -> None:
    """The kind cluster config of a lab (spec Step 2)."""


def register(app: typer.Typer) -> None:
    """Hook for dpulab.cli's SUBCOMMAND_MODULES."""
    app.add_typer(kind_app, name="kind")
    app.add_typer(ovnk_app, name="ovnk")


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except DpulabError as e:
        typer.echo(f"dpulab: error: {e}", err=True)
        raise typer.Exit(e.exit_code) from None
    except OSError as e:  # unwritable --out, unreadable file
        where = f"{e.filename}: " if e.filename else ""
        typer.echo(f"dpulab: error: {where}{e.strerror or e}", err=True)
        raise typer.Exit(1) from None


@dataclass
class LabContext:
    """What an `ovnk` command works on: the lab's stored spec (flags over it), or the spec's
    defaults for a cluster dpulab did not make."""

    spec: LabSpec
    state: Optional[LabState]
    node_image: str  # for the schema version only

    @property
    def nodes(self):
        return lab_nodes(self.spec.name, self.spec.pairs)

    def kubeconfig(self, given: Optional[Path]) -> Path:
        from .engines.kind import kubeconfig_path

        return given or Path(kubeconfig_path(self.spec))

    def engine(self):
        """The lab's kind engine (its container engine: API URL discovery, image load)."""
        from .engines.kind import KindEngine
        from .topology import Topology

        return KindEngine(Topology(self.spec))

    def api_url(self, given: Optional[str]) -> str:
        if given:
            return given
        if self.state is not None:
            from .ovnk.flow import api_url_of

            return api_url_of(self.engine())
        from .ovnk.deploy import discover_api_url

        return discover_api_url(self.spec.name)


def _lab(name: str, pairs: Optional[int] = None, representor_mode: Optional[str] = None, node_image: Optional[str] = None) -> LabContext:
    """The lab `name` as stored (an error if it is not a kind lab), flags over it; defaults without one."""
    if representor_mode is not None and representor_mode not in REPRESENTOR_MODES:
        raise InputError(f"representor mode {representor_mode!r} is not one of {', '.join(REPRESENTOR_MODES)}")
    state = LabState.load(name)
    if state is not None:
        spec = state.spec
        if spec.engine != "kind":
            raise InputError(f"lab {name!r} runs on engine {spec.engine}: OVN-Kubernetes is deployed onto kind labs (`dpulab up --engine kind`)")
        if pairs is not None and pairs != spec.pairs:
            raise InputError(f"lab {name!r} has {spec.pairs} pairs, not {pairs}: its cluster has those nodes")
        data = spec.model_dump(mode="json")
    else:  # a cluster dpulab did not make: its representor names are not the lab's to check
        data = {"name": name, "engine": "kind", "pairs": 2 if pairs is None else pairs, "naming": "ovnk"}
    if representor_mode is not None:
        data["ovnk"] = {**data.get("ovnk", {}), "representor_mode": representor_mode}
    spec = load_spec(None, data)  # every check of the lab spec (simulate-dpu names, for one)
    return LabContext(spec, state, node_image or spec.containers.kind.node_image)


def _prepare(out: Path, ovnk_src: Optional[Path], rendered: Optional[Path], lab: LabContext, api_url: Optional[str]) -> int:
    """Render (or take) the manifests, derive DPU mode into `out`, validate; returns files written."""
    from .ovnk.flow import prepare_manifests

    if rendered is not None and api_url is not None:
        raise InputError("--api-url is for rendering (--ovnk-src); a render already holds its API URL")
    written = prepare_manifests(
        lab.spec.ovnk, out, src=ovnk_src, rendered=rendered, api_url=lambda: lab.api_url(api_url), node_image=lab.node_image
    )
    return len(written)


def print_rows(rows) -> None:
    for r in rows:
        mark = "ok  " if r.ok else "DIFF"
        typer.echo(f"{mark} {r.node:20} {r.role:13} {r.component:24} {r.actual:8} (want {r.expected}){'  ' + r.why if r.why else ''}")


def print_deployed(name: str, result) -> None:
    """After `up` deployed OVN-Kubernetes: the changes, where the manifests are, `ovnk status`; exit 1 if a node differs."""
    typer.echo(f"ovnk on {name}: {result.changed} changed, {len(result.changes) - result.changed} unchanged (manifests: {result.manifests})")
    print_rows(result.rows)
    if not all(r.ok for r in result.rows):
        raise typer.Exit(1)


@kind_app.command("config")
def kind_config(
    pairs: int = typer.Option(2, "--pairs", help="Host/DPU pairs."),
    pod_cidr: Optional[str] = typer.Option(None, "--pod-cidr", help="Default per family: 10.244.0.0/16, fd00:10:244::/48."),
    svc_cidr: Optional[str] = typer.Option(None, "--svc-cidr", help="Default per family: 10.96.0.0/16, fd00:10:96::/112."),
    ip_family: str = typer.Option("ipv4", "--ip-family", help="ipv4 | ipv6 | dual (give CIDRs comma-joined)."),
    dns_domain: str = typer.Option("cluster.local", "--dns-domain"),
    log_level: int = typer.Option(4, "--log-level", help="Verbosity of the Kubernetes components."),
    image: str = typer.Option(DEFAULT_NODE_IMAGE, "--image", help="Node image; from v1.31 on kubeadm v1beta4."),
) -> None:
    """Print the kind config (YAML) for `kind create cluster --config`."""
    with _one_line_errors():
        typer.echo(render_kind_config(pairs, pod_cidr, svc_cidr, ip_family, dns_domain, log_level, image), nl=False)


@ovnk_app.command("manifests")
def manifests(
    out: Path = typer.Option(..., "--out", help="Directory for the manifests."),
    ovnk_src: Optional[Path] = OvnkSrcOpt,
    rendered: Optional[Path] = RenderedOpt,
    representor_mode: Optional[str] = ModeOpt,
    name: str = NameOpt,
    api_url: Optional[str] = typer.Option(None, "--api-url", help="With --ovnk-src; default: found as Step 8 does."),
    node_image: Optional[str] = NodeImageOpt,
) -> None:
    """Write the manifests with the DPU-mode DaemonSets derived, schema-checked (the lab's `ovnk` options)."""
    with _one_line_errors():
        lab = _lab(name, representor_mode=representor_mode, node_image=node_image)
        count = _prepare(out, ovnk_src, rendered, lab, api_url)
        typer.echo(f"{count} files in {out} (representor mode {lab.spec.ovnk.representor_mode}), schema-valid")


@ovnk_app.command("deploy")
def deploy_cmd(
    ovnk_src: Optional[Path] = OvnkSrcOpt,
    rendered: Optional[Path] = RenderedOpt,
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Default: the lab's (~/<name>.conf, as the spec)."),
    crds_dir: Optional[Path] = typer.Option(
        None, "--crds-dir", help="Local ANP/BANP CRD files (network-policy-api v0.1.5); default: download them."
    ),
    representor_mode: Optional[str] = ModeOpt,
    name: str = NameOpt,
    pairs: Optional[int] = PairsOpt,
    api_url: Optional[str] = typer.Option(None, "--api-url", help="With --ovnk-src; default: found as Step 8 does."),
    node_image: Optional[str] = NodeImageOpt,
    dpu_mode: bool = typer.Option(True, "--dpu-mode/--no-dpu-mode", help="Steps 15-16: label nodes, DPU DaemonSets."),
    timeout: float = typer.Option(600, "--timeout", help="Seconds for each wait."),
) -> None:
    """Apply Steps 9-16 with server-side apply; a second run changes nothing.

    On a lab dpulab made (--name), its stored spec gives the options, nodes and kubeconfig,
    the lab remembers the deploy (verify expects OVN-K's interfaces), and a changed
    --representor-mode is stored in the lab's spec."""
    from .ovnk.deploy import KubeCluster, deploy

    def echo(c) -> None:
        typer.echo(f"{c.step:14} {c.target} {'changed' if c.changed else 'unchanged'}")

    with _one_line_errors():
        lab = _lab(name, pairs, representor_mode, node_image)
        if lab.state is not None:
            changes = _deploy_lab(lab, kubeconfig, ovnk_src, rendered, crds_dir, api_url, dpu_mode, timeout, echo)
        else:
            nodes = lab.nodes
            cluster = KubeCluster(lab.kubeconfig(kubeconfig))
            with tempfile.TemporaryDirectory(prefix="dpulab-ovnk-") as tmp:
                _prepare(Path(tmp), ovnk_src, rendered, lab, api_url)
                changes = deploy(
                    cluster, Path(tmp), control_plane=nodes.control_plane, hosts=nodes.hosts, dpus=nodes.dpus,
                    crds_dir=crds_dir, dpu_mode=dpu_mode, interconnect=lab.spec.ovnk.enable_interconnect,
                    timeout=timeout, on_change=echo,
                )  # fmt: skip
        changed = sum(c.changed for c in changes)
        typer.echo(f"deployed: {changed} changed, {len(changes) - changed} unchanged")


def _deploy_lab(lab: LabContext, kubeconfig, ovnk_src, rendered, crds_dir, api_url, dpu_mode, timeout, echo):
    """`ovnk deploy` on a lab dpulab made: under its lock, through the same flow as `up --ovnk-src`."""
    from .ovnk.deploy import KubeCluster
    from .ovnk.flow import OvnkRun, deploy_lab
    from .state import locked

    cluster = KubeCluster(kubeconfig) if kubeconfig is not None else None
    run = OvnkRun(src=ovnk_src, rendered=rendered, crds_dir=crds_dir, api_url=api_url, dpu_mode=dpu_mode, timeout=timeout, cluster=cluster)
    run.check(rendered_flag="--rendered")
    with locked(lab.spec.name, "ovnk deploy"):
        state = LabState.require(lab.spec.name)  # read again under the lock
        if lab.spec != state.spec:
            state.spec = lab.spec  # a changed --representor-mode is the lab's from now on
            state.save()
        return deploy_lab(lab.spec, lab.engine(), state, run, on_change=echo).changes


@ovnk_app.command("status")
def status_cmd(
    name: str = NameOpt,
    pairs: Optional[int] = PairsOpt,
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Default: the lab's (~/<name>.conf)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Each node's OVN-K pods against its role; exit 1 if any node differs."""
    from .ovnk.status import fetch_status_inputs, ovnk_status

    with _one_line_errors():
        lab = _lab(name, pairs)
        pods, nodes, events = fetch_status_inputs(lab.kubeconfig(kubeconfig))
        rows = ovnk_status(pods, nodes, lab.nodes.roles(), events)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print_rows(rows)
    if not all(r.ok for r in rows):
        raise typer.Exit(1)


@ovnk_app.command("helm-values")
def helm_values_cmd(
    out: Path = typer.Option(..., "--out", help="Directory for the values files."),
    name: str = NameOpt,
    api_url: Optional[str] = typer.Option(None, "--api-url", help="Default: found as Step 8 does."),
) -> None:
    """Write Helm values for upstream's chart with global.simulateDpu=true (host side, DPU side)."""
    from .ovnk.helm import helm_values

    with _one_line_errors():
        lab = _lab(name)
        files = helm_values(lab.spec.ovnk, lab.api_url(api_url))
        out.mkdir(parents=True, exist_ok=True)
        for filename, values in files.items():
            (out / filename).write_text(yaml.safe_dump(values, sort_keys=False))
        typer.echo(f"wrote {', '.join(files)} to {out}")
