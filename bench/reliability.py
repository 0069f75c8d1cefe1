#!/usr/bin/env python3
"""Reliability harness (issue #7): kill `dpulab` at random points, recover, count leftovers.

    sudo .venv/bin/python bench/reliability.py            # the full set, ~10 minutes
    sudo .venv/bin/python bench/reliability.py --quick    # a smoke run, ~2 minutes

What it does, each on labs of its own (names `rel...`):

- wiring: `up` of 16 pairs x 32 links (no data plane) killed with SIGINT or SIGKILL at a
  random point: after the k-th namespace appears, or a random time into the cluster
  network, veth creation, marking or addressing phase (read from `up -v`);
- data plane: `up --dataplane ovn` (2 pairs x 8) killed while the daemons start (after the
  k-th pidfile appears) or while OVN is configured;
- pod add: `pod add` killed a random time into it, on a running data plane;

then either `up` again with the same flags (must converge: `verify` passes, with
`--traffic` where there is a data plane, and a second `plan` is empty) or `down`; every
run ends with `down` and counts what is left of the lab: namespaces (and mounts), interfaces
in the machine's own namespace, processes, run-directory files. All must be 0.

- fuzz: the CLI driven in-process with hypothesis-made flags and lab files (nothing is
  brought up): every input works or is refused in one line, exit non-zero, no traceback;
- concurrency: two labs up, a pod per host, `verify --traffic`, down, at the same time;
  and two commands on one lab: the second is refused naming the first.

Prints a table of what was tried and what held and writes JSON (--json). Exit status 1 if
anything did not hold.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))
DPULAB = [sys.executable, "-m", "dpulab"]
RUN, NETNS = Path("/run/dpulab"), Path("/run/netns")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


# -- running dpulab ---------------------------------------------------------------------------
def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*DPULAB, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO)


class Proc:
    """A dpulab command whose stderr lines are timestamped as they come."""

    def __init__(self, *args: str) -> None:
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([*DPULAB, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.lines.append((time.monotonic() - self.t0, line.rstrip()))

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def phases_done(self) -> list[str]:
        return [m.group(1) for _, line in list(self.lines) if (m := re.match(r"\s+([a-z ]+): \d+ action", line))]

    def wait_phase(self, phase: str, timeout: float = 120) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if phase in self.phases_done():
                return True
            if self.p.poll() is not None:
                self._reader.join(1)
                return phase in self.phases_done()
            time.sleep(0.001)
        return False

    def kill(self, sig: int) -> None:
        try:
            self.p.send_signal(sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = 300) -> int:
        rc = self.p.wait(timeout)
        self._reader.join(5)
        return rc


def wait_until(pred, timeout: float, poll: float = 0.0005) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(poll)
    return False


# -- what is left of a lab ----------------------------------------------------------------------
def lab_namespaces(lab: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS) if n.startswith(lab + "-"))
    except FileNotFoundError:
        return []


def lab_macs(lab: str, pairs: int, vfs: int) -> set[str]:
    from dpulab.spec import load_spec
    from dpulab.topology import Topology, mac_for

    topo = Topology(load_spec(None, {"name": lab, "pairs": pairs, "vfs": vfs, "dataplane": "none"}))
    macs = {mac_for(n.name, "cluster", 0) for n in topo.nodes}
    for link in topo.all_links:
        macs |= {link.host_mac, link.rep_mac}
    return macs


def leftovers(lab: str, macs: set[str]) -> dict[str, int | list[str]]:
    """Everything of the lab still there: the count for each kind, and names for the report."""
    names = lab_namespaces(lab)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if f"/run/netns/{lab}-" in line]
    root_ifaces = []
    for ifname in os.listdir("/sys/class/net"):
        try:
            alias = Path(f"/sys/class/net/{ifname}/ifalias").read_text().strip()
            mac = Path(f"/sys/class/net/{ifname}/address").read_text().strip()
        except OSError:
            continue
        if alias.startswith(f"dpulab:{lab}:") or mac in macs:
            root_ifaces.append(ifname)
    procs = []
    needles = (f"/run/dpulab/{lab}/".encode(), f"/run/netns/{lab}-".encode())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if any(n in cmd for n in needles) and not stat.rsplit(") ", 1)[-1].startswith("Z"):
            exe = cmd.split(b"\0")[0].decode(errors="replace")
            procs.append(f"{pid}:{exe}")
    d = RUN / lab
    files = [str(p.relative_to(RUN)) for p in d.rglob("*")] + [lab] if d.exists() else []
    found = {"namespaces": names + [m for m in mounts if Path(m).name not in names], "root_interfaces": root_ifaces, "processes": procs, "run_files": files}
    return {**{k: len(v) for k, v in found.items()}, "names": [x for v in found.values() for x in v][:8]}


def verify_ok(lab: str, traffic: bool) -> tuple[bool, list[str]]:
    res = cli("verify", "--name", lab, "--json", *(["--traffic"] if traffic else []))
    try:
        report = json.loads(res.stdout)
    except ValueError:
        return False, [res.stderr.strip()[-200:]]
    bad = [f"{c['check']} {c['node']}: {c['detail']}" for c in report["checks"] if not c["ok"]]
    return report["ok"], bad[:3]


# -- one killed run -----------------------------------------------------------------------------
@dataclass
class Run:
    scenario: str
    lab: str
    signal: str
    target: str  # where the kill was aimed
    observed: str = ""  # the phase the process was in, from its own progress lines
    exit_code: int | None = None
    recovery: str = ""  # up | down
    converged: bool | None = None
    converged_first_time: bool | None = None  # before a re-check 3 s later (probes on a busy machine)
    idempotent: bool | None = None
    failed_checks: list[str] = field(default_factory=list)
    leftovers: dict = field(default_factory=dict)
    error: str = ""
    last_words: str = ""  # what the killed command said on stderr besides progress lines
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        left = sum(v for k, v in self.leftovers.items() if k != "names")
        return not self.error and left == 0 and self.converged is not False and self.idempotent is not False and "Traceback" not in self.last_words


def last_words(proc: "Proc") -> str:
    return "\n".join(line for _, line in proc.lines if not re.match(r"\s+[a-z ]+: \d+ action|\s+plan \d+ ms", line))


WIRING_PHASES = ["create node", "cluster network", "delete link", "create link", "set link", "address"]


def observed_phase(proc: Proc, dataplane: bool, made_ns: int) -> str:
    """Where the process was when it died, from its own progress lines (each printed when a
    phase ends) and whether it had made any namespace yet."""
    done = proc.phases_done()
    order = [p for p in WIRING_PHASES if p in done]
    if "data plane" in done:
        return "done"
    if not done:
        return "namespaces" if made_ns else "before any namespace"
    if order and order[-1] == "address":
        return "data plane" if dataplane else "done"
    nxt = {"create node": "cluster network", "cluster network": "veths", "delete link": "veths", "create link": "marks", "set link": "addresses"}
    return nxt.get(order[-1], order[-1]) if order else "namespaces"


def recover(run: Run, flags: list[str], traffic: bool, how: str) -> None:
    run.recovery = how
    if how == "up":
        res = cli("up", "--name", run.lab, *flags)
        if res.returncode != 0:
            run.converged = False
            run.failed_checks = [f"up: {res.stderr.strip()[-300:]}"]
            return
        run.converged, run.failed_checks = verify_ok(run.lab, traffic)
        run.converged_first_time = run.converged
        if not run.converged:  # a check that fails twice, 3 s apart, is not a slow probe
            time.sleep(3)
            run.converged, again = verify_ok(run.lab, traffic)
            run.failed_checks = (run.failed_checks + ["re-check: " + "; ".join(again)]) if again else run.failed_checks + ["passed on re-check"]
        if run.converged:
            again = cli("plan", "--name", run.lab, "--json")
            run.idempotent = again.returncode == 0 and json.loads(again.stdout or "[]") == []
            if not run.idempotent:
                run.failed_checks = [f"plan after up not empty: {again.stdout.strip()[:200]}"]


def finish(run: Run, macs: set[str], t0: float) -> Run:
    res = cli("down", "--name", run.lab)
    if res.returncode != 0 and not run.error:
        run.error = f"down: {res.stderr.strip()[-200:]}"
    time.sleep(0.2)  # the kernel frees a namespace's interfaces asynchronously
    run.leftovers = leftovers(run.lab, macs)
    if any(v for k, v in run.leftovers.items() if k != "names"):
        time.sleep(2)
        run.leftovers = leftovers(run.lab, macs)
    run.seconds = round(time.monotonic() - t0, 1)
    return run


def calibrate(lab: str, flags: list[str]) -> dict[str, float]:
    """Phase durations of one undisturbed `up -v` (seconds, from its progress lines)."""
    proc = Proc("up", "--name", lab, *flags, "-v")
    proc.wait()
    times, prev = {}, None
    for t, line in proc.lines:
        m = re.match(r"\s+([a-z ]+): \d+ action", line)
        if m:
            times[m.group(1)] = t - (prev if prev is not None else t)
            prev = t
    cli("down", "--name", lab)
    return times


def wiring_run(i: int, rng: random.Random, pairs: int, vfs: int, durations: dict[str, float], macs_of) -> Run:
    lab = f"relw{i}{uuid.uuid4().hex[:4]}"
    flags = ["--pairs", str(pairs), "--vfs", str(vfs), "--dataplane", "none"]
    sig = [signal.SIGKILL, signal.SIGINT][(i // 2) % 2]  # both signals with both recoveries
    target = ["namespaces", "cluster network", "veths", "marks", "addresses"][i % 5]
    run = Run("wiring", lab, sig.name, target)
    t0 = time.monotonic()
    proc = Proc("up", "--name", lab, *flags, "-v")
    n_ns = 2 * pairs + 2
    if target == "namespaces":
        k = rng.randint(1, n_ns - 1)
        run.target = f"namespaces (after {k}/{n_ns})"
        wait_until(lambda: len(lab_namespaces(lab)) >= k or proc.p.poll() is not None, 60)
    else:
        after = {"cluster network": "create node", "veths": "cluster network", "marks": "create link", "addresses": "set link"}[target]
        length = durations.get({"cluster network": "cluster network", "veths": "create link", "marks": "set link", "addresses": "address"}[target], 0.05)
        proc.wait_phase(after)
        time.sleep(rng.uniform(0, length))
    proc.kill(sig)
    made = len(lab_namespaces(lab))
    run.exit_code = proc.wait()
    run.last_words = last_words(proc)
    run.observed = observed_phase(proc, False, made)
    recover(run, flags, False, "up" if i % 2 == 0 else "down")
    return finish(run, macs_of(lab), t0)


def ovn_run(i: int, rng: random.Random, n_daemons: int, dp_time: float, macs_of) -> Run:
    lab = f"relo{i}{uuid.uuid4().hex[:4]}"
    flags = ["--pairs", "2", "--vfs", "8", "--dataplane", "ovn"]
    sig = [signal.SIGKILL, signal.SIGINT][(i // 2) % 2]  # both signals with both recoveries
    run = Run("data plane", lab, sig.name, "")
    t0 = time.monotonic()
    proc = Proc("up", "--name", lab, *flags, "-v")
    if i % 3 != 2:
        k = rng.randint(0, n_daemons - 1)
        run.target = f"daemon start (after {k}/{n_daemons} pidfiles)"
        proc.wait_phase("address")
        wait_until(lambda: len(list((RUN / lab).rglob("*.pid"))) >= k or proc.p.poll() is not None, 60, 0.002)
    else:
        run.target = "ovn configuration"
        proc.wait_phase("address")
        wait_until(lambda: len(list((RUN / lab).rglob("*.pid"))) >= n_daemons or proc.p.poll() is not None, 60, 0.002)
        time.sleep(rng.uniform(0, max(dp_time * 0.5, 0.05)))
    proc.kill(sig)
    run.exit_code = proc.wait()
    run.last_words = last_words(proc)
    pidfiles = len(list((RUN / lab).rglob("*.pid"))) if (RUN / lab).exists() else 0
    run.observed = observed_phase(proc, True, 1) + f" ({pidfiles} pidfiles)"
    recover(run, flags, True, "up" if i % 2 == 0 else "down")
    return finish(run, macs_of(lab, 2, 8), t0)


def pod_run(i: int, rng: random.Random, macs_of) -> Run:
    lab = f"relp{i}{uuid.uuid4().hex[:4]}"
    flags = ["--pairs", "2", "--vfs", "4", "--dataplane", "ovn"]
    sig = [signal.SIGKILL, signal.SIGINT][(i // 2) % 2]  # both signals with both recoveries
    run = Run("pod add", lab, sig.name, "")
    t0 = time.monotonic()
    res = cli("up", "--name", lab, *flags)
    t1 = time.monotonic()
    peer = cli("pod", "add", f"{lab}-worker3", "peer", "--name", lab) if res.returncode == 0 else res
    pod_time = time.monotonic() - t1  # an undisturbed pod add on this lab, to aim within
    if res.returncode != 0 or peer.returncode != 0:
        run.error = f"setup: {(res.stderr or peer.stderr).strip()[-200:]}"
        return finish(run, macs_of(lab, 2, 4), t0)
    proc = Proc("pod", "add", f"{lab}-worker", "victim", "--name", lab)
    state_file = RUN / lab / "state.json"
    if i % 3 == 0:  # anywhere, start-up included
        delay = rng.uniform(0.1, pod_time)
        run.target = f"pod add +{delay:.2f}s of ~{pod_time:.2f}s"
        time.sleep(delay)
    else:  # once its intent is recorded: in the plumbing
        wait_until(lambda: '"victim"' in state_file.read_text() or proc.p.poll() is not None, 30, 0.001)
        delay = rng.uniform(0, pod_time / 2)
        run.target = f"pod add, {delay:.2f}s after its record"
        time.sleep(delay)
    proc.kill(sig)
    run.exit_code = proc.wait()
    run.last_words = last_words(proc)
    state = json.loads((RUN / lab / "state.json").read_text()) if (RUN / lab / "state.json").exists() else {}
    rec = state.get("pods", {}).get("victim")
    gone = "rolled back" if i % 3 != 0 else "not started or rolled back"  # (the record was seen before the kill, or not)
    run.observed = "done" if rec and rec.get("connection_status") else ("half-made" if rec else gone)
    recover(run, flags, True, "up" if i % 2 == 0 else "down")
    return finish(run, macs_of(lab, 2, 4), t0)


# -- concurrency ----------------------------------------------------------------------------------
def concurrent_labs(n: int) -> dict:
    """n labs at once: up with OVN, a pod per host, verify --traffic, down."""
    labs = [f"relc{k}{uuid.uuid4().hex[:4]}" for k in range(n)]
    results: dict[str, dict] = {}

    def flow(lab: str) -> None:
        steps = [
            ("up", ["up", "--name", lab, "--pairs", "2", "--vfs", "4", "--dataplane", "ovn"]),
            ("pod 1", ["pod", "add", f"{lab}-worker", "a", "--name", lab]),
            ("pod 2", ["pod", "add", f"{lab}-worker3", "b", "--name", lab]),
        ]
        r: dict = {"lab": lab, "steps": {}}
        for what, argv in steps:
            res = cli(*argv)
            r["steps"][what] = res.returncode == 0 or res.stderr.strip()[-200:]
        ok, bad = verify_ok(lab, True)
        r["steps"]["verify --traffic"] = ok or bad
        r["steps"]["down"] = cli("down", "--name", lab).returncode == 0
        time.sleep(0.2)
        r["leftovers"] = leftovers(lab, lab_macs(lab, 2, 4))
        results[lab] = r

    threads = [threading.Thread(target=flow, args=(lab,)) for lab in labs]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = all(v is True for r in results.values() for v in r["steps"].values()) and all(
        sum(v for k, v in r["leftovers"].items() if k != "names") == 0 for r in results.values()
    )
    return {"labs": n, "ok": ok, "seconds": round(time.monotonic() - t0, 1), "results": list(results.values())}


def same_lab_serialised() -> dict:
    """`up` running, `down` on the same lab: refused, naming `dpulab up` and its pid."""
    lab = f"rels{uuid.uuid4().hex[:5]}"
    proc = Proc("up", "--name", lab, "--pairs", "8", "--vfs", "64", "--dataplane", "none")
    lock = RUN / lab / "lock"
    held = wait_until(lambda: lock.exists() and lock.read_text().startswith("`dpulab up`"), 30, 0.0005)
    proc.kill(signal.SIGSTOP)  # held still wherever it is, so the second command surely meets it
    try:
        second = cli("down", "--name", lab)
    finally:
        proc.kill(signal.SIGCONT)
    proc.wait()
    want = f"`dpulab up` (pid {proc.p.pid}) holds its lock"
    ok = held and second.returncode != 0 and want in second.stderr and len(second.stderr.strip().splitlines()) == 1
    cli("down", "--name", lab)
    return {"ok": ok, "second": second.stderr.strip(), "expected": want}


# -- fuzz ------------------------------------------------------------------------------------------
def fuzz(examples: int) -> dict:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.test_hostile import LAB_FILE, argvs, check_outcome, run_inprocess

    outcomes: Counter = Counter()
    failures: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def prop(data):
        argv = data.draw(argvs(LAB_FILE))
        rc, out, err = run_inprocess(argv)
        try:
            outcomes[check_outcome(argv, rc, out, err)] += 1
        except AssertionError as e:
            outcomes["broken"] += 1
            failures.append(str(e)[:300])

    prop()
    return {"cases": sum(outcomes.values()), "accepted": outcomes["accepted"], "refused in one line": outcomes["refused"],
            "tracebacks or bad errors": outcomes["broken"], "failures": failures[:5], "ok": outcomes["broken"] == 0}


# -- report ----------------------------------------------------------------------------------------
def by_scenario(runs: list[Run]) -> dict[str, tuple[list[Run], list[Run], Counter, int, int]]:
    """Per scenario: its runs, those recovered by `up`, leftovers summed after `down`, how many
    recovered runs passed verify (and stayed put), how many passed at the first check."""
    out = {}
    for scen in dict.fromkeys(r.scenario for r in runs):
        rs = [r for r in runs if r.scenario == scen]
        ups = [r for r in rs if r.recovery == "up"]
        left: Counter = Counter()
        for r in rs:
            left.update({k: v for k, v in r.leftovers.items() if k != "names"})
        passed = sum(1 for r in ups if r.converged and r.idempotent is not False)
        out[scen] = (rs, ups, left, passed, sum(1 for r in ups if r.converged_first_time))
    return out


def report(runs: list[Run], extra: dict, path: Path) -> bool:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    t = Table(title="dpulab reliability: killed at random points, then recovered", title_justify="left")
    for col in ("scenario", "runs", "signals", "kill points (observed)", "killed command's stderr", "recovery", "verify after up", "leftovers after down", "held"):
        t.add_column(col)
    for scen, (rs, ups, left, passed, _first) in by_scenario(runs).items():
        sigs = Counter(r.signal for r in rs)
        points = Counter(r.observed.split(" (")[0] for r in rs)
        t.add_row(
            scen, str(len(rs)), ", ".join(f"{k} {v}" for k, v in sorted(sigs.items())),
            ", ".join(f"{k} {v}" for k, v in points.most_common()),
            f"no traceback {sum('Traceback' not in r.last_words for r in rs)}/{len(rs)}",
            f"up {len(ups)}, down {len(rs) - len(ups)}",
            f"{passed}/{len(ups)} pass"
            + (f" ({sum(1 for r in ups if r.converged_first_time)} first time)" if any(r.converged and not r.converged_first_time for r in ups) else ""),
            " ".join(f"{k.replace('_', ' ')} {left[k]}" for k in ("namespaces", "root_interfaces", "processes", "run_files")),
            "[green]yes[/]" if all(r.ok for r in rs) else f"[red]{sum(not r.ok for r in rs)} failed[/]",
        )
    con.print(t)
    t2 = Table(title="hostile input and concurrency", title_justify="left")
    for col in ("what", "tried", "held"):
        t2.add_column(col)
    if "fuzz" in extra:
        f = extra["fuzz"]
        t2.add_row("fuzz: CLI flags and lab files (hypothesis)", f"{f['cases']} cases: {f['accepted']} accepted, {f['refused in one line']} refused in one line",
                   "[green]yes[/]" if f["ok"] else f"[red]{f['tracebacks or bad errors']} broken[/]")
    if "concurrent" in extra:
        c = extra["concurrent"]
        t2.add_row("labs at once: up, pod per host, verify --traffic, down", f"{c['labs']} labs, {c['seconds']} s", "[green]yes[/]" if c["ok"] else "[red]no[/]")
    if "lock" in extra:
        lk = extra["lock"]
        t2.add_row("same lab: `down` while `up` runs", lk["second"][:90], "[green]yes[/]" if lk["ok"] else "[red]no[/]")
    con.print(t2)
    bad = [r for r in runs if not r.ok]
    for r in bad[:10]:
        con.print(f"[red]FAILED[/] {r.scenario} {r.lab} {r.signal} at {r.target} / {r.observed}: "
                  f"{r.error or r.failed_checks} leftovers={r.leftovers}", markup=True, highlight=False)
    ok = not bad and all(v.get("ok", True) for v in extra.values() if isinstance(v, dict))
    path.write_text(json.dumps({"ok": ok, "runs": [asdict(r) | {"ok": r.ok} for r in runs], **extra}, indent=1))
    con.print(f"{len(runs)} killed runs, seed {extra.get('seed')}, {extra.get('seconds')} s; JSON: {path}")
    return ok


def markdown(runs: list[Run], extra: dict) -> str:
    """The figures as the markdown section bench/RELIABILITY.md carries."""
    import platform

    out = [f"Last run: {os.cpu_count()} cores, {platform.system()} {platform.release()}, other work on the machine meanwhile; "
           f"seed {extra.get('seed')}, {extra.get('seconds')} s in all.", "",
           "| scenario | runs | killed with | kill points (where the process was) | recovered by | `verify` after `up` | left after `down` |",
           "|---|---|---|---|---|---|---|"]
    size = extra.get("size", {})
    label = {"wiring": f"`up`, {size.get('pairs')} pairs x {size.get('vfs')} links", "data plane": "`up --dataplane ovn`, 2 x 8", "pod add": "`pod add` (OVN, 2 x 4)"}
    for scen, (rs, ups, left, passed, first) in by_scenario(runs).items():
        out.append(
            f"| {label.get(scen, scen)} | {len(rs)} | " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(r.signal for r in rs).items()))
            + " | " + ", ".join(f"{k} {v}" for k, v in Counter(_point(r) for r in rs).most_common())
            + f" | `up` {len(ups)}, `down` {len(rs) - len(ups)}"
            + f" | {passed}/{len(ups)}" + (f" ({first} at the first check)" if first != len(ups) else "")
            + " | " + ", ".join(f"{left[k]} {k.replace('_', ' ')}" for k in ("namespaces", "root_interfaces", "processes", "run_files")) + " |"
        )
    out += ["", "| hostile input and concurrency | tried | held |", "|---|---|---|"]
    if "fuzz" in extra:
        f = extra["fuzz"]
        out.append(f"| CLI flags and lab files, hypothesis, in-process | {f['cases']} cases: {f['accepted']} accepted, {f['refused in one line']} refused in one line | {'yes' if f['ok'] else 'no'} |")
    if "concurrent" in extra:
        c = extra["concurrent"]
        out.append(f"| labs at once: up (OVN), a pod per host, `verify --traffic`, down | {c['labs']} labs, {c['seconds']} s | {'yes' if c['ok'] else 'no'} |")
    if "lock" in extra:
        lk = extra["lock"]
        out.append(f"| `down` while `up` runs on the same lab | {lk['second'].replace('|', '/').removeprefix('dpulab: error: ')} | {'yes' if lk['ok'] else 'no'} |")
    return "\n".join(out) + "\n"


def _point(r: Run) -> str:
    """Where the kill landed, in a word: the phase the process reported, or for the data plane
    what it was starting (or that it had finished before the signal came)."""
    if r.observed.startswith("done"):
        return "finished first"
    if r.scenario == "data plane":
        return r.target.split(" (")[0].replace("ovn", "OVN")
    return r.observed.split(" (")[0]


def write_markdown(path: Path, text: str) -> None:
    start, end = "<!-- figures: written by bench/reliability.py --markdown bench/RELIABILITY.md -->", "<!-- /figures -->"
    doc = path.read_text()
    if start not in doc or end not in doc:
        raise SystemExit(f"{path}: no figures markers")
    head, rest = doc.split(start, 1)
    path.write_text(head + start + "\n" + text + rest[rest.index(end):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="killed `up` runs of the big wiring-only lab")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--vfs", type=int, default=32)
    ap.add_argument("--ovn-runs", type=int, default=9, help="killed `up --dataplane ovn` runs (2 pairs x 8)")
    ap.add_argument("--pod-runs", type=int, default=6, help="killed `pod add` runs")
    ap.add_argument("--fuzz", type=int, default=400, help="hypothesis examples")
    ap.add_argument("--concurrent", type=int, default=2, help="labs at once")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="4 wiring, 3 data plane, 2 pod runs, 100 fuzz cases")
    ap.add_argument("--markdown", type=Path, default=None, help="put the figures into this file (bench/RELIABILITY.md)")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results-reliability.json", help="where the JSON goes (bench/results*.json is not committed)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/reliability.py needs root (it brings labs up): sudo .venv/bin/python bench/reliability.py")
    if a.quick:
        a.runs, a.ovn_runs, a.pod_runs, a.fuzz = 4, 3, 2, 100
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}; wiring {a.runs} x ({a.pairs} pairs x {a.vfs} links), data plane {a.ovn_runs}, pod add {a.pod_runs}, fuzz {a.fuzz}", flush=True)
    have_ovn = subprocess.run(["which", "ovn-northd"], capture_output=True).returncode == 0
    macs_cache: dict = {}

    def macs_of(lab: str, pairs: int = a.pairs, vfs: int = a.vfs) -> set[str]:
        return macs_cache.setdefault(lab, lab_macs(lab, pairs, vfs))

    runs: list[Run] = []
    t_start = time.monotonic()
    extra: dict = {"seed": seed, "size": {"pairs": a.pairs, "vfs": a.vfs}}
    if a.runs:
        durations = calibrate(f"relcal{uuid.uuid4().hex[:4]}", ["--pairs", str(a.pairs), "--vfs", str(a.vfs), "--dataplane", "none"])
        extra["calibration"] = durations
        for i in range(a.runs):
            r = wiring_run(i, rng, a.pairs, a.vfs, durations, macs_of)
            runs.append(r)
            print(f"  wiring {i + 1}/{a.runs}: {r.signal} at {r.target} -> {r.observed}, {r.recovery}: {'ok' if r.ok else 'FAILED'} ({r.seconds} s)", flush=True)
    if have_ovn and (a.ovn_runs or a.pod_runs):
        cal = calibrate(f"relcal{uuid.uuid4().hex[:4]}", ["--pairs", "2", "--vfs", "8", "--dataplane", "ovn"])
        dp_time = cal.get("data plane", 3.0)
        for i in range(a.ovn_runs):
            r = ovn_run(i, rng, 3 + 3 * 2, dp_time, macs_of)
            runs.append(r)
            print(f"  data plane {i + 1}/{a.ovn_runs}: {r.signal} at {r.target} -> {r.observed}, {r.recovery}: {'ok' if r.ok else 'FAILED'} ({r.seconds} s)", flush=True)
        for i in range(a.pod_runs):
            r = pod_run(i, rng, macs_of)
            runs.append(r)
            print(f"  pod add {i + 1}/{a.pod_runs}: {r.signal} at {r.target} -> {r.observed}, {r.recovery}: {'ok' if r.ok else 'FAILED'} ({r.seconds} s)", flush=True)
    if a.fuzz:
        extra["fuzz"] = fuzz(a.fuzz)
        print(f"  fuzz: {extra['fuzz']['cases']} cases", flush=True)
    if have_ovn and a.concurrent:
        extra["concurrent"] = concurrent_labs(a.concurrent)
        print(f"  concurrent labs: {'ok' if extra['concurrent']['ok'] else 'FAILED'}", flush=True)
    extra["lock"] = same_lab_serialised()
    extra["seconds"] = round(time.monotonic() - t_start, 1)
    ok = report(runs, extra, a.json)
    if a.markdown:
        write_markdown(a.markdown, markdown(runs, extra))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
