"""Working in a lab: exec/shell, link impairments, events; and the CLI around them:
completion, help with examples, JSON, quiet, colour only when asked for."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import time

import pytest

from dpulab import netem, probe

from .conftest import DPULAB, needs_root, run_cli

needs_tc = pytest.mark.skipif(shutil.which("tc") is None, reason="needs tc (iproute2)")


def tc_qdisc(ns: str, dev: str) -> str:
    res = subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", dev], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture
def lab(clean_lab):
    """A small wiring-only lab (2 pairs x 4 links); `clean_lab` downs it and checks for leftovers."""
    res = run_cli("up", "--name", clean_lab, "--vfs", "4", "--dataplane", "none")
    assert res.returncode == 0, res.stderr
    return clean_lab


# -- units and the lab-file model (no root) ----------------------------------------------
def test_units():
    assert netem.parse_time("50ms") == 50_000 and netem.parse_time("200us") == 200 and netem.parse_time("1.5s") == 1_500_000
    assert netem.parse_percent("0.5%") == 0.5
    assert netem.parse_rate("100mbit") == 100_000_000 and netem.parse_rate("1gbit") == 10**9
    assert netem.parse_rate("10mbps") == 80_000_000  # tc: bps is bytes per second
    for bad, parse in (("50", netem.parse_time), ("fast", netem.parse_rate), ("101%", netem.parse_percent), ("2h", netem.parse_time)):
        with pytest.raises(ValueError):
            parse(bad)
    assert netem.Params.parse(rate="10mbit").qdisc()[:3] == ["tbf", "rate", "10000000bit"]
    assert netem.Params.parse(delay="20ms", jitter="5ms", loss="1%").qdisc() == ["netem", "delay", "20000us", "5000us", "loss", "1%"]
    assert netem.parse_vf_set("2,4,8..10") == [2, 4, 8, 9, 10]


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"pair": 0}, "needs delay, loss or rate"),
        ({"pair": 9, "rate": "1mbit"}, "pair 9 does not exist"),
        ({"pair": 0, "link": "worker:eth0-1", "rate": "1mbit"}, "either a pair or a link"),
        ({"pair": 0, "rate": "quick"}, "is not a rate"),
        ({"pair": 0, "jitter": "1ms", "loss": "1%"}, "jitter needs a delay"),
        ({"pair": 0, "vfs": "2..99", "rate": "1mbit"}, "VF 99 does not exist"),
        ({"link": "worker eth0", "rate": "1mbit"}, "NODE:IFACE"),
        ({"pair": 0, "rate": "1mbit", "latency": "3ms"}, "latency"),
    ],
)
def test_bad_impairments_in_a_lab_file(tmp_path, rule, message):
    f = tmp_path / "lab.yaml"
    f.write_text(json.dumps({"name": "imp", "impairments": [rule]}))
    res = run_cli("plan", "-f", str(f))
    assert res.returncode == 2
    assert res.stderr.startswith("dpulab: error: ") and message in res.stderr and len(res.stderr.strip().splitlines()) == 1


# -- exec and shell ----------------------------------------------------------------------
@needs_root
def test_exec_runs_in_the_node_namespace_and_returns_its_exit_code(lab):
    name = lab
    for node, ns in (("worker2", f"{name}-worker2"), (f"{name}-worker", f"{name}-worker"), ("net", f"{name}-net")):
        res = run_cli("exec", "--name", name, node, "--", "readlink", "/proc/self/ns/net")
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == f"net:[{os.stat(f'/run/netns/{ns}').st_ino}]"
    # the node's interfaces, not the machine's; arguments that look like options reach the command
    res = run_cli("exec", f"{name}-worker2", "--", "ip", "-o", "link", "show", "rep0-3")
    assert res.returncode == 0 and "rep0-3" in res.stdout, res.stderr
    assert run_cli("exec", "--name", name, "worker", "--", "sh", "-c", "exit 7").returncode == 7
    assert run_cli("exec", f"{name}-worker", "--name", name, "--", "false").returncode == 1  # --name after NODE, before --
    res = run_cli("exec", f"{name}-worker", "--", "no-such-command-here")
    assert res.returncode == 127 and "command not found" in res.stderr
    res = run_cli("exec", "--name", name, "worker9", "--", "true")
    assert res.returncode == 2 and res.stderr.startswith("dpulab: error:") and len(res.stderr.strip().splitlines()) == 1


@needs_root
def test_shell_uses_shell_env_in_the_namespace(lab):
    name = lab
    env = {**os.environ, "SHELL": "/bin/sh"}
    res = subprocess.run([*DPULAB, "shell", f"{name}-worker3"], input='echo "$DPULAB_NODE"; readlink /proc/self/ns/net\n',
                         capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 0, res.stderr
    node, ns = res.stdout.split()
    assert node == f"{name}-worker3" and ns == f"net:[{os.stat(f'/run/netns/{name}-worker3').st_ino}]"


# -- impairments -------------------------------------------------------------------------
@needs_root
@needs_tc
def test_netem_rate_set_show_clear(lab):
    name = lab
    res = run_cli("netem", "set", f"{name}-worker", "eth0-2", "--rate", "10mbit")
    assert res.returncode == 0, res.stderr
    assert "rate 10mbit" in res.stdout
    assert re.search(r"qdisc tbf \S+ root .*rate 10Mbit", tc_qdisc(f"{name}-worker", "eth0-2"))
    # a cluster network port, on the bridge's side
    assert run_cli("netem", "set", "net", "w2", "--rate", "1gbit", "--name", name, "-q").stdout == ""
    assert "rate 1Gbit" in tc_qdisc(f"{name}-net", "w2")
    rows = json.loads(run_cli("netem", "show", "--name", name, "--json").stdout)
    assert {(r["node"], r["iface"], r["qdisc"], r["rate"]) for r in rows} == {
        (f"{name}-worker", "eth0-2", "tbf", "10mbit"), (f"{name}-net", "w2", "tbf", "1gbit")}
    res = run_cli("netem", "clear", f"{name}-worker", "eth0-2")
    assert res.returncode == 0 and "cleared eth0-2" in res.stdout
    assert "tbf" not in tc_qdisc(f"{name}-worker", "eth0-2")
    assert run_cli("netem", "clear", "net", "--name", name).returncode == 0  # every impaired interface of it
    assert "tbf" not in tc_qdisc(f"{name}-net", "w2")
    assert json.loads(run_cli("netem", "show", "--name", name, "--json").stdout) == []
    # mistakes: one line, nothing changed
    for args in (["eth0-2", "--rate", "fast"], ["eth0-99", "--rate", "1mbit"], ["eth0-2"]):
        res = run_cli("netem", "set", f"{name}-worker", *args)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


@needs_root
@needs_tc
def test_netem_loss_drops_and_clear_restores(lab):
    """Loss works with netem or, without it, as a BPF filter on clsact egress."""
    name = lab
    cp, dpu_ns, dpu_ip = f"{name}-control-plane", f"{name}-worker2", "172.18.0.4"
    res = run_cli("netem", "set", dpu_ns, "eth0", "--loss", "100%", "--rate", "20mbit")
    assert res.returncode == 0, res.stderr
    assert "loss 100%, rate 20mbit" in res.stdout
    rows = json.loads(run_cli("netem", "show", dpu_ns, "--json").stdout)
    assert [(r["iface"], r["loss"], r["rate"]) for r in rows] == [("eth0", "100%", "20mbit")]
    # the DPU's replies leave through its impaired eth0: nothing comes back
    m = netem.measure([(cp, dpu_ip)], count=3, timeout=0.5)[(cp, dpu_ip)]
    assert m.sent == 3 and not m.rtts and m.loss_pct == 100
    assert run_cli("netem", "clear", dpu_ns, "eth0").returncode == 0
    assert tc_qdisc(dpu_ns, "eth0").split()[1] == "noqueue"  # no tbf, and no clsact left behind
    probe.ping([(cp, dpu_ip)], timeout=2.0, tries=4)  # the neighbour entry failed meanwhile: resolve it again
    m = netem.measure([(cp, dpu_ip)], count=3, timeout=1.0)[(cp, dpu_ip)]
    assert len(m.rtts) == 3, m.describe()


@needs_root
@needs_tc
def test_netem_delay(lab):
    """Delay and jitter are netem's alone: without it, one line naming the module, nothing changed."""
    name = lab
    ns, cp = f"{name}-worker2", f"{name}-control-plane"
    assert run_cli("netem", "set", ns, "eth0", "--rate", "50mbit").returncode == 0
    res = run_cli("netem", "set", ns, "eth0", "--delay", "30ms", "--jitter", "1ms")
    if not netem.netem_supported(ns):
        assert res.returncode == 1
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "sch_netem" in lines[0] and "CONFIG_NET_SCH_NETEM" in lines[0], res.stderr
        assert "rate 50Mbit" in tc_qdisc(ns, "eth0"), "a refused setting changes nothing"
        pytest.skip("this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is not set): the delay path cannot run here")
    assert res.returncode == 0, res.stderr
    assert re.search(r"qdisc netem .*delay 30", tc_qdisc(ns, "eth0"))
    # the delay shows in a measured round trip from the control plane (one direction delayed)
    m = netem.measure([(cp, "172.18.0.4")], count=3, timeout=2.0)[(cp, "172.18.0.4")]
    assert m.rtts and min(m.rtts) >= 25, m.describe()
    assert run_cli("netem", "clear", ns, "eth0").returncode == 0


