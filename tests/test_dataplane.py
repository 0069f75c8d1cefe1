"""The OVN data plane with the real daemons: pods on VFs, traffic through the DPUs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from dpulab import namespaces
from dpulab.netlink import Rtnl

from .conftest import needs_root, run_cli

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("ovn-northd") is None, reason="needs openvswitch-switch ovn-central ovn-host"),
]


def daemon_pids(name: str) -> list[int]:
    """Pids of OVS/OVN processes whose command line names this lab's run directory."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if f"/run/dpulab/{name}/".encode() in cmd and ") Z" not in stat:
            out.append(int(pid))
    return out


def checks(name: str, *extra: str) -> dict:
    res = run_cli("verify", "--name", name, "--json", *extra)
    return json.loads(res.stdout)


@pytest.fixture
def ovn_lab(clean_lab):
    name = clean_lab
    res = run_cli("up", "--name", name, "--dataplane", "ovn", "--vfs", "8")
    assert res.returncode == 0, res.stderr
    yield name
    run_cli("down", "--name", name)
    assert not daemon_pids(name), "down must stop every daemon it started"


def test_pods_talk_across_hosts_through_their_dpus(ovn_lab):
    name = ovn_lab
    host1, host2, dpu2 = f"{name}-worker", f"{name}-worker3", f"{name}-worker4"
    a = run_cli("pod", "add", host1, "web", "--name", name, "--json")
    b = run_cli("pod", "add", host2, "db", "--vf", "5", "--name", name, "--json")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    web, db = json.loads(a.stdout), json.loads(b.stdout)
    assert db["vf"] == 5 and db["representor"] == "rep1-5"
    assert web["vf"] not in (0, 1), "VF 0 (gateway) and VF 1 (management) are never handed to pods"
    assert web["connection_details"]["default"]["vfId"] == str(web["vf"])
    assert web["connection_status"]["Status"] == "Ready"
    # the VF really moved: gone from the host, eth0 in the pod with the pod's address
    host_links = Rtnl(host1).links()
    assert web["vf_netdev"] not in host_links
    pod_links = Rtnl(web["netns"]).links()
    assert pod_links["eth0"].mac == web["mac"]
    # and the representor is plugged into br-int with the pod's iface-id
    out = subprocess.run(
        ["ovs-vsctl", f"--db=unix:/run/dpulab/{name}/{dpu2}/db.sock", "get", "interface", "rep1-5", "external_ids:iface-id"],
        capture_output=True, text=True, check=True,
    ).stdout.strip().strip('"')
    assert out == "default_db"
    report = checks(name, "--traffic")
    failed = [c for c in report["checks"] if not c["ok"]]
    assert not failed, failed
    kinds = {c["check"] for c in report["checks"]}
    assert {"pod ping (cross-host)", "pod TCP", "host -> pods via DPU", "logical ports up", "host isolated"} <= kinds
    # topology still counts the VF that sits in a pod
    assert all(c["ok"] for c in report["checks"] if c["check"] == "host interfaces")
    # pods survive a re-run of up, which changes nothing
    again = run_cli("up", "--name", name)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert namespaces.exists(web["netns"])
    # delete returns the VF to the host with its own name and MAC
    assert run_cli("pod", "del", "web", "--name", name).returncode == 0
    back = Rtnl(host1).links()[web["vf_netdev"]]
    assert back.up and back.mac.startswith("52:54:00:")
    assert not namespaces.exists(web["netns"])
    assert checks(name)["ok"]


def test_killed_daemon_is_reported_and_restarted(ovn_lab):
    name = ovn_lab
    pidfile = f"/run/dpulab/{name}/{name}-worker2/ovn-controller.pid"
    pid = int(open(pidfile).read())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    report = checks(name, "--traffic")
    bad = [c for c in report["checks"] if not c["ok"]]
    assert any(c["check"] == "daemon" and "ovn-controller" in c["node"] for c in bad)
    assert run_cli("up", "--name", name).returncode == 0
    assert int(open(pidfile).read()) != pid
    assert all(c["ok"] for c in checks(name, "--traffic")["checks"] if c["check"] == "daemon")


