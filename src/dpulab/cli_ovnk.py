"""`dpulab kind ...` and `dpulab ovnk ...`: the kind config and OVN-Kubernetes in DPU mode.

Errors the user can fix are one line on stderr with the error's exit code (2 for bad
input), never a traceback, also when these apps run on their own.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
import yaml

from .errors import DpulabError, InputError
from .kindconfig import DEFAULT_NODE_IMAGE, lab_nodes, render_kind_config
from .ovnk.manifests import derive_dpu_manifests, k8s_version_of_image, render_with_daemonset_sh, validate_dir
from .ovnk.options import OvnkOptions

kind_app = typer.Typer(no_args_is_help=True)
ovnk_app = typer.Typer(help="OVN-Kubernetes in DPU mode on a lab's kind cluster (spec Steps 8-16).", no_args_is_help=True)

REPRESENTOR_MODES = ("veth", "simulate-dpu")
NameOpt = typer.Option("dpu", "--name", "-n", help="Lab (kind cluster) name.")
PairsOpt = typer.Option(2, "--pairs", help="Host/DPU pairs.")
OvnkSrcOpt = typer.Option(None, "--ovnk-src", help="ovn-kubernetes checkout with dist/images/daemonset.sh.")
RenderedOpt = typer.Option(None, "--rendered", help="Directory daemonset.sh already rendered.")
ModeOpt = typer.Option("veth", "--representor-mode", help="veth (the spec) | simulate-dpu (upstream).")
NodeImageOpt = typer.Option(DEFAULT_NODE_IMAGE, "--node-image", help="kind node image: its version picks the schemas.")


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


def _options(representor_mode: str) -> OvnkOptions:
    if representor_mode not in REPRESENTOR_MODES:
        raise InputError(f"representor mode {representor_mode!r} is not one of {', '.join(REPRESENTOR_MODES)}")
    return OvnkOptions(representor_mode=representor_mode)


def _api_url(name: str, api_url: Optional[str]) -> str:
    from .ovnk.deploy import discover_api_url

    return api_url or discover_api_url(name)


def _prepare(
    out: Path, ovnk_src: Optional[Path], rendered: Optional[Path], opts: OvnkOptions, name: str,
    api_url: Optional[str], node_image: str,
) -> int:
    """Render (or take) the manifests, derive DPU mode into `out`, validate; returns files written."""
    if (ovnk_src is None) == (rendered is None):
        raise InputError("give exactly one of --ovnk-src or --rendered")
    if rendered is not None and api_url is not None:
        raise InputError("--api-url is for rendering (--ovnk-src); a render already holds its API URL")
    if ovnk_src is not None:
        rendered = render_with_daemonset_sh(ovnk_src, opts, _api_url(name, api_url), out)
    written = derive_dpu_manifests(rendered, out, opts)
    errors = validate_dir(out, k8s_version_of_image(node_image))
    if errors:
        raise DpulabError(f"{len(errors)} schema error(s), first: {errors[0]}")
    return len(written)


@kind_app.command("config")
def kind_config(
    pairs: int = PairsOpt,
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
    representor_mode: str = ModeOpt,
    name: str = NameOpt,
    api_url: Optional[str] = typer.Option(None, "--api-url", help="With --ovnk-src; default: found as Step 8 does."),
    node_image: str = NodeImageOpt,
) -> None:
    """Write the manifests with the DPU-mode DaemonSets derived, schema-checked."""
    with _one_line_errors():
        opts = _options(representor_mode)
        count = _prepare(out, ovnk_src, rendered, opts, name, api_url, node_image)
        typer.echo(f"{count} files in {out} (representor mode {opts.representor_mode}), schema-valid")


@ovnk_app.command("deploy")
def deploy_cmd(
    ovnk_src: Optional[Path] = OvnkSrcOpt,
    rendered: Optional[Path] = RenderedOpt,
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Default: ~/<name>.conf, as the spec."),
    crds_dir: Optional[Path] = typer.Option(
        None, "--crds-dir", help="Local ANP/BANP CRD files (network-policy-api v0.1.5); default: download them."
    ),
    representor_mode: str = ModeOpt,
    name: str = NameOpt,
    pairs: int = PairsOpt,
    api_url: Optional[str] = typer.Option(None, "--api-url", help="With --ovnk-src; default: found as Step 8 does."),
    node_image: str = NodeImageOpt,
    dpu_mode: bool = typer.Option(True, "--dpu-mode/--no-dpu-mode", help="Steps 15-16: label nodes, DPU DaemonSets."),
    timeout: float = typer.Option(600, "--timeout", help="Seconds for each wait."),
) -> None:
    """Apply Steps 9-16 with server-side apply; a second run changes nothing."""
    from .ovnk.deploy import KubeCluster, deploy

    with _one_line_errors():
        opts = _options(representor_mode)
        nodes = lab_nodes(name, pairs)
        cluster = KubeCluster(kubeconfig or Path.home() / f"{name}.conf")
        with tempfile.TemporaryDirectory(prefix="dpulab-ovnk-") as tmp:
            _prepare(Path(tmp), ovnk_src, rendered, opts, name, api_url, node_image)
            changes = deploy(
                cluster, Path(tmp), control_plane=nodes.control_plane, hosts=nodes.hosts, dpus=nodes.dpus,
                crds_dir=crds_dir, dpu_mode=dpu_mode, timeout=timeout,
                on_change=lambda c: typer.echo(f"{c.step:14} {c.target} {'changed' if c.changed else 'unchanged'}"),
            )  # fmt: skip
        changed = sum(c.changed for c in changes)
        typer.echo(f"deployed: {changed} changed, {len(changes) - changed} unchanged")


@ovnk_app.command("status")
def status_cmd(
    name: str = NameOpt,
    pairs: int = PairsOpt,
    kubeconfig: Optional[Path] = typer.Option(None, "--kubeconfig", help="Default: ~/<name>.conf."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Each node's OVN-K pods against its role; exit 1 if any node differs."""
    from .ovnk.status import fetch_status_inputs, ovnk_status

    with _one_line_errors():
        pods, nodes, events = fetch_status_inputs(kubeconfig or Path.home() / f"{name}.conf")
        rows = ovnk_status(pods, nodes, lab_nodes(name, pairs).roles(), events)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        for r in rows:
            mark = "ok  " if r.ok else "DIFF"
            typer.echo(f"{mark} {r.node:20} {r.role:13} {r.component:24} {r.actual:8} (want {r.expected}){'  ' + r.why if r.why else ''}")
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
        files = helm_values(OvnkOptions(), _api_url(name, api_url))
        out.mkdir(parents=True, exist_ok=True)
        for filename, values in files.items():
            (out / filename).write_text(yaml.safe_dump(values, sort_keys=False))
        typer.echo(f"wrote {', '.join(files)} to {out}")