@needs_root
@needs_tc
def test_lab_file_impairments_applied_by_up_and_removed_when_dropped(tmp_path, clean_lab):
    name = clean_lab
    f = tmp_path / "lab.yaml"
    base = f"name: {name}\nvfs: 4\ndataplane: none\n"
    f.write_text(base + "impairments:\n"
                 "  - {pair: 0, vfs: '2..3', rate: 50mbit}\n"
                 "  - {link: 'worker4:eth0', rate: 200mbit}\n")
    res = run_cli("up", "-f", str(f))
    assert res.returncode == 0, res.stderr
    for ns, dev, rate in ((f"{name}-worker", "eth0-2", "50Mbit"), (f"{name}-worker", "eth0-3", "50Mbit"),
                          (f"{name}-worker2", "rep0-2", "50Mbit"), (f"{name}-worker4", "eth0", "200Mbit"),
                          (f"{name}-net", "w4", "200Mbit")):
        assert f"rate {rate}" in tc_qdisc(ns, dev), (ns, dev)
    assert "tbf" not in tc_qdisc(f"{name}-worker", "eth0-1") and "tbf" not in tc_qdisc(f"{name}-worker3", "eth0-2")
    # converging again changes nothing; dropping a rule clears what it set, and only that
    run_cli("netem", "set", f"{name}-worker3", "eth0-3", "--rate", "5mbit")  # run-time, not the file's
    f.write_text(base + "impairments:\n  - {link: 'worker4:eth0', rate: 200mbit}\n")
    res = run_cli("up", "-f", str(f))
    assert res.returncode == 0, res.stderr
    assert "tbf" not in tc_qdisc(f"{name}-worker", "eth0-2") and "tbf" not in tc_qdisc(f"{name}-worker2", "rep0-2")
    assert "rate 200Mbit" in tc_qdisc(f"{name}-worker4", "eth0")
    assert "rate 5Mbit" in tc_qdisc(f"{name}-worker3", "eth0-3")


