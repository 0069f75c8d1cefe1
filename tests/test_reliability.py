"""Crash safety, concurrency, ownership and faults on real labs (issue #7).

A few runs of each; bench/reliability.py runs the many. Every test uses lab names of its
own and cleans up after itself, also when it fails.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

from dpulab import intent, namespaces
from dpulab.netlink import Rtnl

from .conftest import DPULAB, needs_root, netns_names, root_links_of, run_cli

pytestmark = needs_root
needs_ovn = pytest.mark.skipif(shutil.which("ovn-northd") is None, reason="needs openvswitch-switch ovn-central ovn-host")


def new_lab(prefix: str = "r") -> str:
    return prefix + uuid.uuid4().hex[:7]


def left_of(lab: str) -> dict[str, list[str]]:
    """Everything of the lab still on the machine."""
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if f"/run/dpulab/{lab}/".encode() in cmd and not stat.rsplit(") ", 1)[-1].startswith("Z"):
            procs.append(pid)
    return {
        "namespaces": sorted(n for n in netns_names() if n.startswith(lab + "-")),
        "root interfaces": sorted(root_links_of(lab)),
        "processes": procs,
        "run directory": [str(p) for p in Path(f"/run/dpulab/{lab}").rglob("*")] + ([lab] if Path(f"/run/dpulab/{lab}").exists() else []),
    }


def assert_nothing_left(lab: str) -> None:
    for _ in range(20):  # the kernel frees a namespace's interfaces asynchronously
        left = {k: v for k, v in left_of(lab).items() if v}
        if not left:
            return
        time.sleep(0.1)
    assert not left, f"left of {lab}: {left}"


@contextmanager
def labs_downed(*labs: str):
    """Down the labs afterwards, whatever happened, then check nothing of them is left."""
    try:
        yield labs
    finally:
        for lab in labs:
            run_cli("down", "--name", lab)
    for lab in labs:
        assert_nothing_left(lab)


def verify(lab: str, *extra: str) -> list[dict]:
    res = run_cli("verify", "--name", lab, "--json", *extra)
    assert res.stdout, res.stderr
    return [c for c in json.loads(res.stdout)["checks"] if not c["ok"]]


def lo_alias(ns: str) -> str | None:
    r = Rtnl(ns)
    try:
        return r.link("lo").alias
    finally:
        r.close()


# -- namespaces: marked before their name appears; a killed create's placeholder -------------------
def test_namespace_is_marked_before_its_name_appears():
    from dpulab.engines.netns import _mark_lo, node_mark

    lab = new_lab()
    ns = f"{lab}-worker"
    seen = {}

    def setup():
        seen["placeholder during setup"] = namespaces.is_placeholder(ns)
        _mark_lo(lab, ns)

    try:
        namespaces.create(ns, setup=setup)
        assert seen["placeholder during setup"], "the mark is written before the mount makes it a namespace"
        assert lo_alias(ns) == node_mark(lab, ns)
    finally:
        namespaces.remove(ns)


def test_killed_create_placeholder_is_remade_by_up_and_removed_by_down():
    lab = new_lab()
    with labs_downed(lab):
        # what a kill between making the mount point and mounting leaves: the journal entry
        # and an empty file where the namespace was to be
        intent.record(lab, f"{lab}-worker2")
        Path(f"/run/netns/{lab}-worker2").touch()
        res = run_cli("up", "--name", lab, "--pairs", "1", "--vfs", "2", "--dataplane", "none")
        assert res.returncode == 0, res.stderr
        assert not verify(lab)
        assert lo_alias(f"{lab}-worker2") == f"dpulab:{lab}:node:{lab}-worker2"
        # killed again; this time down cleans up
        run_cli("down", "--name", lab)
        intent.record(lab, f"{lab}-worker")
        Path(f"/run/netns/{lab}-worker").touch()
        assert run_cli("down", "--name", lab).returncode == 0
        assert not Path(f"/run/netns/{lab}-worker").exists()


def test_ctrl_c_that_leaves_a_placeholder_keeps_its_journal_entry():
    """A Ctrl-C landing right after the mount point is made: the journal still claims it."""
    from dpulab.engines.netns import create_marked_ns
    from dpulab.netlink import Sockets

    lab = new_lab()
    ns = f"{lab}-worker"

    def interrupted_create(name, setup=None):
        namespaces.NETNS_DIR.mkdir(exist_ok=True)
        namespaces.path(name).touch()
        raise KeyboardInterrupt

    with labs_downed(lab):
        with mock.patch.object(namespaces, "create", interrupted_create), Sockets() as socks, pytest.raises(KeyboardInterrupt):
            create_marked_ns(lab, ns, socks)
        assert intent.leftover(lab, ns), "the placeholder is still claimed by the journal"
        assert run_cli("down", "--name", lab).returncode == 0
        assert not namespaces.exists(ns)


def test_placeholder_without_journal_entry_is_not_ours():
    lab = new_lab()
    p = Path(f"/run/netns/{lab}-worker")
    namespaces.NETNS_DIR.mkdir(exist_ok=True)
    p.touch()
    try:
        with labs_downed(lab):
            res = run_cli("up", "--name", lab, "--pairs", "1", "--vfs", "2", "--dataplane", "none")
            assert res.returncode == 3 and "not part of lab" in res.stderr, res.stderr
            run_cli("down", "--name", lab)
            assert p.exists(), "a placeholder no journal of ours names is left alone"
            p.unlink()
    finally:
        p.unlink(missing_ok=True)


# -- interfaces a kill caught between creating and marking ---------------------------------------------
def test_half_made_veths_are_finished_not_refused(clean_lab):
    lab = clean_lab
    assert run_cli("up", "--name", lab, "--pairs", "1", "--vfs", "4", "--dataplane", "none").returncode == 0
    host, dpu, net = f"{lab}-worker", f"{lab}-worker2", f"{lab}-net"
    for ns, ifname in ((host, "eth0-1"), (dpu, "rep0-2"), (dpu, "eth0"), (net, "w2")):
        subprocess.run(["ip", "-n", ns, "link", "set", "dev", ifname, "alias", ""], check=True)
    res = run_cli("up", "--name", lab)
    assert res.returncode == 0, res.stderr
    assert not verify(lab)
    r = Rtnl(host)
    try:
        assert r.link("eth0-1").alias == f"dpulab:{lab}:vf:pf0vf1"
    finally:
        r.close()
    # an unmarked veth under our name but without our MAC is someone else's: refused, kept
    subprocess.run(["ip", "-n", host, "link", "del", "eth0-3"], check=True)
    subprocess.run(["ip", "-n", host, "link", "add", "eth0-3", "type", "veth", "peer", "name", "x3"], check=True)
    res = run_cli("up", "--name", lab)
    assert res.returncode == 3 and "not ours" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# -- killed at random points ------------------------------------------------------------------------
def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*DPULAB, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(pred, timeout: float = 60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.0005)
    return False


@pytest.mark.parametrize("sig, recovery", [(signal.SIGKILL, "up"), (signal.SIGINT, "down"), (signal.SIGKILL, "down")])
def test_up_killed_while_making_namespaces_recovers(sig, recovery):
    lab = new_lab()
    flags = ["--pairs", "6", "--vfs", "16", "--dataplane", "none"]
    with labs_downed(lab):
        p = spawn("up", "--name", lab, *flags)
        k = random.randint(1, 13)
        wait_for(lambda: len([n for n in netns_names() if n.startswith(lab + "-")]) >= k or p.poll() is not None)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        assert "Traceback" not in err
        if sig == signal.SIGINT and p.returncode != 0:
            assert err.strip().splitlines()[-1] == "dpulab: interrupted"
        if recovery == "up":
            res = run_cli("up", "--name", lab, *flags)
            assert res.returncode == 0, res.stderr
            assert not verify(lab)
            assert json.loads(run_cli("plan", "--name", lab, "--json").stdout) == []
        else:
            assert run_cli("down", "--name", lab).returncode == 0
            assert_nothing_left(lab)


def test_up_killed_between_creating_and_marking_veths_recovers():
    lab = new_lab()
    flags = ["--pairs", "6", "--vfs", "32", "--dataplane", "none"]
    with labs_downed(lab):
        p = subprocess.Popen([*DPULAB, "up", "--name", lab, *flags, "-v"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert p.stderr is not None
        for line in p.stderr:
            if "create link:" in line:
                p.send_signal(signal.SIGKILL)  # veths made, not yet marked
                break
        p.wait(60)
        res = run_cli("up", "--name", lab, *flags)
        assert res.returncode == 0, res.stderr
        assert not verify(lab)


# -- the lock: serialises commands on one lab and names the holder ----------------------------------
def test_lock_holder_is_named_right_for_every_command(monkeypatch):
    """Each command that takes the lock says what it is: `dpulab <command as typed>`."""
    from dpulab import gc, lab, pods, state
    from dpulab.spec import load_spec

    taken = []

    class Taken(Exception):
        pass

    def recorder(name, command):
        taken.append(command)
        raise Taken

    for mod in (lab, pods, gc):
        monkeypatch.setattr(mod, "locked", recorder)
    name = new_lab()
    for call in (
        lambda: lab.up(load_spec(None, {"name": name, "dataplane": "none"})),
        lambda: lab.down(name),
        lambda: pods.add(name, f"{name}-worker", "p1"),
        lambda: pods.delete(name, "p1"),
    ):
        with pytest.raises(Taken):
            call()
    orphan = state.run_dir(name)
    orphan.mkdir(parents=True)
    try:
        gc.gc(only=[name])  # its Taken is reported as a finding, not raised
    except Taken:
        pass
    finally:
        shutil.rmtree(orphan, ignore_errors=True)
    assert taken == ["up", "down", "pod add", "pod del", "gc"]
    # ... and those are the commands as the CLI spells them
    for command in taken:
        assert run_cli(*command.split(), "--help").returncode == 0


def test_every_lock_taker_names_a_real_command():
    """Any `locked(lab, "<command>")` in the source, whoever wrote it, names a command the
    CLI has: the refused user reads `dpulab <command>` and can recognise it."""
    import re

    src = Path(__file__).resolve().parents[1] / "src" / "dpulab"
    commands = set()
    for path in src.rglob("*.py"):
        commands |= set(re.findall(r"\blocked\([^,]+,\s*\"([^\"]+)\"\)", path.read_text()))
    assert {"up", "down", "pod add", "pod del", "gc"} <= commands
    for command in sorted(commands):
        res = run_cli(*command.split(), "--help")
        assert res.returncode == 0, f"`dpulab {command}` is not a command: {res.stderr}"


def test_second_command_on_a_lab_is_refused_naming_the_first():
    lab = new_lab()
    with labs_downed(lab):
        p = spawn("up", "--name", lab, "--pairs", "8", "--vfs", "64", "--dataplane", "none")
        lock = Path(f"/run/dpulab/{lab}/lock")
        held = wait_for(lambda: lock.exists() and lock.read_text().startswith("`dpulab up`"), 30)
        p.send_signal(signal.SIGSTOP)  # held still wherever it is, so the second command surely meets it
        try:
            second = run_cli("down", "--name", lab)
        finally:
            p.send_signal(signal.SIGCONT)
        p.communicate(timeout=120)
        assert held and p.returncode == 0
        assert second.returncode == 1
        assert second.stderr.strip() == f"dpulab: error: lab {lab!r} is busy: `dpulab up` (pid {p.pid}) holds its lock"
        # and after it, the lab is whole and the lock free
        assert not verify(lab)
        assert run_cli("down", "--name", lab).returncode == 0


def test_lock_of_a_removed_run_directory_guards_nothing():
    """A command that opened the lock file of a directory `down` then removed takes the new one."""
    from dpulab.state import locked, run_dir

    lab = new_lab()
    try:
        with locked(lab, "up"):
            fd = os.open(run_dir(lab) / "lock", os.O_RDONLY)
            shutil.rmtree(run_dir(lab))
            with locked(lab, "down"):  # not refused: the first lock is on a file no one can find
                assert (run_dir(lab) / "lock").read_text().startswith("`dpulab down`")
            os.close(fd)
    finally:
        shutil.rmtree(run_dir(lab), ignore_errors=True)


def test_command_that_made_nothing_leaves_no_run_directory():
    lab = new_lab()
    res = run_cli("pod", "add", f"{lab}-worker", "p1", "--name", lab)
    assert res.returncode == 2 and "no lab named" in res.stderr
    assert not Path(f"/run/dpulab/{lab}").exists()


# -- gc ------------------------------------------------------------------------------------------------
def test_gc_removes_only_what_carries_the_mark(tmp_path):
    lab = new_lab("g")
    foreign_ns = f"{lab}-worker9"
    dummy = f"gc{uuid.uuid4().hex[:6]}"
    sleepers: list[subprocess.Popen] = []
    try:
        assert run_cli("up", "--name", lab, "--pairs", "1", "--vfs", "2", "--dataplane", "none").returncode == 0
        d = Path(f"/run/dpulab/{lab}")
        (d / "state.json").unlink()  # the lab is gone; what it made is not
        # a daemon of ours (started with our pidfile), and a pidfile naming a stranger
        (d / "node").mkdir()
        ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", f"--pidfile={d}/node/ours.pid"])
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        sleepers += [ours, stranger]
        (d / "node" / "ours.pid").write_text(f"{ours.pid}\n")
        (d / "node" / "stranger.pid").write_text(f"{stranger.pid}\n")
        # the journal names a namespace that is not ours; a marked interface in the root namespace
        intent.record(lab, foreign_ns)
        subprocess.run(["ip", "netns", "add", foreign_ns], check=True)
        subprocess.run(["ip", "-n", foreign_ns, "link", "add", "x0", "type", "veth", "peer", "name", "x1"], check=True)
        subprocess.run(["ip", "link", "add", dummy, "type", "veth", "peer", "name", dummy + "p"], check=True)
        subprocess.run(["ip", "link", "set", dummy, "alias", f"dpulab:{lab}:test"], check=True)

        dry = run_cli("gc", "--dry-run", "--lab", lab, "--json")
        assert dry.returncode == 0, dry.stderr
        found = {(f["kind"], f["name"]): f["action"] for f in json.loads(dry.stdout)["findings"]}
        assert found[("namespace", f"{lab}-worker")] == "would remove"
        assert found[("daemon", f"pid {ours.pid}")] == "would stop"
        assert found[("daemon", f"pid {stranger.pid}")] == "not ours: left alone"
        assert found[("namespace", foreign_ns)] == "not ours: left alone"
        assert found[("interface", dummy)] == "would remove"
        assert namespaces.exists(f"{lab}-worker") and ours.poll() is None, "a dry run changes nothing"

        res = run_cli("gc", "--lab", lab, "--json")
        assert res.returncode == 0, res.stderr
        assert not [n for n in netns_names() if n.startswith(lab + "-") and n != foreign_ns]
        assert namespaces.exists(foreign_ns), "not ours: left alone"
        assert ours.wait(10) is not None and stranger.poll() is None
        assert not Path(f"/sys/class/net/{dummy}").exists()
        assert not d.exists()
    finally:
        for p in sleepers:
            p.kill()
        subprocess.run(["ip", "netns", "del", foreign_ns], capture_output=True)
        subprocess.run(["ip", "link", "del", dummy], capture_output=True)
        run_cli("down", "--name", lab)
    assert_nothing_left(lab)


# -- two labs at once; faults in the environment (data plane) -------------------------------------
def _inodes(lab: str) -> dict[str, int]:
    return {n: os.stat(f"/run/netns/{n}").st_ino for n in netns_names() if n.startswith(lab + "-")}


def _pids(lab: str) -> dict[str, str]:
    return {str(p.relative_to(f"/run/dpulab/{lab}")): p.read_text().strip() for p in Path(f"/run/dpulab/{lab}").rglob("*.pid")}


@needs_ovn
def test_two_labs_at_once_do_not_touch_each_other():
    a, b = new_lab("ca"), new_lab("cb")
    errors: list[str] = []

    def both(step):
        threads = [threading.Thread(target=lambda n=n: errors.extend(step(n))) for n in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

    def cmd(*args):
        res = run_cli(*args)
        return [] if res.returncode == 0 else [f"{' '.join(args)}: {res.stderr.strip()}"]

    with labs_downed(a, b):
        both(lambda n: cmd("up", "--name", n, "--pairs", "2", "--vfs", "4", "--dataplane", "ovn"))
        both(lambda n: cmd("pod", "add", f"{n}-worker", "p1", "--name", n) + cmd("pod", "add", f"{n}-worker3", "p2", "--name", n))
        both(lambda n: [f"{n}: {c}" for c in verify(n, "--traffic")])
        before = (_inodes(b), _pids(b))
        # a goes down while b is checked with traffic: b must not notice
        both(lambda n: cmd("down", "--name", n) if n == a else [f"{n}: {c}" for c in verify(n, "--traffic")])
        assert (_inodes(b), _pids(b)) == before
        assert_nothing_left(a)


OVS_PLACES = ["/etc/openvswitch", "/var/lib/openvswitch", "/var/run/openvswitch", "/var/log/openvswitch",
              "/etc/ovn", "/var/lib/ovn", "/var/run/ovn", "/var/log/ovn"]


def _snapshot(lab: str) -> dict[str, float]:
    out = {}
    for place in OVS_PLACES:
        for p in Path(place).rglob("*") if Path(place).exists() else []:
            try:
                out[str(p)] = p.stat().st_mtime
            except OSError:
                pass
    for place in (Path.cwd(), Path.home(), Path("/tmp"), Path("/run")):
        for p in place.iterdir():
            if lab in p.name or p.name.startswith(("ovs", "ovn", "ovsdb")):
                out[str(p)] = 0.0
    return out


@needs_ovn
def test_faults_are_reported_and_repaired_by_up_and_nothing_is_written_elsewhere():
    lab = new_lab("f")
    before = _snapshot(lab)
    with labs_downed(lab):
        assert run_cli("up", "--name", lab, "--pairs", "2", "--vfs", "6", "--dataplane", "ovn").returncode == 0
        for host, pod in ((f"{lab}-worker", "p1"), (f"{lab}-worker3", "p2")):
            assert run_cli("pod", "add", host, pod, "--name", lab).returncode == 0
        assert not verify(lab, "--traffic")
        faults = [
            ("a pod's representor deleted", ["ip", "-n", f"{lab}-worker2", "link", "del", "rep0-2"]),
            ("a pod's namespace deleted", ["ip", "netns", "del", f"{lab}-pod-p2"]),
            ("a DPU's namespace deleted (its daemons inside)", ["ip", "netns", "del", f"{lab}-worker4"]),
            ("the cluster network's namespace deleted", ["ip", "netns", "del", f"{lab}-net"]),
        ]
        for what, argv in faults:
            subprocess.run(argv, check=True)
            assert verify(lab, "--traffic"), f"{what}: verify must see it"
            res = run_cli("up", "--name", lab)
            assert res.returncode == 0, f"{what}: {res.stderr}"
            bad = verify(lab, "--traffic")
            assert not bad, f"{what}, after up: {bad}"
    assert _snapshot(lab) == before, "nothing written outside the run directory and the namespaces"
