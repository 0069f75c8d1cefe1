"""The `dpulab` command line. Errors are one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.exceptions import Abort, Exit, TyperException
from rich.table import Table

from . import lab as lablib
from .cli_common import JsonOpt, NameOpt, err, out
from .errors import DpulabError
from .spec import json_schema, load_spec
from .state import LabState

app = typer.Typer(
    name="dpulab",
    help="Simulated DPU (SmartNIC) labs for OVN-Kubernetes DPU offload, on one Linux machine.\n\n"
    "Examples:\n\n"
    "  dpulab up                      # the spec's lab: 2 host/DPU pairs x 16 links\n\n"
    "  dpulab verify                  # kernel-read checks\n\n"
    "  dpulab up --name big --pairs 8 --vfs 64\n\n"
    "  dpulab down",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _spec_from(
    file: Optional[Path], name: Optional[str], pairs: Optional[int], vfs: Optional[int],
    naming: Optional[str], engine: Optional[str], dataplane: Optional[str],
):
    """Flags over the lab file; for an existing lab without a file, flags over its stored spec."""
    flags = {"name": name, "pairs": pairs, "vfs": vfs, "naming": naming, "engine": engine, "dataplane": dataplane}
    if file is None:
        base = LabState.load(name or "dpu")
        if base is not None:
            merged = base.spec.model_dump(mode="json")
            merged.update({k: v for k, v in flags.items() if v is not None})
            return load_spec(None, merged)
    return load_spec(file, flags)


@app.callback()
def _global_options(
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Print nothing but errors (every command)."),
    no_color: bool = typer.Option(False, "--no-color", help="No colour (as NO_COLOR=1); colour is only used on a terminal anyway."),
) -> None:
    out.quiet = out.quiet or quiet
    if no_color:
        out.no_color = err.no_color = True


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def up(
    file: Optional[Path] = typer.Option(None, "-f", "--file", help="Lab file (YAML); flags override it."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: dpu)."),
    pairs: Optional[int] = typer.Option(None, help="Host/DPU pairs [2]."),
    vfs: Optional[int] = typer.Option(None, help="Links (VF <-> representor) per pair [16]."),
    naming: Optional[str] = typer.Option(None, help="seed: rep<pair>-<i> (the spec's drawing) | ovnk: rep0-<i> on every DPU."),
    engine: Optional[str] = typer.Option(None, help="netns: every node a network namespace (default) | docker | podman: node containers | kind: a kind cluster."),
    dataplane: Optional[str] = typer.Option(None, help="ovn: OVS + OVN on the DPUs (default) | none: wiring only."),
    ovnk_src: Optional[Path] = typer.Option(None, "--ovnk-src", help="kind: then deploy OVN-Kubernetes (Steps 8-16), daemonset.sh of this checkout rendering the lab's `ovnk` options."),
    ovnk_rendered: Optional[Path] = typer.Option(None, "--ovnk-rendered", help="kind: then deploy OVN-Kubernetes from this daemonset.sh output directory."),
    build_image: bool = typer.Option(False, "--build-image", help="With --ovnk-src: build the image and load it into kind first (Steps 6-7)."),
    crds_dir: Optional[Path] = typer.Option(None, "--crds-dir", help="Local ANP/BANP CRD files (network-policy-api v0.1.5); default: download them."),
    ovnk_timeout: float = typer.Option(600, "--ovnk-timeout", help="Seconds for each OVN-Kubernetes wait."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Per-step timings."),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Bring the lab up, or converge a running one to the spec (only differences change).

    An existing lab keeps its stored settings; flags change just what they name. On kind,
    --ovnk-src or --ovnk-rendered then deploys OVN-Kubernetes in DPU mode (the whole spec).
    """
    spec = _spec_from(file, name, pairs, vfs, naming, engine, dataplane)
    ovnk = None
    if ovnk_src or ovnk_rendered or build_image or crds_dir:
        from .ovnk.flow import OvnkRun

        ovnk = OvnkRun(src=ovnk_src, rendered=ovnk_rendered, build_image=build_image, crds_dir=crds_dir, timeout=ovnk_timeout)

    from .cli_ops import spinner

    with spinner(f"lab {spec.name}: planning…", quiet=quiet) as status:
        def progress(step: str, n: int) -> None:
            status(f"lab {spec.name}: {step} ✓ ({n}), working…")
            if verbose:
                err.print(f"  {step}: {n} action(s)")

        res = lablib.up(spec, progress, ovnk)
    if quiet:
        return
    if not res.plan:
        out.print(f"lab [bold]{spec.name}[/]: up to date, nothing changed")
    else:
        summary = ", ".join(f"{v} {k}" for k, v in res.plan.summary().items())
        out.print(f"lab [bold]{spec.name}[/]: {spec.pairs} pairs x {spec.vfs} links on {spec.engine} ({summary})")
    if verbose:
        err.print("  " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in res.timings.items()))
    if res.ovnk is not None:
        from .cli_ovnk import print_deployed

        print_deployed(spec.name, res.ovnk)