def test_representor_resolution_three_ways(ovn_lab):
    name = ovn_lab
    dpu = f"{name}-worker4"
    found = {}
    for by in ("name", "alias", "peer"):
        res = run_cli("rep", "resolve", dpu, "--vf", "3", "--by", by, "--name", name, "--json")
        assert res.returncode == 0, res.stderr
        found[by] = json.loads(res.stdout)["netdev"]
    assert set(found.values()) == {"rep1-3"}
    res = run_cli("rep", "resolve", dpu, "--vf", "99", "--name", name)
    assert res.returncode == 2 and "no representor" in res.stderr


def test_pod_input_errors(ovn_lab):
    name = ovn_lab
    host = f"{name}-worker"
    for args, words in [
        (["pod", "add", host, "p1", "--vf", "0"], "reserved"),
        (["pod", "add", host, "p1", "--vf", "1"], "reserved"),
        (["pod", "add", host, "p1", "--vf", "8"], "does not exist"),
        (["pod", "add", f"{name}-worker2", "p1"], "is not a host"),
        (["pod", "add", host, "Bad_Name"], "not a valid pod name"),
        (["pod", "del", "nope"], "no pod"),
        (["logs", f"{name}-worker"], "runs no daemons"),
    ]:
        res = run_cli(*args, "--name", name)
        assert res.returncode == 2, (args, res.stderr)
        assert words in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert run_cli("logs", f"{name}-worker2", "ovn-controller", "--name", name).returncode == 0


def test_lab_file_pods_come_up_with_the_lab(clean_lab, tmp_path):
    """One `up -f` brings the lab, its data plane and its pods; a second changes nothing."""
    name = clean_lab
    f = tmp_path / "lab.yaml"
    f.write_text(
        f"name: {name}\nvfs: 6\npods:\n  - {{name: a, host: 0}}\n  - {{name: b, host: 1, vf: 4}}\n"
        f"  - {{name: c, host: {name}-worker3}}\n"
    )
    res = run_cli("up", "-f", str(f))
    assert res.returncode == 0, res.stderr
    pods = {p["name"]: p for p in json.loads(run_cli("pod", "list", "--name", name, "--json").stdout)}
    assert set(pods) == {"a", "b", "c"}
    assert pods["b"]["vf"] == 4 and pods["c"]["vf"] not in (0, 1, 4)
    assert all(p["status"] == "Ready" for p in pods.values()), pods
    again = run_cli("up", "-f", str(f))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    report = checks(name, "--traffic")
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]


def test_shrinking_retires_the_dropped_dpus_daemons(clean_lab):
    name = clean_lab
    assert run_cli("up", "--name", name, "--pairs", "2", "--vfs", "4").returncode == 0
    assert run_cli("pod", "add", f"{name}-worker3", "p", "--name", name).returncode == 0
    res = run_cli("up", "--name", name, "--pairs", "1")
    assert res.returncode == 2 and "pod del" in res.stderr, "a pod on a dropped host blocks the change"
    assert run_cli("pod", "del", "p", "--name", name).returncode == 0
    dropped = [p for p in daemon_pids(name) if f"/{name}-worker4/".encode() in open(f"/proc/{p}/cmdline", "rb").read()]
    assert dropped, "the second DPU runs its daemons before the change"
    assert run_cli("up", "--name", name, "--pairs", "1").returncode == 0
    assert not [p for p in dropped if os.path.exists(f"/proc/{p}") and ") Z" not in open(f"/proc/{p}/stat").read()]
    sb = f"unix:/run/dpulab/{name}/{name}-control-plane/ovnsb_db.sock"
    chassis = subprocess.run(["ovn-sbctl", f"--db={sb}", "--bare", "--columns=name", "list", "Chassis"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert chassis == [f"{name}-worker2"]
    report = checks(name, "--traffic")
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]


def test_vxlan_encap_carries_pod_traffic(clean_lab, tmp_path):
    name = clean_lab
    f = tmp_path / "lab.yaml"
    f.write_text(f"name: {name}\nvfs: 4\novn: {{encap: vxlan}}\npods:\n  - {{name: a, host: 0}}\n  - {{name: b, host: 1}}\n")
    assert run_cli("up", "-f", str(f)).returncode == 0
    db = f"unix:/run/dpulab/{name}/{name}-worker2/db.sock"
    encap = subprocess.run(["ovs-vsctl", f"--db={db}", "get", "open", ".", "external_ids:ovn-encap-type"],
                           capture_output=True, text=True, check=True).stdout.strip().strip('"')
    assert encap == "vxlan"
    report = checks(name, "--traffic")
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
