"""Looking at a lab and working in it: `graph`, `exec`, `shell`, `netem`, `events`,
`completion`; plus the help's examples and sections, and the progress spinner."""

from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .cli_common import JsonOpt, NameOpt, err, out
from .errors import DpulabError, InputError

QuietOpt = typer.Option(False, "-q", "--quiet", help="Print nothing but errors.")


# -- progress ---------------------------------------------------------------------------
@contextmanager
def spinner(text: str, *, quiet: bool = False) -> Iterator[callable]:
    """A rich status spinner on stderr while a long step runs, only when stderr is a terminal.

    Yields update(text). In pipes, tests and with --quiet it shows nothing."""
    if quiet or out.quiet or not err.is_terminal or os.environ.get("TERM") == "dumb":
        yield lambda _text: None
        return
    with err.status(text, spinner="dots") as status:
        yield lambda t: status.update(t)


# -- where a node or pod lives ----------------------------------------------------------
@dataclass
class Where:
    lab: str
    ns: str
    name: str  # the node or pod
    what: str  # "node dpu-worker (host)", "pod web on dpu-worker", …


def _match(lab: str, node: str) -> Where | None:
    """NODE in one lab, matched on names alone; the engine (which may ask docker) only for a hit."""
    from .engines import get_engine
    from .state import LabState
    from .topology import Topology

    st = LabState.load(lab)
    if st is None:
        return None
    topo = Topology(st.spec)
    for p in st.pods.values():
        if node in (p["name"], p["netns"]):
            return Where(lab, p["netns"], p["name"], f"pod {p['name']} on {p['host']}")
    hit = next((n for n in topo.nodes if node in (n.name, n.name.removeprefix(f"{lab}-"))), None)
    if hit is None and node not in (topo.cluster_netns, "net", "cluster"):
        return None
    engine = get_engine(st.spec.engine, topo)
    if hit is not None:
        return Where(lab, engine.netns(hit.name), hit.name, f"node {hit.name} ({hit.role})")
    cns = getattr(engine, "cluster_ns", None)
    if cns is None:
        raise InputError(f"lab {lab} runs on {st.spec.engine}: its cluster network is not a namespace of ours")
    return Where(lab, cns, cns, f"cluster network {cns}")


def where(node: str, lab: Optional[str]) -> Where:
    """A node, the cluster network or a pod, by name; without --name, in whichever lab has it."""
    from .state import LabState, labs

    if lab is not None:
        w = _match(lab, node)
        if w is None:
            LabState.require(lab)  # no such lab: that is the one line
            names = list(_names(lab))
            raise InputError(f"{node!r} is not a node or pod of lab {lab} ({', '.join(names[:8])}{', …' if len(names) > 8 else ''})")
        return w
    found = [w for w in (_match(name, node) for name in labs()) if w is not None]
    if not found:
        raise InputError(f"no lab has a node or pod named {node!r} (labs: {', '.join(labs()) or 'none'})")
    if len(found) > 1:
        preferred = [w for w in found if w.lab == "dpu"]
        if len(preferred) == 1 and node.startswith("dpu-"):
            return preferred[0]
        raise InputError(f"{node!r} is in labs {', '.join(w.lab for w in found)}: say which with --name")
    return found[0]


def _names(lab: str) -> list[str]:
    from .state import LabState
    from .topology import Topology

    st = LabState.load(lab)
    if st is None:
        return []
    topo = Topology(st.spec)
    return [n.name for n in topo.nodes] + [topo.cluster_netns] + list(st.pods)


def complete_node(incomplete: str) -> list[str]:
    """Shell completion of NODE: every node, cluster network and pod of every lab."""
    from .state import labs

    try:
        return [n for lab in labs() for n in _names(lab) if n.startswith(incomplete)]
    except Exception:
        return []


def _require_ns(w: Where) -> None:
    from . import namespaces
    from .lab import require_root

    require_root("entering a namespace")
    if not namespaces.exists(w.ns):
        raise DpulabError(f"{w.what}: namespace {w.ns} is not there; is the lab up? (`dpulab up --name {w.lab}`)")


def _enter(w: Where, argv: list[str]) -> None:
    """Replace this process by `nsenter --net=… -- argv` (exit code, signals and terminal are the command's)."""
    from . import namespaces

    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise DpulabError("nsenter is not installed (Debian: util-linux)")
    if shutil.which(argv[0]) is None:
        err.print(f"dpulab: {argv[0]}: command not found", markup=False)
        raise typer.Exit(127)
    env = {**os.environ, "DPULAB_LAB": w.lab, "DPULAB_NODE": w.name, "DPULAB_NETNS": w.ns}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(nsenter, [nsenter, f"--net={namespaces.path(w.ns)}", "--", *argv], env)