@app.command()
def plan(
    file: Optional[Path] = typer.Option(None, "-f", "--file", help="Lab file (YAML); flags override it."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: dpu)."),
    pairs: Optional[int] = typer.Option(None, help="Host/DPU pairs."),
    vfs: Optional[int] = typer.Option(None, help="Links per pair."),
    naming: Optional[str] = typer.Option(None, help="seed | ovnk."),
    engine: Optional[str] = typer.Option(None, help="netns | docker | podman | kind."),
    dataplane: Optional[str] = typer.Option(None, help="ovn | none."),
    as_json: bool = JsonOpt,
) -> None:
    """Print the ordered actions `up` would take, changing nothing."""
    spec = _spec_from(file, name, pairs, vfs, naming, engine, dataplane)
    p = lablib.plan_for(spec)
    if as_json:
        out.print_json(json.dumps([{"phase": a.phase, "target": a.target, "detail": a.detail} for a in p.ordered()]))
        return
    if not p:
        out.print(f"lab {spec.name}: up to date, nothing to do")
        return
    for i, a in enumerate(p.ordered(), 1):
        out.print(f"{i:>5}. {a.describe()}")
    out.print(f"{len(p.actions)} actions: " + ", ".join(f"{v} {k}" for k, v in p.summary().items()))


@app.command()
def down(name: str = NameOpt, quiet: bool = typer.Option(False, "-q", "--quiet")) -> None:
    """Remove everything the lab created (found by its mark), and nothing else."""
    removed = lablib.down(name)
    if not quiet:
        out.print(f"lab {name}: removed {len(removed)} namespace(s)" if removed else f"lab {name}: nothing of it was left")


@app.command()
def verify(
    name: str = NameOpt,
    traffic: bool = typer.Option(False, "--traffic", help="Also the data plane: daemons, ports, pod ICMP+TCP."),
    as_json: bool = JsonOpt,
) -> None:
    """Check the lab against the kernel: wiring, peers, isolation, reachability."""
    from .cli_ops import spinner

    with spinner(f"verifying lab {name}" + (" (with traffic)…" if traffic else "…")):
        checks = lablib.verify(name, traffic)
    failed = [c for c in checks if not c.ok]
    if as_json:
        out.print_json(json.dumps({"lab": name, "ok": not failed, "checks": [c.as_dict() for c in checks]}))
    else:
        t = Table(title=f"dpulab verify: {name}", title_justify="left")
        for col in ("check", "node", "result", "detail"):
            t.add_column(col)
        for c in checks:
            t.add_row(c.check, c.node, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.detail)
        out.print(t)
        out.print(f"{len(checks) - len(failed)} checks passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


@app.command()
def status(name: str = NameOpt, as_json: bool = JsonOpt) -> None:
    """The lab's nodes and pods, as the kernel has them."""
    st = lablib.status(name)
    if as_json:
        out.print_json(json.dumps(st))
        return
    out.print(f"lab [bold]{st['lab']}[/]: engine {st['engine']}, dataplane {st['dataplane']}, "
              f"{st['pairs']} pairs x {st['vfs']} links, naming {st['naming']}")
    t = Table()
    for col in ("node", "role", "pair", "cluster ip", "state", "interfaces"):
        t.add_column(col)
    for n in st["nodes"]:
        t.add_row(n["node"], n["role"], "" if n["pair"] is None else str(n["pair"]), n["cluster_ip"] or "-",
                  n["state"], "" if n["interfaces"] is None else str(n["interfaces"]))
    out.print(t)


@app.command()
def schema() -> None:
    """Print the JSON schema of the lab file."""
    out.print(json_schema(), markup=False, highlight=False, soft_wrap=True)


# Commands contributed by other modules: each has `register(app)`. One line per module.
SUBCOMMAND_MODULES = [
    "cli_dataplane",
    "cli_gc",
    "cli_ovnk",
    "cli_engines",
    "cli_ops",
]


def _register_subcommands() -> None:
    import importlib

    for mod in SUBCOMMAND_MODULES:
        importlib.import_module(f"dpulab.{mod}").register(app)


_register_subcommands()


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {0x85: "\\x85", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def one_line(msg: object) -> str:
    """An error message as exactly one line, whatever a name, key or path in it contains."""
    return " ".join(str(msg).split("\n")).translate(_CONTROL).strip()


def main() -> None:
    import signal

    if signal.getsignal(signal.SIGINT) is getattr(sys.modules["dpulab"], "_interrupted_while_starting", None):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on Ctrl-C cleans up
    args = sys.argv[1:] or ["--help"]
    try:
        rc = app(args, prog_name="dpulab", standalone_mode=False)
    except Exit as e:
        sys.exit(e.exit_code)
    except Abort:
        err.print("dpulab: aborted")
        sys.exit(130)
    except TyperException as e:
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        err.print(f"dpulab: error: {one_line(msg)}", markup=False, emoji=False)
        sys.exit(2)
    except DpulabError as e:
        err.print(f"dpulab: error: {one_line(e)}", markup=False, emoji=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("dpulab: interrupted")
        sys.exit(130)
    except Exception as e:  # a bug or an environment we did not foresee: still one line
        if os.environ.get("DPULAB_DEBUG"):
            raise
        err.print(f"dpulab: internal error: {type(e).__name__}: {one_line(e)} (DPULAB_DEBUG=1 shows the traceback)", markup=False, emoji=False)
        sys.exit(70)
    if rc == 130:  # typer turns a Ctrl-C inside a command into a silent exit 130
        err.print("dpulab: interrupted")
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