# -- events ------------------------------------------------------------------------------
def _settle(name: str, timeout: float = 10.0) -> None:
    """Wait until every veth of the lab reports carrier: the kernel announces carrier
    changes late (linkwatch), and those would otherwise show up in the event stream."""
    from dpulab.netlink import Rtnl

    deadline = time.monotonic() + timeout
    nodes = [f"{name}-worker", f"{name}-worker2", f"{name}-worker3", f"{name}-worker4"]
    while time.monotonic() < deadline:
        pending = []
        for ns in nodes:
            r = Rtnl(ns)
            try:
                pending += [n for n, li in r.links().items() if n != "lo" and li.up and not li.oper_up]
            finally:
                r.close()
        if not pending:
            time.sleep(0.3)  # and the last notifications are out
            return
        time.sleep(0.05)
    raise AssertionError(f"links never settled: {pending[:4]}")


def _start_events(*args: str) -> subprocess.Popen:
    p = subprocess.Popen([*DPULAB, "events", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until it watches: it says so on stderr
        ready, _, _ = select.select([p.stderr], [], [], 0.5)
        if ready:
            line = p.stderr.readline()
            if line.startswith("watching"):
                return p
            if not line and p.poll() is not None:
                break
    p.kill()
    out, errs = p.communicate()
    raise AssertionError(f"events did not start: {errs}")


@needs_root
def test_events_sees_a_link_go_down(lab):
    name = lab
    _settle(name)
    p = _start_events("--name", name, "--json", "--count", "2", "--timeout", "15")
    try:
        down = subprocess.run(["ip", "-n", f"{name}-worker", "link", "set", "eth0-3", "down"], capture_output=True, text=True)
        assert down.returncode == 0, down.stderr
        out, errs = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, errs
    evs = [json.loads(line) for line in out.splitlines()]
    got = {(e["kind"], e["action"], e["node"], e["subject"]) for e in evs}
    # the host end went down (admin), and its representor lost carrier
    assert got == {("link", "down", f"{name}-worker", "eth0-3"), ("link", "down", f"{name}-worker2", "rep0-3")}, evs


@needs_root
def test_events_lines_and_timeout(lab):
    name = lab
    _settle(name)
    res = run_cli("events", "--name", name, "--count", "1", "--timeout", "0.5")
    assert res.returncode == 1 and res.stdout == ""  # nothing happened: --count not reached
    p = _start_events("--name", name, "--count", "1", "--timeout", "15")
    try:
        subprocess.run(["ip", "-n", f"{name}-worker3", "link", "set", "eth0-2", "down"], check=True)
        out, _ = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert re.match(rf"\d\d:\d\d:\d\d\.\d{{3}}  {name}-worker[34] +link (eth0|rep1)-2 down", out), out


# -- the CLI around it -------------------------------------------------------------------
@pytest.mark.parametrize("shell, marker", [("bash", "complete -o default -F"), ("zsh", "compdef"), ("fish", "complete --command dpulab")])
def test_completion_scripts(shell, marker):
    res = run_cli("completion", shell)
    assert res.returncode == 0 and marker in res.stdout and "_DPULAB_COMPLETE" in res.stdout


def test_completion_works_through_main():
    env = {**os.environ, "_DPULAB_COMPLETE": "complete_bash", "COMP_WORDS": "dpulab net", "COMP_CWORD": "1"}
    res = subprocess.run(DPULAB, capture_output=True, text=True, env=env)
    assert res.returncode == 0 and res.stdout.split() == ["netem"]
    env.update(COMP_WORDS="dpulab netem s", COMP_CWORD="2")
    res = subprocess.run(DPULAB, capture_output=True, text=True, env=env)
    assert sorted(res.stdout.split()) == ["set", "show"]


@pytest.mark.parametrize(
    "cmd", [["up"], ["plan"], ["down"], ["verify"], ["status"], ["graph"], ["exec"], ["shell"], ["events"],
            ["netem"], ["netem", "set"], ["pod"], ["pod", "add"], ["rep", "resolve"], ["logs"], ["completion"]],
)
def test_every_command_has_examples(cmd):
    res = run_cli(*cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert "Examples:" in res.stdout and "dpulab " + cmd[0] in res.stdout.split("Examples:", 1)[1]


def test_top_level_help_reads_like_a_man_page():
    out = run_cli("--help").stdout
    for section in ("Lab", "Inspect", "Work in the lab", "Environment:", "NO_COLOR", "Exit status:"):
        assert section in out


def _in_pty(*args: str, env: dict[str, str]) -> str:
    master, slave = pty.openpty()
    p = subprocess.Popen([*DPULAB, *args], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait(timeout=30)
    os.close(master)
    return out.decode(errors="replace")


def _colours(text: str) -> set[str]:
    """SGR colour parameters (30-49, 90-107) in the output."""
    found = set()
    for params in re.findall(r"\x1b\[([0-9;]*)m", text):
        for p in params.split(";"):
            if p.isdigit() and (30 <= int(p) <= 49 or 90 <= int(p) <= 107):
                found.add(p)
    return found


def test_colour_only_on_a_terminal_and_never_with_no_color():
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(TERM="xterm-256color", COLUMNS="100")
    assert _colours(_in_pty("--help", env=env)), "a terminal gets colour"
    assert not _colours(_in_pty("--help", env={**env, "NO_COLOR": "1"}))
    assert "\x1b[" not in run_cli("--help").stdout  # a pipe gets none


def test_quiet_and_json_in_pipes(lab_name):
    res = run_cli("-q", "graph", "--name", lab_name, "--pairs", "1", "--format", "json", "-o", "/dev/null")
    assert res.returncode == 0 and res.stdout == "" and res.stderr == ""
    res = run_cli("graph", "--name", lab_name, "--pairs", "1", "--format", "json")
    assert json.loads(res.stdout)["lab"] == lab_name and res.stderr == ""
