"""`dpulab kind` / `dpulab ovnk`: outputs, exit codes, and errors as one stderr line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from dpulab.cli_ovnk import kind_app, ovnk_app, register
from dpulab.kindconfig import render_kind_config

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ovnk-upstream"  # shared/ beside the repo
RENDERED = FIXTURES / "manifests"
runner = CliRunner()


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpulab: error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_kind_config_prints_the_rendered_yaml():
    result = runner.invoke(kind_app, ["config", "--pairs", "3", "--ip-family", "dual", "--log-level", "2"])
    assert result.exit_code == 0
    assert result.stdout == render_kind_config(pairs=3, ip_family="dual", log_level=2)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--pairs", "0"], "pairs"),
        (["--ip-family", "ipv5"], "ipv5"),
        (["--pod-cidr", "10.0.0.0/99"], "10.0.0.0/99"),
        (["--dns-domain", "-bad-"], "dns domain"),
    ],
)
def test_kind_config_bad_input(args, words):
    assert words in one_line_error(runner.invoke(kind_app, ["config", *args]))


def test_manifests_from_a_render(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(ovnk_app, ["manifests", "--rendered", str(RENDERED), "--out", str(out),
                                      "--representor-mode", "simulate-dpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{len(list(RENDERED.iterdir()))} files in {out}" in result.stdout
    # interconnect (the spec's Step 8): the DPU DaemonSet is the single-node-zone one
    assert "OVN_SIMULATE_DPU" in (out / "ovnkube-single-node-zone-dpu.yaml").read_text()
    assert (out / "ovnkube-node-dpu.yaml").read_bytes() == (RENDERED / "ovnkube-node-dpu.yaml").read_bytes()


@pytest.mark.parametrize(
    "args, words, code",
    [
        ([], "exactly one of --ovnk-src or --rendered", 2),
        (["--rendered", "R", "--ovnk-src", "R"], "exactly one", 2),
        (["--rendered", "/nonexistent"], "does not exist", 2),
        (["--rendered", "R", "--representor-mode", "sriov"], "representor mode", 2),
        (["--ovnk-src", "/", "--api-url", "https://1.2.3.4:6443"], "April 2026", 2),
        (["--rendered", "R", "--api-url", "https://1.2.3.4:6443"], "--api-url is for rendering", 2),
    ],
)
def test_manifests_bad_input(tmp_path, args, words, code):
    args = [str(RENDERED) if a == "R" else a for a in args]
    result = runner.invoke(ovnk_app, ["manifests", "--out", str(tmp_path / "o"), *args])
    assert words in one_line_error(result, code)


def test_manifests_refuses_schema_invalid_output(tmp_path):
    bad = tmp_path / "rendered"
    bad.mkdir()
    for p in RENDERED.iterdir():
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "ovs-node.yaml").write_text((RENDERED / "ovs-node.yaml").read_text().replace("hostNetwork:", "hostNetwrok:"))
    line = one_line_error(runner.invoke(ovnk_app, ["manifests", "--rendered", str(bad), "--out", str(tmp_path / "o")]), 1)
    assert "schema error" in line and "ovs-node.yaml" in line


def test_deploy_needs_a_kubeconfig(tmp_path):
    result = runner.invoke(ovnk_app, ["deploy", "--rendered", str(RENDERED), "--kubeconfig", str(tmp_path / "none.conf")])
    assert "none.conf does not exist" in one_line_error(result)


def test_deploy_twice_through_the_cli(tmp_path, monkeypatch):
    """The CLI wiring with the recording stand-in API (no API server can run here)."""
    from tests.test_ovnk_deploy import NETPOL, RecordingCluster, crd

    cluster = RecordingCluster()
    monkeypatch.setattr("dpulab.ovnk.deploy.KubeCluster", lambda kubeconfig: cluster)
    crds = tmp_path / "crds"
    crds.mkdir()
    for name, plural in zip(NETPOL, ("adminnetworkpolicies", "baselineadminnetworkpolicies")):
        (crds / name).write_text(yaml.safe_dump(crd(plural)))
    args = ["deploy", "--rendered", str(RENDERED), "--crds-dir", str(crds)]
    first = runner.invoke(ovnk_app, args)
    assert first.exit_code == 0, first.output
    total = len(cluster.calls) - sum(c[0].startswith("wait") for c in cluster.calls)
    assert first.stdout.strip().splitlines()[-1] == f"deployed: {total - 1} changed, 1 unchanged"
    second = runner.invoke(ovnk_app, args)
    assert second.stdout.strip().splitlines()[-1] == f"deployed: 0 changed, {total} unchanged"


def test_status_json_and_exit_code(monkeypatch):
    from tests.test_ovnk_deploy import ALL_NODES, node, pod, step14_pods

    pods = step14_pods()
    monkeypatch.setattr("dpulab.ovnk.status.fetch_status_inputs", lambda kubeconfig: (pods, [node(n) for n in ALL_NODES], []))
    result = runner.invoke(ovnk_app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["node"] for r in rows} == set(ALL_NODES) and all(r["ok"] for r in rows)
    pods[5] = pod("node-dpu-worker2", "dpu-worker2", "Pending")
    result = runner.invoke(ovnk_app, ["status"])
    assert result.exit_code == 1
    (diff,) = [line for line in result.stdout.splitlines() if line.startswith("DIFF")]
    assert "dpu-worker2" in diff and "ovnkube-node" in diff


def test_helm_values(tmp_path):
    result = runner.invoke(ovnk_app, ["helm-values", "--out", str(tmp_path), "--api-url", "https://172.18.0.2:6443"])
    assert result.exit_code == 0, result.output
    host = yaml.safe_load((tmp_path / "values-dpu-host.yaml").read_text())
    dpu = yaml.safe_load((tmp_path / "values-dpu.yaml").read_text())
    assert host["global"]["simulateDpu"] is True and dpu["global"]["simulateDpu"] is True
    assert host["k8sAPIServer"] == dpu["global"]["dpuHostClusterK8sAPIServer"] == "https://172.18.0.2:6443"
    assert host["podNetwork"] == "10.244.0.0/16/24"
    assert host["ovnkube-node-dpu-host"]["nodeMgmtPortNetdev"] == "eth0-1"
    assert host["global"]["image"] == {"repository": "localhost/ovn-daemonset-fedora", "tag": "dev", "pullPolicy": "IfNotPresent"}


def test_register_adds_both_groups():
    app = typer.Typer()

    @app.command()
    def other() -> None:
        """Another command, as the main CLI has."""

    register(app)
    result = runner.invoke(app, ["kind", "config", "--pairs", "1"])
    assert result.exit_code == 0 and yaml.safe_load(result.stdout)["kind"] == "Cluster"
    assert runner.invoke(app, ["ovnk", "--help"]).exit_code == 0


def test_status_with_a_broken_kubeconfig(tmp_path):
    conf = tmp_path / "dpu.conf"
    conf.write_text("clusters: [\n")
    result = runner.invoke(ovnk_app, ["status", "--kubeconfig", str(conf)])
    assert "not valid YAML" in one_line_error(result)


def test_status_when_no_api_server_answers(tmp_path):
    """A kubeconfig pointing at a closed loopback port: the real client path, one line."""
    conf = tmp_path / "dpu.conf"
    conf.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))  # fmt: skip
    result = runner.invoke(ovnk_app, ["status", "--kubeconfig", str(conf)])
    assert "cannot reach the API server" in one_line_error(result, 1)