EXEC_EPILOG = """Examples:

  dpulab exec dpu-worker2 -- ip -br link          # a DPU's interfaces

  dpulab exec worker -- ping -c1 10.244.0.3       # short node name, lab found by itself

  dpulab exec web -- ip addr show eth0            # a pod, by its name

  dpulab exec -n big net -- bridge link           # the cluster network's bridge ports

The command runs in the node's network namespace only (`nsenter --net`): /sys/class/net still shows the machine's interfaces, so use `ip` (netlink). Options go before NODE. Exit status: the command's; 127 if it is not found."""


def exec_cmd(
    node: str = typer.Argument(..., help="Node (full or without the lab prefix), 'net' for the cluster network, or a pod.", autocompletion=complete_node),
    cmd: List[str] = typer.Argument(..., help="The command and its arguments, after `--`."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: the lab that has NODE)."),
) -> None:
    """Run a command in a node's or a pod's network namespace."""
    name, argv = _split_exec(list(cmd), name)
    w = where(node, name)
    _require_ns(w)
    _enter(w, argv)


def _split_exec(cmd: list[str], name: Optional[str]) -> tuple[Optional[str], list[str]]:
    """NODE's arguments: [--name LAB] -- COMMAND… (click keeps `--` once NODE is read)."""
    if "--" not in cmd:
        return name, cmd
    k = cmd.index("--")
    before, argv = cmd[:k], cmd[k + 1:]
    while before:
        opt = before.pop(0)
        if opt in ("-n", "--name") and before:
            name = before.pop(0)
        elif opt.startswith("--name="):
            name = opt.split("=", 1)[1]
        else:
            raise InputError(f"exec: {opt!r} before `--` is not an option of exec (only --name LAB)")
    if not argv:
        raise InputError("exec: no command after `--`")
    return name, argv


def shell_cmd(
    node: str = typer.Argument(..., help="Node, 'net', or a pod.", autocompletion=complete_node),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: the lab that has NODE)."),
) -> None:
    """Open an interactive shell ($SHELL, else bash) in a node's or a pod's network namespace.

    $DPULAB_NODE, $DPULAB_LAB and $DPULAB_NETNS are set in it (for a prompt)."""
    w = where(node, name)
    _require_ns(w)
    sh = os.environ.get("SHELL") or ""
    if not sh or shutil.which(sh) is None:
        sh = shutil.which("bash") or "/bin/sh"
    if not out.quiet:
        err.print(f"dpulab: {w.what}, namespace {w.ns}; `exit` leaves", markup=False)
    _enter(w, [sh])


# -- graph ------------------------------------------------------------------------------
GRAPH_EPILOG = """Examples:

  dpulab graph                                   # the running lab 'dpu' as Mermaid

  dpulab graph -o lab.html                       # one self-contained HTML file (format from the extension)

  dpulab graph --format svg -o lab.svg           # Graphviz SVG (needs `dot`); also png, dot, json

  dpulab graph --pairs 8 --vfs 64 --format dot   # a planned lab, nothing running

  dpulab graph -f lab.yaml --planned             # what a lab file would build

A running lab is read from the kernel (links up/down, pods, daemons, impairments; needs root); otherwise the planned topology is drawn. Links of a pair are grouped: VF0 (gateway), VF1 (management) and one edge with the range and count of the rest."""


