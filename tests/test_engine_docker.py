"""The docker and podman engines on real containers: up, verify, up again, down, leaks,
ownership, and the errors a user must be able to act on."""

from __future__ import annotations

import json
import subprocess

import pytest

from dpulab import namespaces

from .conftest import needs_root

from .conftest import ifindexes
from .docker_fixtures import (  # noqa: F401  (fixtures)
    IMAGE,
    docker_host,
    downed_after,
    dpulab,
    engine,
    inspect,
    lab_file,
    new_name,
    one_line_error,
    ours,
    podman_ready,
    run_options,
)


def verify_ok(name: str) -> dict:
    res = dpulab("verify", "--name", name, "--json")
    report = json.loads(res.stdout)
    assert report["ok"] and res.returncode == 0, [c for c in report["checks"] if not c["ok"]]
    return report


@pytest.fixture(params=["docker", "podman"])
def binary(request) -> str:
    request.getfixturevalue("docker_host" if request.param == "docker" else "podman_ready")
    return request.param


def test_up_verify_up_again_down(binary, tmp_path):
    """The whole life of a lab; `down` (in downed_after) must leave nothing behind."""
    with downed_after(new_name("tdock"), binary) as name:
        f = lab_file(tmp_path, name, binary, pairs=2, vfs=3)
        res = dpulab("up", "-f", str(f))
        assert res.returncode == 0, res.stderr
        report = verify_ok(name)
        isolated = [c for c in report["checks"] if c["check"] == "host isolated"]
        assert len(isolated) == 2 and all(c["ok"] for c in isolated)

        hosts, dpus = [f"{name}-worker", f"{name}-worker3"], [f"{name}-worker2", f"{name}-worker4"]
        for node in [f"{name}-control-plane", *hosts, *dpus]:
            labels = inspect(binary, node)["Config"]["Labels"]
            assert labels["dpulab.lab"] == name and labels["dpulab.node"] == node
        for host in hosts:
            assert set(inspect(binary, host)["NetworkSettings"].get("Networks") or {}) <= {"none"}, "a host is on no network"
            assert set(ifindexes(host)) == {"lo", "eth0-0", "eth0-1", "eth0-2"}, "a host has exactly its VFs"
        assert set(ifindexes(dpus[1])) == {"lo", "eth0", "rep1-0", "rep1-1", "rep1-2"}
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        assert all(n in listed for n in hosts + dpus), "nodes visible to `ip netns`"
        assert ours(binary, "network", f"dpulab.lab={name}") == [f"dpulab-{name}"]

        before = {n: (inspect(binary, n)["Id"], ifindexes(n)) for n in hosts + dpus}
        again = dpulab("up", "--name", name)
        assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr
        assert {n: (inspect(binary, n)["Id"], ifindexes(n)) for n in before} == before


def test_converge_keeps_what_is_right(docker_host, tmp_path):
    """More pairs and VFs add just those; fewer remove just those; changed settings replace nodes."""
    with downed_after(new_name("tdock"), "docker") as name:
        f = lab_file(tmp_path, name, "docker", pairs=1, vfs=2)
        assert dpulab("up", "-f", str(f)).returncode == 0
        first = {n: inspect("docker", n)["Id"] for n in (f"{name}-worker", f"{name}-worker2")}
        res = dpulab("up", "--name", name, "--pairs", "2", "--vfs", "3")
        assert res.returncode == 0, res.stderr
        assert {n: inspect("docker", n)["Id"] for n in first} == first, "existing nodes kept"
        assert set(ifindexes(f"{name}-worker3")) == {"lo", "eth0-0", "eth0-1", "eth0-2"}
        verify_ok(name)
        assert dpulab("up", "--name", name, "--pairs", "1").returncode == 0
        assert engine("docker", "inspect", f"{name}-worker3").returncode != 0, "surplus node removed"
        assert not namespaces.exists(f"{name}-worker4")
        changed = lab_file(tmp_path, name, "docker", pairs=1, vfs=3,
                           containers={"run_options": [*run_options(), "--cap-add", "NET_ADMIN"]})
        res = dpulab("up", "-f", str(changed))
        assert res.returncode == 0, res.stderr
        assert inspect("docker", f"{name}-worker")["Id"] != first[f"{name}-worker"], "new run options: node replaced"
        verify_ok(name)


def test_dead_node_is_one_line_and_up_rewires_it(docker_host, tmp_path):
    with downed_after(new_name("tdock"), "docker") as name:
        assert dpulab("up", "-f", str(lab_file(tmp_path, name, "docker"))).returncode == 0
        dpu = f"{name}-worker2"
        subprocess.run(["docker", "kill", dpu], check=True, capture_output=True)
        for cmd in (("verify", "--name", name), ("up", "--name", name)):
            line = one_line_error(dpulab(*cmd))
            assert f"node container {dpu} has exited" in line and "docker start" in line
        subprocess.run(["docker", "start", dpu], check=True, capture_output=True)
        res = dpulab("up", "--name", name)
        assert res.returncode == 0, res.stderr
        assert "create link" in res.stdout, "the restarted node's links were made anew"
        verify_ok(name)


def test_foreign_container_and_network_are_left_alone(docker_host, tmp_path):
    name = new_name("tdock")
    node = f"{name}-worker"
    subprocess.run(["docker", "run", "-d", "--name", node, "--network", "none", "--entrypoint", "sleep", IMAGE, "infinity"],
                   check=True, capture_output=True)
    try:
        with downed_after(name, "docker"):
            res = dpulab("up", "-f", str(lab_file(tmp_path, name, "docker")))
            assert "not part of lab" in one_line_error(res) and res.returncode == 3
            assert not ours("docker", "ps", f"dpulab.lab={name}"), "nothing made"
        assert inspect("docker", node)["State"]["Running"], "`down` left the foreign container alone"
    finally:
        subprocess.run(["docker", "rm", "-f", node], capture_output=True)


def test_missing_image_is_one_line(docker_host, tmp_path):
    with downed_after(new_name("tdock"), "docker") as name:
        f = lab_file(tmp_path, name, "docker", containers={"image": "dpulab-no-such-image:none"})
        line = one_line_error(dpulab("up", "-f", str(f)))
        assert "image dpulab-no-such-image:none is not in docker and cannot be pulled" in line


@needs_root
def test_engine_missing_or_not_running_is_one_line(tmp_path):
    name = new_name("tdock")
    f = lab_file(tmp_path, name, "docker")
    try:
        line = one_line_error(dpulab("up", "-f", str(f), env={"PATH": str(tmp_path)}))
        assert "docker is not installed" in line
        line = one_line_error(dpulab("up", "-f", str(f), env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"}))
        assert "docker is not running or not reachable" in line
    finally:
        dpulab("down", "--name", name)  # no state was saved: only the run directory's lock is left
