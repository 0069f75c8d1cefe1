"""The kind engine's flow end to end, against a stand-in `kind`.

kind cannot run here: no registry, so no kindest/node image. tests/fixtures/fake-kind
stands in for it on PATH and makes real docker containers with kind's names, labels
and network (`kind`, docker-chosen addresses) from the config dpulab renders, so the
wiring into kind's nodes by pid, host isolation, Step 5's sysctls, verify and down all
run on real containers. What the stand-in cannot show is kubeadm inside the nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dpulab import namespaces
from dpulab.kindconfig import render_kind_config

from .docker_fixtures import (  # noqa: F401  (fixtures)
    IMAGE,
    docker_host,
    downed_after,
    dpulab,
    engine,
    inspect,
    new_name,
    one_line_error,
    run_options,
)

FAKE_KIND = Path(__file__).parent / "fixtures" / "fake-kind"


@pytest.fixture
def kind_env(docker_host, tmp_path) -> dict[str, str]:
    """`kind` on PATH is the stand-in; HOME is a temporary directory (kubeconfig ~/<name>.conf)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kind").symlink_to(FAKE_KIND)
    home = tmp_path / "home"
    home.mkdir()
    yield {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(home),
        "DPULAB_CONTAINER_ENGINE": "docker",
        "FAKE_KIND_IMAGE": IMAGE,
        # kind's nodes are privileged; the stand-in's get the same writable /proc/sys
        "FAKE_KIND_RUN_OPTIONS": " ".join([*run_options(), "--security-opt", "systempaths=unconfined"]),
        "FAKE_KIND_LOG": str(tmp_path / "kind.log"),
    }
    engine("docker", "network", "rm", "kind")  # kind leaves its network; this is the private daemon's


def kind_calls(env: dict[str, str]) -> list[list[str]]:
    try:
        return [json.loads(line)["argv"] for line in open(env["FAKE_KIND_LOG"])]
    except FileNotFoundError:
        return []


def sysctl_in(node: str, key: str) -> int:
    with namespaces.entered(str(namespaces.path(node))):
        return int(Path("/proc/sys/" + key.replace(".", "/")).read_text())


def test_kind_up_verify_up_again_down(kind_env):
    with downed_after(new_name("tkind"), "docker", kind_env, label="io.x-k8s.kind.cluster") as name:
        res = dpulab("up", "--engine", "kind", "--name", name, "--pairs", "2", "--vfs", "3", env=kind_env)
        assert res.returncode == 0, res.stderr
        (create,) = kind_calls(kind_env)
        config = create[create.index("--config") + 1]
        assert create[:4] == ["create", "cluster", "--name", name] and "--retain" in create
        assert create[create.index("--kubeconfig") + 1] == f"{kind_env['HOME']}/{name}.conf"
        assert create[create.index("--image") + 1] == "kindest/node:v1.34.0"
        assert Path(config).read_text() == render_kind_config(pairs=2, pod_cidr="10.244.0.0/16", image="kindest/node:v1.34.0")

        report = json.loads(dpulab("verify", "--name", name, "--json", env=kind_env).stdout)
        assert report["ok"], [c for c in report["checks"] if not c["ok"]]
        reach = [c for c in report["checks"] if c["check"] == "cluster reach"]
        cp_ip = inspect("docker", f"{name}-control-plane")["NetworkSettings"]["Networks"]["kind"]["IPAddress"]
        assert len(reach) == 2 and all(c["ok"] for c in reach)
        assert all(c["ok"] and cp_ip in c["detail"] for c in report["checks"] if c["check"] == "host isolated")

        for host in (f"{name}-worker", f"{name}-worker3"):
            assert not inspect("docker", host)["NetworkSettings"]["Networks"], "hosts are off kind's network"
        for node in (f"{name}-control-plane", f"{name}-worker", f"{name}-worker4"):
            assert sysctl_in(node, "net.ipv6.conf.all.forwarding") == 1
            assert sysctl_in(node, "net.ipv6.conf.all.disable_ipv6") == 0
        assert sysctl_in(f"{name}-worker", "fs.inotify.max_user_watches") >= 524288

        again = dpulab("up", "--name", name, env=kind_env)
        assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout + again.stderr
        assert len(kind_calls(kind_env)) == 1, "no second `kind create`"
    delete = kind_calls(kind_env)[-1]
    assert delete[:4] == ["delete", "cluster", "--name", name]
    assert not Path(kind_env["HOME"], f"{name}.conf").exists()


