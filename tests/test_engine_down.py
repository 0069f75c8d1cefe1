"""`dpulab down` without a state file (a reboot wiped /run): a container or kind lab's
objects are found by their marks, asked of every container engine that answers.

kind is the stand-in of tests/fixtures/fake-kind (no kindest/node image here); docker is
the private dockerd of docker_fixtures, podman the machine's where it can run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dpulab import namespaces
from dpulab.state import run_dir

from .docker_fixtures import (  # noqa: F401  (fixtures)
    docker_host,
    downed_after,
    dpulab,
    engine,
    inspect,
    lab_file,
    new_name,
    ours,
    podman_ready,
)
from .test_engine_kind import kind_calls, kind_env  # noqa: F401  (fixture)


@pytest.fixture(params=["docker", "podman"])
def binary(request) -> str:
    request.getfixturevalue("docker_host" if request.param == "docker" else "podman_ready")
    return request.param


def forget(name: str, nodes: list[str]) -> None:
    """What a reboot takes: the run directory (/run is a tmpfs) and the /run/netns links."""
    shutil.rmtree(run_dir(name))
    for node in nodes:
        if namespaces.path(node).is_symlink():
            namespaces.path(node).unlink()


def test_down_without_state_finds_containers_and_network_by_label(binary, tmp_path):
    with downed_after(new_name("tdown"), binary) as name:
        assert dpulab("up", "-f", str(lab_file(tmp_path, name, binary))).returncode == 0
        nodes = ours(binary, "ps", f"dpulab.lab={name}")
        assert len(nodes) == 3 and ours(binary, "network", f"dpulab.lab={name}") == [f"dpulab-{name}"]
        forget(name, nodes)
        res = dpulab("down", "--name", name)
        assert res.returncode == 0, res.stderr
        assert "removed 4" in res.stdout, res.stdout  # three containers and the network
        assert not ours(binary, "ps", f"dpulab.lab={name}")


def test_down_without_state_finds_a_kind_cluster_by_its_nodes_mark(kind_env):
    """After a reboot a node's `lo` alias is gone with its namespace: the file in the node remains."""
    name = new_name("tdown")
    with downed_after(name, "docker", kind_env, label="io.x-k8s.kind.cluster"):
        up = dpulab("up", "--engine", "kind", "--name", name, "--pairs", "1", "--vfs", "1", env=kind_env)
        assert up.returncode == 0, up.stderr
        nodes = [f"{name}-control-plane", f"{name}-worker", f"{name}-worker2"]
        for node in nodes:
            subprocess.run(["ip", "-n", node, "link", "set", "lo", "alias", ""], check=True)
        forget(name, nodes)
        res = dpulab("down", "--name", name, env=kind_env)
        assert res.returncode == 0, res.stderr
        assert kind_calls(kind_env)[-1][:4] == ["delete", "cluster", "--name", name]
        assert engine("docker", "inspect", f"{name}-control-plane").returncode != 0


def test_down_without_state_leaves_an_unmarked_kind_cluster(kind_env, tmp_path):
    """Same name, kind's labels, but not ours (never marked): `down` leaves it alone."""
    from dpulab.kindconfig import render_kind_config

    from .test_engine_kind import FAKE_KIND

    name = new_name("tdown")
    config = tmp_path / "kind.yaml"
    config.write_text(render_kind_config(pairs=1))
    create = [str(FAKE_KIND), "create", "cluster", "--name", name, "--config", str(config), "--kubeconfig", str(tmp_path / "kc")]
    env = {**os.environ, **kind_env}
    subprocess.run(create, check=True, env=env)
    try:
        res = dpulab("down", "--name", name, env=kind_env)
        assert res.returncode == 0 and "nothing of it was left" in res.stdout, res.stdout + res.stderr
        assert inspect("docker", f"{name}-worker2")["State"]["Running"]
        assert not Path(f"/run/dpulab/{name}").exists()
    finally:
        subprocess.run([str(FAKE_KIND), "delete", "cluster", "--name", name], env=env)