def graph_cmd(
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: dpu)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-F", help="mermaid | dot | svg | png | html | json (default: from -o's extension, else mermaid)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to this file instead of stdout."),
    file: Optional[Path] = typer.Option(None, "-f", "--file", help="Lab file (YAML): draw what it plans."),
    pairs: Optional[int] = typer.Option(None, help="Planned: host/DPU pairs."),
    vfs: Optional[int] = typer.Option(None, help="Planned: links per pair."),
    naming: Optional[str] = typer.Option(None, help="Planned: seed | ovnk."),
    dataplane: Optional[str] = typer.Option(None, help="Planned: ovn | none."),
    planned: bool = typer.Option(False, "--planned", help="Draw the plan even if the lab is running."),
    quiet: bool = QuietOpt,
) -> None:
    """Draw the lab: control plane, cluster network, host/DPU pairs with their links, pods."""
    from . import graph
    from .spec import load_spec
    from .state import LabState
    from .topology import Topology

    f = graph.format_for(fmt, str(output) if output else None)
    lab = name or "dpu"
    has_flags = file is not None or any(v is not None for v in (pairs, vfs, naming, dataplane))
    state = LabState.load(lab)
    with spinner(f"reading lab {lab}…", quiet=quiet):
        if state is not None and not planned and not has_flags:
            topo, live, pods, note = graph.observe(lab)
            g = graph.build(topo, live=live, pods=pods, note=note)
        else:
            if has_flags:
                from .cli import _spec_from

                spec = _spec_from(file, name, pairs, vfs, naming, None, dataplane)
            else:
                spec = state.spec if state is not None else load_spec(None, {"name": lab})
            g = graph.build(Topology(spec), note="planned: nothing read from the kernel")
        data = graph.render(g, f)
    if output is not None:
        try:
            if isinstance(data, bytes):
                output.write_bytes(data)
            else:
                output.write_text(data)
        except OSError as e:
            raise InputError(f"cannot write {output}: {e.strerror}") from None
        if not (quiet or out.quiet):
            err.print(f"wrote {output} ({f}, {g.mode})", markup=False)
        return
    if isinstance(data, bytes):
        if sys.stdout.isatty():
            raise InputError(f"{f} is binary: write it to a file with -o FILE")
        sys.stdout.buffer.write(data)
    elif not quiet:
        sys.stdout.write(data)
    sys.stdout.flush()


# -- netem ------------------------------------------------------------------------------
netem_app = typer.Typer(
    help="Link impairments (delay, jitter, loss, rate) with tc, on one interface's egress.\n\n"
    "A rate alone is a token bucket (tbf); delay, jitter and loss go to the kernel's netem "
    "qdisc (sch_netem). Without netem, loss is a BPF filter (cls_bpf on clsact egress) and "
    "delay/jitter fail. Lab files set impairments with `impairments:`, applied by `up`.",
    no_args_is_help=True,
)

NETEM_EPILOG = """Examples:

  dpulab netem set dpu-worker2 eth0 --rate 100mbit     # the DPU's cluster port, toward the bridge

  dpulab netem set worker eth0-3 --delay 20ms --jitter 5ms --loss 1%

  dpulab netem set web eth0 --rate 10mbit              # a pod's VF

  dpulab netem show                                    # every impaired interface of the lab

  dpulab netem clear dpu-worker2 eth0

Each setting slows one direction (what the interface sends); set both ends of a link for both."""


def _iface(w: Where, iface: str):
    from .netlink import Rtnl

    r = Rtnl(w.ns)
    try:
        li = r.link(iface)
    finally:
        r.close()
    if li is None:
        raise InputError(f"{w.what} has no interface {iface!r}")
    return li