def test_kind_cluster_not_ours_is_left_alone(kind_env, tmp_path):
    name = new_name("tkind")
    config = tmp_path / "kind.yaml"
    config.write_text(render_kind_config(pairs=1))
    kind = [str(FAKE_KIND), "create", "cluster", "--name", name, "--config", str(config), "--kubeconfig", str(tmp_path / "kc")]
    subprocess.run(kind, check=True, env={**os.environ, **kind_env})
    try:
        res = dpulab("up", "--engine", "kind", "--name", name, "--pairs", "1", "--dataplane", "none", env=kind_env)
        assert "was not made by dpulab" in one_line_error(res) and res.returncode == 3
        assert dpulab("down", "--name", name, env=kind_env).returncode == 0
        assert inspect("docker", f"{name}-control-plane")["State"]["Running"], "`down` leaves a foreign cluster alone"
        assert not namespaces.exists(f"{name}-worker")
    finally:
        subprocess.run([str(FAKE_KIND), "delete", "cluster", "--name", name], env={**os.environ, **kind_env})


def test_kind_missing_and_dead_node_are_one_line(kind_env, tmp_path):
    docker_only = tmp_path / "docker-only"
    docker_only.mkdir()
    (docker_only / "docker").symlink_to(shutil.which("docker"))
    with downed_after(new_name("tkind"), "docker", kind_env, label="io.x-k8s.kind.cluster") as name:
        args = ("up", "--engine", "kind", "--name", name, "--pairs", "1", "--vfs", "1", "--dataplane", "none")
        line = one_line_error(dpulab(*args, env={**kind_env, "PATH": str(docker_only)}))
        assert "kind is not installed" in line
        assert dpulab(*args, env=kind_env).returncode == 0
        subprocess.run(["docker", "kill", f"{name}-worker2"], check=True, capture_output=True)
        line = one_line_error(dpulab("verify", "--name", name, env=kind_env))
        assert f"{name}-worker2 has exited" in line and "dpulab down" in line


def test_image_build_and_load(kind_env, tmp_path):
    """Steps 6-7 on request: upstream's make target with the engine in use, then `kind load`."""
    src = tmp_path / "ovn-kubernetes"
    (src / "dist" / "images").mkdir(parents=True)
    (src / "dist" / "images" / "Makefile").write_text(
        "fedora-image:\n\techo 'IMAGE=$(IMAGE) OCI_BIN=$(OCI_BIN) OVN_REPO=[$(OVN_REPO)] OVN_GITREF=[$(OVN_GITREF)]' > built\n"
    )
    res = dpulab("image", "build", "--ovnk-src", str(src), "--image", IMAGE, env=kind_env)
    assert res.returncode == 0, res.stderr
    built = (src / "dist" / "images" / "built").read_text().strip()
    assert built == f"IMAGE={IMAGE} OCI_BIN=docker OVN_REPO=[] OVN_GITREF=[]"
    assert "not an ovn-kubernetes checkout" in one_line_error(dpulab("image", "build", "--ovnk-src", str(tmp_path), env=kind_env))

    with downed_after(new_name("tkind"), "docker", kind_env, label="io.x-k8s.kind.cluster") as name:
        up = dpulab("up", "--engine", "kind", "--name", name, "--pairs", "1", "--vfs", "1", "--dataplane", "none", env=kind_env)
        assert up.returncode == 0, up.stderr
        res = dpulab("image", "load", "--name", name, "--image", IMAGE, env=kind_env)
        assert res.returncode == 0, res.stderr
        assert kind_calls(kind_env)[-1] == ["load", "docker-image", IMAGE, "--name", name]
        line = one_line_error(dpulab("image", "load", "--name", name, "--image", "dpulab-no-such:image", env=kind_env))
        assert "image dpulab-no-such:image is not in docker" in line
