#!/usr/bin/env python3
"""Wiring benchmark (issue #6): the spec's Step 4 script vs dpulab vs the `ip -batch` floor.

Run as root from the repository:  .venv/bin/python bench/wiring.py [--quick] [--reps N] [--json out.json]

For each size (host/DPU pairs x links per pair) and each repetition, the candidates run
one after the other in an order that rotates per repetition (the machine is noisy: they
are compared side by side, in one run), each starting on a quiet machine (see settle()):

spec script
    The bash block under the spec's "Step 4" heading, read from the spec markdown at run
    time (never copied into the repository) and scaled by the substitutions listed in
    SUBSTITUTIONS below (for 2 x 16 they give back the spec's text exactly; that is
    checked). It runs under `bash` with `docker` and `sudo` shims first on PATH, against
    stand-ins for the kind node containers: `unshare --net --mount --uts sleep infinity`
    processes, each with an `eth0` (a veth to a `kind` bridge in one more stand-in, with
    an address and a default route, like a kind node). The script runs inside a private
    network namespace of its own that stands in for the machine's root namespace, so its
    temporary root-namespace names cannot collide with anything on the machine. Its exit
    status and the end state it leaves (interfaces missing / unexpected / not UP per node)
    are recorded: failures and defects show in the table, they are not hidden. It is
    skipped at a size where one repetition would take longer than --spec-cap seconds
    (estimated from the smaller sizes measured in the same run).

dpulab
    In a fresh Python process per repetition (cold template caches, as a real `up`):
    import, LabSpec + Topology, node namespaces and the cluster network (the engine's
    node actions: timed separately), then the plan + apply of the links = "wiring";
    teardown is lab.down(). Then, for reference, the whole `dpulab up` command
    (--dataplane none) and `dpulab down`, each a separate process, wall time.

floor
    The same veths (same names; both ends in the same namespaces; both ends UP) made by
    iproute2 from batch files written beforehand: ONE `ip -batch` run in the root
    namespace with lines `link add eth0-<i> netns <host> type veth peer name
    rep<p>-<i> netns <dpu>`, then ONE `ip -n <ns> -batch` per namespace with lines
    `link set <name> up`. No MACs and no aliases (dpulab sets both: deterministic MACs
    inside its create requests, ownership marks as aliases, one extra request per end).
    Its namespaces are made by one `ip -batch` of `netns add` lines (timed separately),
    its teardown is one `ip -batch` of `netns del` lines.

Teardown times are the time until the command returns: the kernel frees a deleted
namespace's devices afterwards, in its own workers, which settle() waits out before the
next candidate starts.

data plane
    Only if this dpulab has `up --dataplane ovn` and OVS/OVN are installed: at the
    smallest size, `dpulab up --dataplane ovn` plus `dpulab pod add` of one pod per host
    until the first ping between the pods on different hosts succeeds; and the resident
    memory of each DPU's daemons (ovsdb-server + ovs-vswitchd + ovn-controller).

Everything the benchmark makes (stand-ins, shims, batch files, namespaces, labs) lives in
its own temp folder under bench/ and under its own `bench-<pid>...` names, and is removed
on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
SPEC_MD = Path(os.environ.get("DPULAB_SPEC_MD", REPO.parent / "shared" / "spec" / "dpu-topology-with-ovn-kubernetes.md"))
SIZES = [(2, 16), (2, 64), (8, 64), (16, 128)]
QUICK_SIZES = [(2, 16), (2, 64)]
PID = os.getpid()
DPULAB = [str(Path(sys.executable).with_name("dpulab"))]
if not Path(DPULAB[0]).exists():
    DPULAB = [sys.executable, "-m", "dpulab"]

# What is changed in the spec's Step 4 script to run it at other sizes (applied in this order).
SUBSTITUTIONS = [
    "NUM_DPU_PAIRS=2 -> NUM_DPU_PAIRS=<pairs> (the one assignment)",
    "INTERFACES_PER_PAIR=16 -> INTERFACES_PER_PAIR=<links> (the one assignment)",
    'declare -a HOST_CONTAINERS=("dpu-worker" "dpu-worker3") -> kind\'s host names of all <pairs> pairs '
    "(dpu-worker, dpu-worker3, dpu-worker5, ...)",
    'declare -a DPU_CONTAINERS=("dpu-worker2" "dpu-worker4") -> kind\'s DPU names (dpu-worker2, dpu-worker4, ...)',
    "every run of consecutive non-comment lines written out once per pair (they name dpu-worker/dpu-worker2 "
    "or dpu-worker3/dpu-worker4, temp-host<p>-0/temp-rep<p>-0, HOST<p>_PID/DPU<p>_PID, host<p>-eth0-, dpu<p>-rep<p>-, "
    "rep<p>-): the pair-0 lines of the run are repeated for pairs 0..<pairs>-1 with pair 0's names replaced by pair p's; "
    "the spec's pair-1 copies are dropped (for 2 pairs this gives back the spec's lines, in the spec's order)",
]
_PAIR0 = re.compile(r"dpu-worker2\b|dpu-worker(?![\w-])|temp-host0-0|temp-rep0-0|HOST0_PID|DPU0_PID|host0-eth0-|dpu0-rep0-|\brep0-")
_PAIR1 = re.compile(r"dpu-worker[34]\b|temp-host1-0|temp-rep1-0|HOST1_PID|DPU1_PID|host1-eth0-|dpu1-rep1-|\brep1-")


def host_name(p: int) -> str:
    return "dpu-worker" if p == 0 else f"dpu-worker{2 * p + 1}"


def dpu_name(p: int) -> str:
    return f"dpu-worker{2 * p + 2}"


# -- the spec's script ----------------------------------------------------------------------
def extract_step4(md: str) -> str:
    """The first ```bash block after the heading that names Step 4."""
    m = re.search(r"^#{2,}\s*Step 4\b.*$", md, re.M)
    if not m:
        raise SystemExit(f"{SPEC_MD}: no 'Step 4' heading")
    block = re.search(r"^```bash\n(.*?)^```", md[m.end() :], re.M | re.S)
    if not block:
        raise SystemExit(f"{SPEC_MD}: no bash block under Step 4")
    return block.group(1)


def scale_script(script: str, pairs: int, links: int) -> str:
    out, n = re.subn(r"^NUM_DPU_PAIRS=2$", f"NUM_DPU_PAIRS={pairs}", script, flags=re.M)
    out, m = re.subn(r"^INTERFACES_PER_PAIR=16$", f"INTERFACES_PER_PAIR={links}", out, flags=re.M)
    hosts = " ".join(f'"{host_name(p)}"' for p in range(pairs))
    dpus = " ".join(f'"{dpu_name(p)}"' for p in range(pairs))
    out, h = re.subn(r"^declare -a HOST_CONTAINERS=\(.*\)$", f"declare -a HOST_CONTAINERS=({hosts})", out, flags=re.M)
    out, d = re.subn(r"^declare -a DPU_CONTAINERS=\(.*\)$", f"declare -a DPU_CONTAINERS=({dpus})", out, flags=re.M)
    if (n, m, h, d) != (1, 1, 1, 1):
        raise SystemExit(f"the spec's Step 4 script changed shape (assignments found: {n}, {m}, {h}, {d})")

    def per_pair(line: str, p: int) -> str:
        names = {
            "dpu-worker2": dpu_name(p), "dpu-worker": host_name(p), "temp-host0-0": f"temp-host{p}-0",
            "temp-rep0-0": f"temp-rep{p}-0", "HOST0_PID": f"HOST{p}_PID", "DPU0_PID": f"DPU{p}_PID",
            "host0-eth0-": f"host{p}-eth0-", "dpu0-rep0-": f"dpu{p}-rep{p}-", "rep0-": f"rep{p}-",
        }
        return _PAIR0.sub(lambda mm: names[mm.group(0)], line)

    lines, result, run = out.split("\n"), [], []

    def close_run() -> None:
        zero = [ln for ln in run if not _PAIR1.search(ln)]
        for p in range(pairs):
            result.extend(per_pair(ln, p) for ln in zero)
        run.clear()

    for line in lines:
        specific = not line.lstrip().startswith(("#", "declare ")) and (_PAIR0.search(line) or _PAIR1.search(line))
        if specific:
            run.append(line)
            continue
        if run:
            close_run()
        result.append(line)
    if run:
        close_run()
    return "\n".join(result)


DOCKER_SHIM = r"""#!/bin/bash
# dpulab bench: `docker` for unshare(1) stand-ins; nodes/<name> holds each stand-in's pid.
nodes="$(dirname "$0")/../nodes"
case "$1" in
  exec)
    node="$2"; shift 2
    exec nsenter -t "$(<"$nodes/$node")" -n -- "$@" ;;
  inspect)  # docker inspect --format '{{.State.Pid}}' NODE
    shift
    [ "$1" = "--format" ] && shift 2
    exec cat "$nodes/$1" ;;
  *)
    echo "docker (bench shim): unsupported: $*" >&2; exit 1 ;;
esac
"""
SUDO_SHIM = '#!/bin/sh\nexec "$@"\n'


# -- helpers ---------------------------------------------------------------------------------
def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(argv, **kw)


def must(argv: list[str], **kw: Any) -> subprocess.CompletedProcess:
    res = run(argv, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}...: exit {res.returncode}: {res.stderr.strip()[-300:]}")
    return res


def cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def settle(max_wait: float = 8.0, window: float = 0.2, busy_below: float = 0.35) -> float:
    """Wait until the machine is quiet (CPU busy below `busy_below` over `window`), at most
    max_wait: the kernel frees deleted namespaces in its workers after a teardown returns."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        b0, t_0 = cpu_busy()
        time.sleep(window)
        b1, t_1 = cpu_busy()
        if t_1 > t_0 and (b1 - b0) / (t_1 - t_0) < busy_below:
            break
    return time.monotonic() - t0


def links_of(pid: int | None = None, netns: str | None = None) -> list[dict]:
    argv = ["ip", "-j", "link", "show"]
    if netns:
        argv = ["ip", "-n", netns, "-j", "link", "show"]
    elif pid:
        argv = ["nsenter", "-t", str(pid), "-n", "--", *argv]
    res = run(argv)
    return json.loads(res.stdout or "[]") if res.returncode == 0 else []


def end_state(expected: dict[str, set[str]], actual: dict[str, list[dict]]) -> dict[str, Any]:
    """Per node: interfaces missing, unexpected and not UP, against what the topology wants."""
    missing = unexpected = down = 0
    examples: list[str] = []
    for node, want in expected.items():
        have = {li["ifname"]: li for li in actual.get(node, []) if li["ifname"] != "lo"}
        miss, extra = want - set(have), set(have) - want
        dn = [n for n in want & set(have) if "UP" not in have[n].get("flags", [])]
        missing, unexpected, down = missing + len(miss), unexpected + len(extra), down + len(dn)
        for what, names in (("missing", miss), ("unexpected", extra), ("down", dn)):
            if names and len(examples) < 4:
                examples.append(f"{node}: {what} {', '.join(sorted(names)[:2])}")
    return {"missing": missing, "unexpected": unexpected, "down": down, "examples": examples}


class Workspace:
    """The benchmark's temp folder and every process it started; cleaned up on any exit."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=".tmp-wiring-", dir=REPO / "bench"))
        self.procs: list[subprocess.Popen] = []
        self.netns: set[str] = set()
        self.labs: set[str] = set()

    def standin(self) -> int:
        p = subprocess.Popen(
            ["unshare", "--net", "--mount", "--uts", "sleep", "infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.procs.append(p)
        for _ in range(200):  # until sleep runs in its own namespace
            try:
                if os.readlink(f"/proc/{p.pid}/ns/net") != os.readlink("/proc/self/ns/net") and \
                        Path(f"/proc/{p.pid}/comm").read_text().strip() == "sleep":
                    return p.pid
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError("a stand-in did not start")

    def kill(self, procs: list[subprocess.Popen] | None = None) -> None:
        for p in list(procs if procs is not None else self.procs):
            if p.poll() is None:
                p.kill()
            p.wait()
            if p in self.procs:
                self.procs.remove(p)

    def cleanup(self) -> None:
        self.kill()
        for lab in list(self.labs):
            run([*DPULAB, "down", "--name", lab, "-q"])
        for ns in list(self.netns):
            run(["ip", "netns", "del", ns])
        shutil.rmtree(self.dir, ignore_errors=True)


# -- candidates -----------------------------------------------------------------------------
def spec_candidate(ws: Workspace, script: str, pairs: int, links: int, timeout: float) -> dict[str, Any]:
    d = ws.dir / f"spec-{pairs}x{links}"
    shutil.rmtree(d, ignore_errors=True)
    (d / "bin").mkdir(parents=True)
    (d / "nodes").mkdir()
    for name, text in (("docker", DOCKER_SHIM), ("sudo", SUDO_SHIM)):
        (d / "bin" / name).write_text(text)
        (d / "bin" / name).chmod(0o755)
    (d / "step4.sh").write_text(scale_script(script, pairs, links))
    started = list(ws.procs)
    try:
        kind = ws.standin()
        must(["nsenter", "-t", str(kind), "-n", "--", "ip", "-batch", "-"],
             input="link add kind type bridge\naddr add 172.18.0.1/16 dev kind\nlink set kind up\nlink set lo up\n")
        nodes = {}
        for p in range(pairs):
            for node in (host_name(p), dpu_name(p)):
                nodes[node] = ws.standin()
        kbatch = []
        for i, (node, pid) in enumerate(nodes.items()):
            (d / "nodes" / node).write_text(f"{pid}\n")
            kbatch += [f"link add n{i} type veth peer name eth0 netns {pid}", f"link set n{i} master kind up"]
        must(["nsenter", "-t", str(kind), "-n", "--", "ip", "-batch", "-"], input="\n".join(kbatch) + "\n")
        for i, (node, pid) in enumerate(nodes.items()):
            must(["nsenter", "-t", str(pid), "-n", "--", "ip", "-batch", "-"],
                 input=f"link set lo up\naddr add 172.18.{(i + 3) // 256}.{(i + 3) % 256}/16 dev eth0\n"
                       "link set eth0 up\nroute add default via 172.18.0.1\n")
        machine = ws.standin()  # the script's "root namespace"
        env = {**os.environ, "PATH": f"{d / 'bin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        settle()
        t0 = time.perf_counter()
        try:
            res = run(["nsenter", "-t", str(machine), "-n", "--", "bash", str(d / "step4.sh")], env=env, timeout=timeout)
            rc, err = res.returncode, res.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = None, (e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or "")
        elapsed = time.perf_counter() - t0
        want = {}
        for p in range(pairs):
            want[host_name(p)] = {f"eth0-{i}" for i in range(links)}
            want[dpu_name(p)] = {"eth0"} | {f"rep{p}-{i}" for i in range(links)}
        state = end_state(want, {n: links_of(pid) for n, pid in nodes.items()})
        leftovers = [li["ifname"] for li in links_of(machine) if li["ifname"] != "lo"]
        errors = [ln for ln in err.splitlines() if "RTNETLINK" in ln or "Error" in ln or "rror:" in ln]
        return {
            "time": elapsed, "rc": rc, "timeout": rc is None, "state": state,
            "root_leftovers": len(leftovers), "stderr_errors": len(errors), "first_error": errors[0] if errors else None,
        }
    finally:
        ws.kill([p for p in ws.procs if p not in started])


def dpulab_worker(pairs: int, links: int, lab: str) -> None:
    """Runs in a fresh process: prints one JSON line of timings."""
    t = {}
    t0 = time.perf_counter()
    import inspect

    from dpulab import lab as lablib
    from dpulab.engines import get_engine
    from dpulab.netlink import Sockets
    from dpulab.plan import Plan, make_plan
    from dpulab.spec import LabSpec
    from dpulab.state import LabState
    from dpulab.topology import Topology

    import pyroute2.netlink.rtnl.ifinfmsg  # noqa: F401  (the codec; `up` imports it too)

    t["import"] = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        spec = LabSpec(name=lab, pairs=pairs, vfs=links, dataplane="none")
        topo = Topology(spec)
        engine = get_engine(spec.engine, topo)
        t["spec"] = time.perf_counter() - t1
        state = LabState(lab, {"created": time.time()})  # as `up` records it (and `down` reads it)
        state.spec = spec
        state.save()
        with Sockets() as socks:
            t2 = time.perf_counter()
            statuses = {n.name: engine.node_status(n, socks) for n in topo.nodes}
            kw = {"keep": set()} if "keep" in inspect.signature(engine.node_actions).parameters else {}
            Plan(engine.node_actions(socks, statuses, **kw)).apply(socks)
            t3 = time.perf_counter()
            plan = make_plan(topo, engine, socks)
            t4 = time.perf_counter()
            plan.apply(socks)
            t5 = time.perf_counter()
        t.update(nodes=t3 - t2, plan=t4 - t3, apply=t5 - t4, wiring=t5 - t3, actions=len(plan.actions))
        with Sockets() as socks:
            again = make_plan(topo, engine, socks)
        t["converged"] = not again.actions
    finally:
        t6 = time.perf_counter()
        lablib.down(lab)
        t["teardown"] = time.perf_counter() - t6
    print(json.dumps(t))


def dpulab_candidate(ws: Workspace, pairs: int, links: int) -> dict[str, Any]:
    lab = f"bench-{PID % 100000}"
    ws.labs.add(lab)
    settle()
    res = run([sys.executable, __file__, "--_worker", str(pairs), str(links), lab])
    if res.returncode != 0:
        raise RuntimeError(f"dpulab worker failed: {res.stderr.strip()[-500:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # the whole commands, for reference
    settle()
    t0 = time.perf_counter()
    up = run([*DPULAB, "up", "--name", lab, "--pairs", str(pairs), "--vfs", str(links), "--dataplane", "none", "-q"])
    out["cli_up"] = time.perf_counter() - t0
    if up.returncode != 0:
        out["cli_up_error"] = up.stderr.strip()[-300:]
    settle()
    t0 = time.perf_counter()
    run([*DPULAB, "down", "--name", lab, "-q"])
    out["cli_down"] = time.perf_counter() - t0
    ws.labs.discard(lab)
    return out


def floor_candidate(ws: Workspace, pairs: int, links: int) -> dict[str, Any]:
    base = f"bench-f{PID % 100000}"
    hosts = [f"{base}-worker" if p == 0 else f"{base}-worker{2 * p + 1}" for p in range(pairs)]
    dpus = [f"{base}-worker{2 * p + 2}" for p in range(pairs)]
    d = ws.dir / f"floor-{pairs}x{links}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "netns-add").write_text("".join(f"netns add {ns}\n" for ns in hosts + dpus))
    (d / "netns-del").write_text("".join(f"netns del {ns}\n" for ns in hosts + dpus))
    (d / "create").write_text(
        "".join(
            f"link add eth0-{i} netns {hosts[p]} type veth peer name rep{p}-{i} netns {dpus[p]}\n"
            for p in range(pairs) for i in range(links)
        )
    )
    for p in range(pairs):
        (d / f"up-{hosts[p]}").write_text("".join(f"link set eth0-{i} up\n" for i in range(links)))
        (d / f"up-{dpus[p]}").write_text("".join(f"link set rep{p}-{i} up\n" for i in range(links)))
    ws.netns.update(hosts + dpus)
    try:
        settle()
        t0 = time.perf_counter()
        must(["ip", "-batch", str(d / "netns-add")])
        t1 = time.perf_counter()
        must(["ip", "-batch", str(d / "create")])
        for ns in hosts + dpus:
            must(["ip", "-n", ns, "-batch", str(d / f"up-{ns}")])
        t2 = time.perf_counter()
        want = {}
        for p in range(pairs):
            want[hosts[p]] = {f"eth0-{i}" for i in range(links)}
            want[dpus[p]] = {f"rep{p}-{i}" for i in range(links)}
        state = end_state(want, {ns: links_of(netns=ns) for ns in hosts + dpus})
        settle()
        t3 = time.perf_counter()
        must(["ip", "-batch", str(d / "netns-del")])
        t4 = time.perf_counter()
        ws.netns.difference_update(hosts + dpus)
        return {"nodes": t1 - t0, "wiring": t2 - t1, "teardown": t4 - t3, "state": state}
    except BaseException:
        for ns in hosts + dpus:
            run(["ip", "netns", "del", ns])
        ws.netns.difference_update(hosts + dpus)
        raise


def dataplane_available() -> tuple[bool, str]:
    res = run([*DPULAB, "up", "--help"])
    if "--dataplane" not in res.stdout or "ovn" not in res.stdout:
        return False, "this dpulab has no `up --dataplane ovn`"
    missing = [b for b in ("ovsdb-server", "ovs-vswitchd", "ovn-controller", "ovn-northd") if not shutil.which(b)]
    if missing:
        return False, f"not installed: {', '.join(missing)}"
    return True, ""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def dataplane_candidate(ws: Workspace, pairs: int, links: int) -> dict[str, Any]:
    lab = f"bench-d{PID % 100000}"
    ws.labs.add(lab)
    out: dict[str, Any] = {}
    try:
        # one command, as a user writes it: the lab file declares one pod per host
        labfile = ws.dir / f"{lab}.yaml"
        labfile.write_text(
            f"name: {lab}\npairs: {pairs}\nvfs: {links}\ndataplane: ovn\npods:\n"
            + "".join(f"  - {{name: p{p}, host: {p}}}\n" for p in range(pairs))
        )
        settle()
        t0 = time.perf_counter()
        up = run([*DPULAB, "up", "-f", str(labfile), "-q"])
        out["up"] = time.perf_counter() - t0
        if up.returncode != 0:
            return {**out, "error": f"up: {up.stderr.strip()[-300:]}"}
        listed = run([*DPULAB, "pod", "list", "--name", lab, "--json"])
        pods = sorted(json.loads(listed.stdout), key=lambda r: r["name"])
        src, dst = pods[0], pods[-1]
        deadline = time.monotonic() + 30
        ok = False
        t_list = time.perf_counter()
        while time.monotonic() < deadline:  # ping's own 0.2 s wait: a dropped first probe costs little
            if run(["ip", "netns", "exec", src["netns"], "ping", "-c1", "-W0.2", dst["ip"]]).returncode == 0:
                ok = True
                break
        # `pod list` above is bookkeeping, not bring-up: leave its time out
        out["first_ping"] = time.perf_counter() - t0 - (t_list - t0 - out["up"]) if ok else None
        sys.path.insert(0, str(REPO / "src"))
        from dpulab.dataplane import Dataplane
        from dpulab.engines import get_engine
        from dpulab.state import LabState
        from dpulab.topology import Topology

        state = LabState.require(lab)
        topo = Topology(state.spec)
        dp = Dataplane(topo, get_engine(state.spec.engine, topo))
        per_dpu = {}
        for dpu in topo.dpus:
            pids = [d.pid() for d in dp.dpu_daemons(dpu)]
            per_dpu[dpu.name] = sum(rss_kib(p) for p in pids if p)
        out["rss_kib_per_dpu"] = per_dpu
        return out
    finally:
        run([*DPULAB, "down", "--name", lab, "-q"])
        ws.labs.discard(lab)


# -- the report ------------------------------------------------------------------------------
def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, unit: str = "s") -> str:
    if v is None:
        return "-"
    if unit == "x":
        return f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def report(results: dict[str, Any]) -> str:
    lines = []
    hdr = (
        f"{'size':>7} {'links':>5} | {'spec script':>11} {'spec status':<44} | {'dpulab':>7} {'(plan':>6} {'apply)':>7} "
        f"{'nodes':>6} {'down':>6} {'cli up':>7} {'cli dn':>6} | {'floor':>6} {'nodes':>6} {'down':>6} | "
        f"{'spec/dpulab':>11} {'dpulab/floor':>12}"
    )
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for key, r in results["sizes"].items():
        pairs, links = map(int, key.split("x"))
        sp, dl, fl = r["spec"], r["dpulab"], r["floor"]
        if r.get("spec_skipped"):
            st = r["spec_skipped"]
            spec_t = None
        else:
            spec_t = med([x["time"] for x in sp])
            first = sp[0] if sp else {}
            rc = [x["rc"] for x in sp]
            s = first.get("state", {})
            bits = []
            bits.append("TIMEOUT" if any(x is None for x in rc) else "exit " + ",".join(sorted({str(c) for c in rc})))
            if s:
                bits.append(f"{s['missing']} missing, {s['unexpected']} extra, {s['down']} down")
            st = "; ".join(bits)
        dw = med([x["wiring"] for x in dl])
        fw = med([x["wiring"] for x in fl])
        lines.append(
            f"{key:>7} {pairs * links:>5} | {fmt(spec_t):>11} {st[:44]:<44} | {fmt(dw):>7} {fmt(med([x['plan'] for x in dl])):>6} "
            f"{fmt(med([x['apply'] for x in dl])):>7} {fmt(med([x['nodes'] for x in dl])):>6} "
            f"{fmt(med([x['teardown'] for x in dl])):>6} {fmt(med([x['cli_up'] for x in dl])):>7} "
            f"{fmt(med([x['cli_down'] for x in dl])):>6} | {fmt(fw):>6} {fmt(med([x['nodes'] for x in fl])):>6} "
            f"{fmt(med([x['teardown'] for x in fl])):>6} | "
            f"{fmt(spec_t / dw if spec_t and dw else None, 'x'):>11} {fmt(dw / fw if dw and fw else None, 'x'):>12}"
        )
    lines.append("")
    lines.append("seconds, medians of %d repetition(s); dpulab = plan + apply of the links (nodes: namespaces and cluster "
                 "network, before it); down = teardown until it returns; cli up/dn = whole `dpulab up --dataplane none` / "
                 "`dpulab down` processes" % results["reps"])
    for key, r in results["sizes"].items():
        for x in r["spec"][:1]:
            ex = x.get("state", {}).get("examples") or []
            extra = f"; first error: {x['first_error']}" if x.get("first_error") else ""
            if ex or extra:
                lines.append(f"spec script {key}: {'; '.join(ex)}{extra}")
        conv = {x.get("converged") for x in r["dpulab"]}
        if conv != {True}:
            lines.append(f"dpulab {key}: a second plan was NOT empty")
        for x in r["floor"][:1]:
            s = x["state"]
            if s["missing"] or s["unexpected"] or s["down"]:
                lines.append(f"floor {key}: {s}")
    dp = results.get("dataplane")
    if isinstance(dp, str):
        lines.append(f"data plane: {dp}")
    elif dp:
        runs = dp["runs"]
        errors = [r["error"] for r in runs if "error" in r]
        rss = [v for r in runs for v in r.get("rss_kib_per_dpu", {}).values()]
        lines.append(
            f"data plane ({dp['size']}, {dp['pods_per_run']} pods in the lab file): "
            f"`dpulab up -f` {fmt(med([r.get('up') for r in runs]))} s, "
            f"to first cross-host pod ping {fmt(med([r.get('first_ping') for r in runs]))} s; "
            f"RSS per DPU (ovsdb-server + ovs-vswitchd + ovn-controller) "
            + (f"{statistics.median(rss) / 1024:.1f} MiB (max {max(rss) / 1024:.1f})" if rss else "-")
            + (f"; errors: {errors[0]}" if errors else "")
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 repetition, sizes 2x16 and 2x64")
    ap.add_argument("--reps", type=int, default=None, help="repetitions per size (default 3; --quick: 1)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--sizes", default=None, help="e.g. 2x16,8x64 (default: 2x16,2x64,8x64,16x128)")
    ap.add_argument("--spec-cap", type=float, default=60.0, help="skip the spec script where one rep would take longer (s)")
    ap.add_argument("--no-spec", action="store_true", help="leave the spec script out")
    ap.add_argument("--no-dataplane", action="store_true", help="leave the data plane figures out")
    ap.add_argument("--_worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._worker:
        pairs, links, lab = args._worker
        dpulab_worker(int(pairs), int(links), lab)
        return
    if os.geteuid() != 0:
        raise SystemExit("bench/wiring.py needs root (network namespaces)")
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.sizes:
        sizes = [tuple(map(int, s.lower().split("x"))) for s in args.sizes.split(",")]
    reps = args.reps or (1 if args.quick else 3)
    script = None if args.no_spec else extract_step4(SPEC_MD.read_text())
    if script is not None and scale_script(script, 2, 16) != script:
        raise SystemExit("scaling the spec's Step 4 script to 2 x 16 does not give back the spec's text")

    ws = Workspace()

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    results: dict[str, Any] = {
        "reps": reps, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
        "spec_md": str(SPEC_MD), "substitutions": SUBSTITUTIONS, "sizes": {},
    }
    per_link: list[float] = []  # spec script seconds per link, from the sizes measured so far
    try:
        for pairs, links in sizes:
            results["sizes"][f"{pairs}x{links}"] = {"spec": [], "dpulab": [], "floor": []}
        for rep in range(reps):
            for pairs, links in sizes:
                key = f"{pairs}x{links}"
                r = results["sizes"][key]
                cands: list[tuple[str, Callable[[], dict]]] = [
                    ("dpulab", lambda: dpulab_candidate(ws, pairs, links)),
                    ("floor", lambda: floor_candidate(ws, pairs, links)),
                ]
                if script is not None:
                    estimate = max(per_link) * pairs * links if per_link else None
                    if r.get("spec_skipped"):
                        pass
                    elif estimate and estimate > args.spec_cap:
                        r["spec_skipped"] = f"skipped: ~{estimate:.0f} s/rep > {args.spec_cap:.0f} s"
                    else:
                        cands.insert(0, ("spec", lambda: spec_candidate(ws, script, pairs, links, max(args.spec_cap * 1.5, 30))))
                k = rep % len(cands)
                for name, fn in cands[k:] + cands[:k]:
                    res = fn()
                    r[name].append(res)
                    if name == "spec" and res["time"]:
                        per_link.append(res["time"] / (pairs * links))
                    print(f"  rep {rep + 1}/{reps} {key:>7} {name:<7} "
                          + (f"{res['time']:.3f} s (exit {res['rc']})" if name == "spec" else f"wiring {res['wiring']:.3f} s"),
                          file=sys.stderr, flush=True)
        if args.no_dataplane:
            results["dataplane"] = "not measured (--no-dataplane)"
        else:
            ok, why = dataplane_available()
            if not ok:
                results["dataplane"] = f"n/a (dataplane not available: {why})"
            else:
                pairs, links = min(sizes, key=lambda s: s[0] * s[1])
                runs = []
                for rep in range(reps):
                    runs.append(dataplane_candidate(ws, pairs, links))
                    print(f"  rep {rep + 1}/{reps} data plane {runs[-1]}", file=sys.stderr, flush=True)
                results["dataplane"] = {"size": f"{pairs}x{links}", "pods_per_run": pairs, "runs": runs}
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}); cleaning up", file=sys.stderr)
        ws.cleanup()
        sys.exit(130)
    finally:
        ws.cleanup()
    table = report(results)
    results["table"] = table
    print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
