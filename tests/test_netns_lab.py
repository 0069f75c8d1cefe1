"""The netns engine end to end on real namespaces: up, verify, converge, down, ownership."""

from __future__ import annotations

import json
import subprocess


from dpulab import lab, namespaces
from dpulab.spec import load_spec

from .conftest import ifindexes, needs_root, netns_names, run_cli

pytestmark = needs_root


def verify_json(name: str) -> dict:
    res = run_cli("verify", "--name", name, "--json")
    return json.loads(res.stdout)


def test_up_verify_up_again_down(clean_lab):
    name = clean_lab
    res = run_cli("up", "--name", name, "--dataplane", "none", "--pairs", "2", "--vfs", "16")
    assert res.returncode == 0, res.stderr
    report = verify_json(name)
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    host, dpu = f"{name}-worker", f"{name}-worker2"
    assert set(ifindexes(host)) - {"lo"} == {f"eth0-{i}" for i in range(16)}
    assert set(ifindexes(dpu)) - {"lo"} == {"eth0"} | {f"rep0-{i}" for i in range(16)}
    assert set(ifindexes(f"{name}-worker4")) - {"lo"} == {"eth0"} | {f"rep1-{i}" for i in range(16)}
    before = {n: ifindexes(n) for n in (host, dpu, f"{name}-control-plane")}
    again = run_cli("up", "--name", name)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert {n: ifindexes(n) for n in before} == before, "a second up must not recreate anything"
    res = run_cli("down", "--name", name)
    assert res.returncode == 0
    assert not {n for n in netns_names() if n.startswith(name + "-")}


def test_converge_adds_and_removes_just_the_difference(clean_lab):
    name = clean_lab
    assert run_cli("up", "--name", name, "--dataplane", "none", "--pairs", "2", "--vfs", "4").returncode == 0
    host = f"{name}-worker"
    first = ifindexes(host)
    assert run_cli("up", "--name", name, "--vfs", "6").returncode == 0
    grown = ifindexes(host)
    assert {k: grown[k] for k in first} == first, "existing links kept"
    assert set(grown) - {"lo"} == {f"eth0-{i}" for i in range(6)}
    assert run_cli("up", "--name", name, "--vfs", "3", "--pairs", "3").returncode == 0
    shrunk = ifindexes(host)
    assert set(shrunk) - {"lo"} == {f"eth0-{i}" for i in range(3)}
    assert all(shrunk[k] == first[k] for k in shrunk)
    assert namespaces.exists(f"{name}-worker6")
    assert verify_json(name)["ok"]
    assert run_cli("up", "--name", name, "--dataplane", "none", "--pairs", "1").returncode == 0
    assert not namespaces.exists(f"{name}-worker3") and not namespaces.exists(f"{name}-worker6")
    assert verify_json(name)["ok"]


def test_plan_is_a_dry_run(clean_lab):
    name = clean_lab
    res = run_cli("plan", "--name", name, "--dataplane", "none", "--pairs", "1", "--vfs", "2", "--json")
    assert res.returncode == 0, res.stderr
    actions = json.loads(res.stdout)
    assert sum(a["target"].endswith("/eth0-0") for a in actions) >= 1
    assert not {n for n in netns_names() if n.startswith(name + "-")}, "plan must create nothing"


def test_verify_detects_damage_and_up_repairs_it(clean_lab):
    name = clean_lab
    assert run_cli("up", "--name", name, "--dataplane", "none", "--pairs", "1", "--vfs", "4").returncode == 0
    host, dpu = f"{name}-worker", f"{name}-worker2"
    subprocess.run(["ip", "-n", dpu, "link", "del", "rep0-2"], check=True)
    subprocess.run(["ip", "-n", host, "link", "set", "eth0-1", "down"], check=True)
    subprocess.run(["ip", "-n", host, "addr", "add", "172.18.0.99/16", "dev", "eth0-0"], check=True)
    subprocess.run(["ip", "-n", host, "route", "add", "default", "dev", "eth0-0"], check=True)
    report = verify_json(name)
    failed = {c["check"] for c in report["checks"] if not c["ok"]}
    assert {"host interfaces", "host VFs up", "VF <-> representor peers", "host isolated"} <= failed
    assert run_cli("verify", "--name", name).returncode == 1
    # up recreates what is missing and brings links up; the stray address is the user's, shown by verify
    assert run_cli("up", "--name", name).returncode == 0
    report = verify_json(name)
    still = {c["check"] for c in report["checks"] if not c["ok"]}
    assert "host interfaces" not in still and "VF <-> representor peers" not in still and "host VFs up" not in still


def test_foreign_namespace_is_refused_and_untouched(lab_name):
    name = lab_name
    foreign = f"{name}-worker2"
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    try:
        subprocess.run(["ip", "-n", foreign, "link", "add", "rep0-0", "type", "bridge"], check=True)
        res = run_cli("up", "--name", name, "--dataplane", "none", "--pairs", "1", "--vfs", "2")
        assert res.returncode != 0
        assert "not part of lab" in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
        assert not namespaces.exists(f"{name}-worker"), "nothing created when refusing"
        run_cli("down", "--name", name)
        assert namespaces.exists(foreign), "down must not delete what is not ours"
        assert "rep0-0" in ifindexes(foreign)
    finally:
        subprocess.run(["ip", "netns", "del", foreign])
        run_cli("down", "--name", name)


def test_foreign_interface_in_our_namespace_is_not_deleted(clean_lab):
    name = clean_lab
    assert run_cli("up", "--name", name, "--dataplane", "none", "--pairs", "1", "--vfs", "2").returncode == 0
    host = f"{name}-worker"
    subprocess.run(["ip", "-n", host, "link", "add", "mine0", "type", "bridge"], check=True)
    assert run_cli("up", "--name", name, "--vfs", "1").returncode == 0
    assert "mine0" in ifindexes(host), "converging deletes only marked interfaces"
    assert "eth0-1" not in ifindexes(host)


def test_down_after_interrupted_up_without_state(clean_lab):
    """An `up` killed before it saved anything still leaves only marked objects: down finds them."""
    name = clean_lab
    spec = load_spec(overrides={"name": name, "pairs": 1, "vfs": 2, "dataplane": "none"})
    lab.up(spec)
    from dpulab.state import run_dir

    (run_dir(name) / "state.json").unlink()
    res = run_cli("down", "--name", name)
    assert res.returncode == 0
    assert not {n for n in netns_names() if n.startswith(name + "-")}


def test_big_lab(clean_lab):
    name = clean_lab
    res = run_cli("up", "--name", name, "--dataplane", "none", "--pairs", "8", "--vfs", "64")
    assert res.returncode == 0, res.stderr
    report = verify_json(name)
    assert report["ok"], [c for c in report["checks"] if not c["ok"]][:3]
    assert sum(1 for c in report["checks"] if c["check"] == "VF <-> representor peers") == 8


def test_commands_need_a_lab(lab_name):
    res = run_cli("verify", "--name", lab_name)
    assert res.returncode == 2 and "no lab named" in res.stderr
    res = run_cli("down", "--name", lab_name)
    assert res.returncode == 0