@netem_app.command("set", epilog=escape(NETEM_EPILOG))
def netem_set(
    node: str = typer.Argument(..., help="Node, 'net' (the cluster network's bridge ports), or a pod.", autocompletion=complete_node),
    iface: str = typer.Argument(..., help="Interface, e.g. eth0, eth0-3, rep1-3, w2."),
    delay: Optional[str] = typer.Option(None, "--delay", help="e.g. 20ms (netem)."),
    jitter: Optional[str] = typer.Option(None, "--jitter", help="e.g. 5ms, with --delay (netem)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="e.g. 1% (netem, else a BPF filter)."),
    rate: Optional[str] = typer.Option(None, "--rate", help="e.g. 100mbit, 1gbit, 500kbit (tbf, or netem's own with delay/loss)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: the lab that has NODE)."),
    quiet: bool = QuietOpt,
) -> None:
    """Impair what one interface sends: replaces its root qdisc."""
    from . import netem

    p = netem.Params.parse(delay, jitter, loss, rate)
    w = where(node, name)
    _require_ns(w)
    li = _iface(w, iface)
    how = netem.set_one(w.ns, iface, p, li.mtu)
    if not quiet:
        out.print(f"{w.name} {iface}: {p.describe()} ({how})", markup=False)


@netem_app.command("clear")
def netem_clear(
    node: str = typer.Argument(..., help="Node, 'net', or a pod.", autocompletion=complete_node),
    iface: Optional[str] = typer.Argument(None, help="Interface (default: every impaired one of NODE)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name (default: the lab that has NODE)."),
    quiet: bool = QuietOpt,
) -> None:
    """Remove impairments: the interface gets its default qdisc back."""
    from . import netem

    w = where(node, name)
    _require_ns(w)
    if iface is not None:
        _iface(w, iface)
        ifaces = [iface]
    else:
        ifaces = list(netem.show(w.ns))
    cleared = [i for i in ifaces if netem.clear_one(w.ns, i)]
    if not quiet:
        out.print(f"{w.name}: cleared {', '.join(cleared)}" if cleared else f"{w.name}: nothing impaired", markup=False)


@netem_app.command("show")
def netem_show(
    node: Optional[str] = typer.Argument(None, help="Node, 'net', or a pod (default: the whole lab).", autocompletion=complete_node),
    iface: Optional[str] = typer.Argument(None, help="Interface (default: all)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Lab name [dpu, or the lab that has NODE]."),
    as_json: bool = JsonOpt,
) -> None:
    """Impairments the kernel has now (root qdiscs tbf and netem), read with `tc -j`."""
    from . import namespaces, netem

    if node is not None:
        spaces = [where(node, name)]
        _require_ns(spaces[0])
    else:
        from .lab import require_root
        from .state import LabState

        lab = name or "dpu"
        st = LabState.require(lab)
        require_root("netem show")
        spaces = [w for w in (_match(lab, n) for n in _names(lab)) if w is not None and namespaces.exists(w.ns)]
        _ = st
    rows = []
    for w in spaces:
        for i, q in sorted(netem.show(w.ns).items()):
            if iface is not None and i != iface:
                continue
            rows.append({"lab": w.lab, "node": w.name, "netns": w.ns, "iface": i, "qdisc": q["kind"], **q["params"].as_dict()})
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no impairments" + (f" on {spaces[0].name}" if node else ""), markup=False)
        return
    t = Table()
    for c in ("node", "iface", "qdisc", "delay", "jitter", "loss", "rate"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["node"], r["iface"], r["qdisc"], *(r[k] or "-" for k in ("delay", "jitter", "loss", "rate")))
    out.print(t)


# -- events -----------------------------------------------------------------------------
EVENTS_EPILOG = """Examples:

  dpulab events                                  # until Ctrl-C

  dpulab events --json | jq .                    # one JSON object a line

  dpulab events --count 1 --timeout 10           # the next event, or nothing within 10 s (exit 1)

Line format: time, node, what, change (detail). JSON keys: time, kind (link | node | pod | daemon | lab), action (added | removed | up | down | renamed | started | exited), node, subject, detail."""


def events_cmd(
    name: str = NameOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    count: Optional[int] = typer.Option(None, "--count", "-c", min=1, help="Stop after N events."),
    timeout: Optional[float] = typer.Option(None, "--timeout", "-t", min=0, help="Stop after S seconds (exit 1 if --count was not reached)."),
    quiet: bool = QuietOpt,
) -> None:
    """Stream what changes in the lab: links up/down/added/removed, pods, daemons exiting."""
    from . import events
    from .lab import require_root

    require_root("events")

    def ready(w: "events.Watcher") -> None:
        if not (quiet or out.quiet):
            err.print(f"watching lab {name}: {len(w.socks)} namespaces, {len(w.pidfds)} daemons"
                      + ("" if timeout is not None or count is not None else "; Ctrl-C stops"), markup=False)

    n = 0
    for ev in events.stream(name, count=count, timeout=timeout, on_ready=ready):
        n += 1
        sys.stdout.write((events.to_json(ev) if as_json else ev.line()) + "\n")
        sys.stdout.flush()
    if count is not None and n < count:
        raise typer.Exit(1)


# -- completion -------------------------------------------------------------------------
SHELLS = ("bash", "zsh", "fish", "powershell")


def completion_cmd(shell: str = typer.Argument(..., help="bash | zsh | fish | powershell")) -> None:
    """Print the shell completion script for dpulab.

    bash: `dpulab completion bash > /etc/bash_completion.d/dpulab` (or `eval "$(dpulab completion bash)"` in ~/.bashrc);
    zsh: `dpulab completion zsh > "${fpath[1]}/_dpulab"`; fish: `dpulab completion fish > ~/.config/fish/completions/dpulab.fish`.
    """
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        raise InputError(f"shell {shell!r}: use one of {', '.join(SHELLS)}")
    sys.stdout.write(get_completion_script(prog_name="dpulab", complete_var="_DPULAB_COMPLETE", shell=shell).strip() + "\n")


# -- help: examples and sections ----------------------------------------------------------
EXAMPLES = {
    "up": ["dpulab up", "dpulab up --name big --pairs 8 --vfs 64", "dpulab up -f lab.yaml -v", "dpulab up --dataplane none --quiet",
           "dpulab up --engine kind --ovnk-src ~/ovn-kubernetes --build-image   # the whole spec"],
    "plan": ["dpulab plan --pairs 4", "dpulab plan --json | jq length"],
    "down": ["dpulab down", "dpulab down --name big"],
    "verify": ["dpulab verify", "dpulab verify --traffic          # data plane: daemons, pods, RTT and loss", "dpulab verify --json | jq '.checks[] | select(.ok | not)'"],
    "status": ["dpulab status", "dpulab status --json"],
    "schema": ["dpulab schema > lab.schema.json"],
    "logs": ["dpulab logs dpu-worker2", "dpulab logs dpu-worker2 ovn-controller --lines 100"],
}
GROUP_EXAMPLES = {
    "pod": ["dpulab pod add dpu-worker web", "dpulab pod add dpu-worker3 db --vf 5", "dpulab pod list --json", "dpulab pod del web"],
    "rep": ["dpulab rep resolve dpu-worker2 --vf 3", "dpulab rep resolve dpu-worker2 --vf 3 --by peer --json"],
}
PANELS = {
    "up": "Lab", "plan": "Lab", "down": "Lab", "schema": "Lab",
    "status": "Inspect", "verify": "Inspect", "graph": "Inspect", "events": "Inspect", "logs": "Inspect",
    "exec": "Work in the lab", "shell": "Work in the lab", "netem": "Work in the lab", "pod": "Work in the lab", "rep": "Work in the lab",
    "completion": "Shell",
}
MAN = """Environment:

  DPULAB_RUN_DIR   run directory (default /run/dpulab)

  DPULAB_DEBUG=1   tracebacks instead of one-line internal errors

  NO_COLOR         no colour (colour is only ever used on a terminal)

Files: /run/netns/<node> (every node a named network namespace; `ip netns exec` works too), /run/dpulab/<lab>/ (state, lock, daemon pidfiles and logs).

Exit status: 0 success; 1 failure (a failed check, a command that could not be done); 2 bad input (flags, lab file, names; nothing changed); 3 a name in use by something not of this lab; 70 internal error; 127 `exec` command not found; 130 interrupted.

Shell completion: `dpulab completion bash|zsh|fish`, or `dpulab --install-completion`."""


def _examples(lines: list[str]) -> str:
    return "Examples:\n\n" + "\n\n".join(f"  {escape(x)}" for x in lines)


def _decorate(app: typer.Typer) -> None:
    """Examples, sections and the man-page part of `--help`, without touching the commands' code."""
    def name_of(info) -> str:
        return info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")

    for info in app.registered_commands:
        n = name_of(info)
        if n in EXAMPLES and not info.epilog:
            info.epilog = _examples(EXAMPLES[n])
        if n in PANELS and not info.rich_help_panel:
            info.rich_help_panel = PANELS[n]
    for group in app.registered_groups:
        n = group.name or ""
        if n in PANELS and not group.rich_help_panel:
            group.rich_help_panel = PANELS[n]
        sub = group.typer_instance
        if sub is not None and n in GROUP_EXAMPLES:
            for info in sub.registered_commands:
                cname = name_of(info)
                lines = [x for x in GROUP_EXAMPLES[n] if x.split()[2:3] == [cname]]
                if lines and not info.epilog:
                    info.epilog = _examples(lines)
            if not sub.info.epilog:
                sub.info.epilog = _examples(GROUP_EXAMPLES[n])
    if not app.info.epilog:
        app.info.epilog = escape(MAN)


def register(app: typer.Typer) -> None:
    app.command("graph", epilog=escape(GRAPH_EPILOG))(graph_cmd)
    app.command(
        "exec", epilog=escape(EXEC_EPILOG),
        context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
    )(exec_cmd)
    app.command("shell", epilog="Examples:\n\n  dpulab shell dpu-worker2\n\n  dpulab shell web          # a pod")(shell_cmd)
    netem_app.info.epilog = escape(NETEM_EPILOG)
    app.add_typer(netem_app, name="netem")
    app.command("events", epilog=escape(EVENTS_EPILOG))(events_cmd)
    app.command("completion", epilog="Examples:\n\n  dpulab completion bash > /etc/bash_completion.d/dpulab\n\n  dpulab completion fish > ~/.config/fish/completions/dpulab.fish")(completion_cmd)
    _decorate(app)
