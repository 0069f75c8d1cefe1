"""The whole spec in one command: `dpulab up --engine kind --ovnk-src|--ovnk-rendered`, and
the `ovnk` commands reading a lab's stored spec.

Two stand-ins, because neither kind nor a Kubernetes API server can run on this machine
(no registry: no kindest/node image, so no kubelet or kube-apiserver):
- tests/fixtures/fake-kind is `kind` on PATH: it makes real containers (the private
  dockerd of docker_fixtures) with kind's names, labels and network, so Steps 1-5 (and
  6-7's `kind load`, 8's API URL discovery) run for real on them;
- `LabCluster` stands in at the deploy's Kubernetes client boundary (ovnk/deploy.py's
  `Cluster`): it records every call, keeps what server-side apply, labels, taints and the
  DaemonSet patch leave behind, and schedules pods from the applied DaemonSets the way the
  kubelet would (node selectors and affinity; isolated hosts' pods stay Pending).
What only a real cluster can show (kubeadm, images pulled, OVN-K's own behaviour) is not
tested here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dpulab import namespaces
from dpulab.errors import InputError
from dpulab.ovnk.options import OvnkOptions
from dpulab.spec import load_spec
from dpulab.state import LabState

from .conftest import needs_root, run_cli
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
)
from .test_engine_kind import kind_calls, kind_env  # noqa: F401  (fixture)
from .test_ovnk_deploy import NETPOL, RecordingCluster, crd

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ovnk-upstream"
RENDERED = FIXTURES / "manifests"
runner = CliRunner()

FAKE_DAEMONSET_SH = """#!/bin/bash
# stand-in for upstream's daemonset.sh: records its flags, writes upstream's own render
printf '%s\\n' "$@" > "$DAEMONSET_RECORD"
out="${1#--output-directory=}"
cp "$DAEMONSET_RENDER"/*.yaml "$out"/
"""
# Step 6 stand-in: the "built" image is the node image under the lab's image name
FAKE_MAKEFILE = f"fedora-image:\n\t$(OCI_BIN) tag {IMAGE} $(IMAGE)\n\techo 'OCI_BIN=$(OCI_BIN) OVN_REPO=[$(OVN_REPO)]' > built\n"


# --- the Kubernetes API stand-in ------------------------------------------------


def _matches(labels: dict, term: dict) -> bool:
    for e in term.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "DoesNotExist" and key in labels or op == "Exists" and key not in labels:
            return False
        if op == "In" and labels.get(key) not in values or op == "NotIn" and labels.get(key) in values:
            return False
    return True


def schedulable(pod_spec: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")) or {}
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(_matches(labels, t) for t in terms)


class LabCluster(RecordingCluster):
    """RecordingCluster for a lab's own node names, plus the pods the kubelets would run."""

    def __init__(self, nodes: dict[str, str]):
        super().__init__()
        self.roles = nodes
        self.labels = {n: {"kubernetes.io/hostname": n, "kubernetes.io/os": "linux"} for n in nodes}
        cp = next(n for n, r in nodes.items() if r == "control-plane")
        self.labels[cp]["node-role.kubernetes.io/control-plane"] = ""
        self.taints = {cp: {("node-role.kubernetes.io/control-plane", "NoSchedule")}}

    def status_inputs(self):
        self.calls.append(("status",))
        pods = []
        for (api, kind, ns, name), doc in self.applied.items():
            if kind not in ("DaemonSet", "Deployment") or ns != "ovn-kubernetes":
                continue
            template = doc["spec"]["template"]
            on = [n for n in self.roles if schedulable(template["spec"], self.labels[n])]
            for node in on if kind == "DaemonSet" else on[:1]:
                phase = "Pending" if self.roles[node] == "host" else "Running"
                pods.append({"metadata": {"name": f"{name}-{node}", "labels": template["metadata"]["labels"],
                                          "creationTimestamp": "2026-01-01T00:00:00Z"},
                             "spec": {"nodeName": node}, "status": {"phase": phase}})  # fmt: skip
        nodes = [{"metadata": {"name": n, "labels": self.labels[n]},
                  "status": {"conditions": [{"type": "Ready", "status": "False" if r == "host" else "True"}]}}
                 for n, r in self.roles.items()]  # fmt: skip
        return pods, nodes, []


def lab_roles(name: str, pairs: int) -> dict[str, str]:
    from dpulab.kindconfig import lab_nodes

    return lab_nodes(name, pairs).roles()


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture
def kind_here(kind_env, monkeypatch):
    """kind_env in this process (the flow runs in-process, where the API stand-in lives)."""
    for key, value in kind_env.items():
        monkeypatch.setenv(key, value)
    return kind_env


@pytest.fixture
def crds_dir(tmp_path) -> Path:
    out = tmp_path / "crds"
    out.mkdir()
    for name, plural in zip(NETPOL, ("adminnetworkpolicies", "baselineadminnetworkpolicies")):
        (out / name).write_text(yaml.safe_dump(crd(plural)))
    return out


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    """An ovn-kubernetes checkout of stand-ins: daemonset.sh (Step 8) and the image Makefile (Step 6)."""
    images = tmp_path / "ovn-kubernetes" / "dist" / "images"
    images.mkdir(parents=True)
    (images / "daemonset.sh").write_text(FAKE_DAEMONSET_SH)
    (images / "Makefile").write_text(FAKE_MAKEFILE)
    monkeypatch.setenv("DAEMONSET_RECORD", str(tmp_path / "daemonset-argv"))
    monkeypatch.setenv("DAEMONSET_RENDER", str(RENDERED))
    return tmp_path / "ovn-kubernetes"


def cli(*args: str):
    from dpulab.cli import app

    return runner.invoke(app, list(args))


# --- up: the whole spec ---------------------------------------------------------------


def test_up_runs_the_whole_spec_in_one_command(kind_here, checkout, crds_dir, tmp_path, monkeypatch):
    name = new_name("tovk")
    image = f"localhost/dpulab-ovnk-{name}:dev"
    roles = lab_roles(name, 2)
    cluster = LabCluster(roles)
    monkeypatch.setattr("dpulab.ovnk.deploy.KubeCluster", lambda kubeconfig: cluster)
    f = lab_file(tmp_path, name, "kind", pairs=2, vfs=3, ovnk={"image": image})
    try:
        with downed_after(name, "docker", kind_here, label="io.x-k8s.kind.cluster"):
            res = cli("up", "-f", str(f), "--ovnk-src", str(checkout), "--build-image", "--crds-dir", str(crds_dir))
            assert res.exit_code == 0, (res.output, res.exception)

            # Steps 1-3 then 6-8 against kind, in the spec's order
            calls = kind_calls(kind_here)
            assert [c[:2] for c in calls] == [["create", "cluster"], ["load", "docker-image"], ["get", "kubeconfig"]]
            assert calls[1] == ["load", "docker-image", image, "--name", name]
            assert calls[2] == ["get", "kubeconfig", "--internal", "--name", name]
            assert (checkout / "dist" / "images" / "built").read_text().strip() == "OCI_BIN=docker OVN_REPO=[]"
            cp_ip = inspect("docker", f"{name}-control-plane")["NetworkSettings"]["Networks"]["kind"]["IPAddress"]
            argv = (tmp_path / "daemonset-argv").read_text().splitlines()
            out_dir = argv[0].removeprefix("--output-directory=")
            assert argv == OvnkOptions(image=image).daemonset_args(f"https://{cp_ip}:6443", out_dir)

            # Steps 9-16 on the lab's own nodes, the interconnect DPU DaemonSet
            cp, hosts = f"{name}-control-plane", [f"{name}-worker", f"{name}-worker3"]
            dpus = [f"{name}-worker2", f"{name}-worker4"]
            assert ("wait-pods", "name=ovnkube-node", [cp, *dpus]) in cluster.calls
            assert cluster.calls[-2:] == [("wait-pods", "name=ovnkube-node-dpu", dpus), ("status",)]
            assert all(cluster.labels[h]["k8s.ovn.org/dpu-host"] == "" for h in hosts)
            assert all(cluster.labels[n]["k8s.ovn.org/zone-name"] == n for n in roles)
            dpu_ds = cluster.applied[("apps/v1", "DaemonSet", "ovn-kubernetes", "ovnkube-node-dpu")]
            assert "nb-ovsdb" in [c["name"] for c in dpu_ds["spec"]["template"]["spec"]["containers"]]
            state = LabState.load(name)
            manifests = Path(state.data["ovnk"]["manifests"])
            assert manifests.parent == state.dir and (manifests / "ovnkube-single-node-zone-dpu.yaml").is_file()
            assert state.data["ovnk"]["deployed"] and state.data["ovnk"]["interconnect"] is True

            # then `ovnk status`: every node as the spec expects (isolated hosts Pending)
            lines = res.stdout.splitlines()
            summary = next(i for i, line in enumerate(lines) if line.startswith(f"ovnk on {name}: "))
            rows = lines[summary + 1 :]
            assert rows and all(r.startswith("ok  ") for r in rows), rows
            assert {r.split()[1] for r in rows} == set(roles)
            assert any(h in r and "ovnkube-node-dpu-host" in r and "Pending" in r for h in hosts for r in rows)

            # the lab is as the spec says; again, nothing changes
            before = len(cluster.calls)
            again = cli("up", "--name", name, "--ovnk-src", str(checkout), "--crds-dir", str(crds_dir))
            assert again.exit_code == 0, again.output
            assert "nothing changed" in again.stdout and f"ovnk on {name}: 0 changed" in again.stdout
            assert ("status",) in cluster.calls[before:]
            assert len(kind_calls(kind_here)) == 4, "no second create or load: just the API URL again"
    finally:
        engine("docker", "rmi", image)


def test_verify_allows_what_ovnk_adds_on_kind_only(kind_here, crds_dir, tmp_path, monkeypatch):
    """verify on a kind lab: OVN-K's interfaces are flagged until OVN-K is deployed, then allowed;
    the management VF renamed ovn-k8s-mp0 is still proven to be the lab's veth."""
    name = new_name("tovk")
    cluster = LabCluster(lab_roles(name, 1))
    monkeypatch.setattr("dpulab.ovnk.deploy.KubeCluster", lambda kubeconfig: cluster)
    f = lab_file(tmp_path, name, "kind", pairs=1, vfs=3)
    with downed_after(name, "docker", kind_here, label="io.x-k8s.kind.cluster"):
        assert cli("up", "-f", str(f)).exit_code == 0
        host, dpu = f"{name}-worker", f"{name}-worker2"
        ovnk_like(host, dpu)

        def failed() -> dict[str, str]:
            report = json.loads(run_cli("verify", "--name", name, "--json").stdout)
            return {c["check"]: c["detail"] for c in report["checks"] if not c["ok"]}

        bad = failed()
        assert set(bad) == {"dpu interfaces", "host interfaces", "VF <-> representor peers"}, bad
        assert "unexpected: 0123456789abcde, br-int, breth0, genev_sys_6081" in bad["dpu interfaces"]
        assert "missing: eth0-1" in bad["host interfaces"]
        res = cli("up", "--name", name, "--ovnk-rendered", str(RENDERED), "--crds-dir", str(crds_dir))
        assert res.exit_code == 0, res.output
        assert failed() == {}
        # what OVN-K does not explain is still found: an interface of no one's, a representor gone
        ip(dpu, "link", "add", "stray0", "type", "bridge")
        ip(dpu, "link", "del", "rep0-2")
        bad = failed()
        assert "unexpected: stray0" in bad["dpu interfaces"] and "missing: rep0-2" in bad["dpu interfaces"]
        assert "not paired: eth0-2" in bad["VF <-> representor peers"]


def ovnk_like(host: str, dpu: str) -> None:
    """What OVN-Kubernetes leaves in the nodes: OVS devices, the gateway bridge, a pod's veth,
    and the management VF (eth0-1 <-> its representor) renamed ovn-k8s-mp0 at both ends."""
    ip(dpu, "link", "add", "br-int", "type", "bridge")
    ip(dpu, "link", "add", "breth0", "type", "bridge")
    ip(dpu, "link", "add", "genev_sys_6081", "type", "bridge")
    ip(dpu, "link", "add", "0123456789abcde", "type", "bridge")  # a pod veth's host end: containerID[:15]
    for node, old in ((dpu, "rep0-1"), (host, "eth0-1")):
        ip(node, "link", "set", old, "down")
        ip(node, "link", "set", old, "name", "ovn-k8s-mp0")
        ip(node, "link", "set", "ovn-k8s-mp0", "up")


def ip(node: str, *args: str) -> None:
    subprocess.run(["ip", "-n", node, *args], check=True, capture_output=True)


@needs_root
def test_netns_labs_allow_nothing_more(lab_name, tmp_path):
    """The same interfaces in a netns lab (no OVN-K, no data plane) are still flagged."""
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump({"name": lab_name, "pairs": 1, "vfs": 3, "dataplane": "none"}))
    try:
        assert run_cli("up", "-f", str(f)).returncode == 0
        ovnk_like(f"{lab_name}-worker", f"{lab_name}-worker2")
        report = json.loads(run_cli("verify", "--name", lab_name, "--json").stdout)
        bad = {c["check"] for c in report["checks"] if not c["ok"]}
        assert {"dpu interfaces", "host interfaces", "VF <-> representor peers"} <= bad
    finally:
        assert run_cli("down", "--name", lab_name).returncode == 0
        assert not namespaces.exists(f"{lab_name}-worker")


# --- the ovnk commands on a lab ---------------------------------------------------------


def test_ovnk_commands_read_the_labs_spec(kind_here, crds_dir, tmp_path, monkeypatch):
    """`ovnk manifests|deploy|status --name`: options, pairs, node names and kubeconfig from the lab."""
    name = new_name("tovk")
    roles = lab_roles(name, 1)
    cluster = LabCluster(roles)
    asked = []
    monkeypatch.setattr("dpulab.ovnk.deploy.KubeCluster", lambda kubeconfig: asked.append(kubeconfig) or cluster)
    f = lab_file(tmp_path, name, "kind", pairs=1, vfs=2, naming="ovnk", ovnk={"representor_mode": "simulate-dpu", "mtu": 1500})
    with downed_after(name, "docker", kind_here, label="io.x-k8s.kind.cluster"):
        assert cli("up", "-f", str(f)).exit_code == 0
        out = tmp_path / "manifests"
        res = cli("ovnk", "manifests", "--name", name, "--rendered", str(RENDERED), "--out", str(out))
        assert res.exit_code == 0 and "representor mode simulate-dpu" in res.stdout, res.output
        assert "OVN_SIMULATE_DPU" in (out / "ovnkube-single-node-zone-dpu.yaml").read_text()

        res = cli("ovnk", "deploy", "--name", name, "--rendered", str(RENDERED), "--crds-dir", str(crds_dir))
        assert res.exit_code == 0, (res.output, res.exception)
        assert asked == [Path(kind_here["HOME"]) / f"{name}.conf"]
        assert cluster.calls[-2][:2] == ("wait-pods", "name=ovnkube-node-dpu") and cluster.calls[-2][2] == [f"{name}-worker2"]
        assert LabState.load(name).data["ovnk"]["representor_mode"] == "simulate-dpu"

        monkeypatch.setattr("dpulab.ovnk.status.fetch_status_inputs", lambda kubeconfig: cluster.status_inputs())
        res = cli("ovnk", "status", "--name", name, "--json")
        assert res.exit_code == 0, res.output
        assert {r["node"] for r in json.loads(res.stdout)} == set(roles)

        # flags over the lab: a mode its names do not allow is refused; pairs must be the lab's
        line = one_line_error(dpulab("ovnk", "deploy", "--name", name, "--rendered", str(RENDERED), "--pairs", "3"))
        assert "has 1 pairs, not 3" in line
        res = cli("ovnk", "deploy", "--name", name, "--rendered", str(RENDERED), "--representor-mode", "veth",
                  "--crds-dir", str(crds_dir))  # fmt: skip
        assert res.exit_code == 0 and LabState.load(name).spec.ovnk.representor_mode == "veth", res.output


@needs_root
def test_ovnk_commands_refuse_a_lab_on_another_engine(lab_name, tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump({"name": lab_name, "pairs": 1, "vfs": 2, "dataplane": "none"}))
    try:
        assert run_cli("up", "-f", str(f)).returncode == 0
        line = one_line_error(run_cli("ovnk", "status", "--name", lab_name))
        assert "runs on engine netns" in line
    finally:
        run_cli("down", "--name", lab_name)


def test_up_with_ovnk_refuses_wrong_input_before_making_anything(kind_env, checkout, tmp_path):
    name = new_name("tovk")
    cases = [
        (("--ovnk-rendered", str(RENDERED)), {"engine": None}, "use --engine kind"),
        (("--build-image", "--ovnk-rendered", str(RENDERED)), {}, "--build-image builds from an ovn-kubernetes checkout"),
        (("--ovnk-src", str(tmp_path)), {}, "has no dist/images/daemonset.sh"),
        (("--ovnk-src", str(checkout), "--ovnk-rendered", str(RENDERED)), {}, "exactly one of --ovnk-src or --ovnk-rendered"),
        (("--ovnk-rendered", str(tmp_path / "nope")), {}, "does not exist"),
        (("--ovnk-rendered", str(RENDERED), "--crds-dir", str(tmp_path)), {}, "lacks policy.networking.k8s.io_"),
    ]
    for args, how, words in cases:
        engine_args = () if "engine" in how else ("--engine", "kind")
        line = one_line_error(dpulab("up", "--name", name, "--pairs", "1", *engine_args, *args, env=kind_env))
        assert words in line, line
    assert kind_calls(kind_env) == [], "no cluster was made"
    assert not Path(f"/run/dpulab/{name}").exists()


# --- the lab spec: simulate-dpu needs upstream's names -------------------------------------


@pytest.mark.parametrize(
    "settings, ok",
    [
        ({}, False),  # naming seed: rep1-<i> on the second DPU
        ({"naming": "ovnk"}, True),
        ({"names": {"rep": "rep{pf}-{vf}"}}, True),
        ({"pairs": 1}, True),  # one DPU: rep0-<i> even with seed naming
        ({"names": {"rep": "pf{pf}vf{vf}"}}, False),  # a BlueField-like name upstream's simulation does not look up
        ({"naming": "ovnk", "names": {"rep": "r{pair}-{vf}"}}, False),
        ({"naming": "ovnk", "names": {"vf": "vf{vf}"}}, False),  # host VFs: pf/vf read from '0-<vf>'
    ],
)
def test_simulate_dpu_needs_upstreams_representor_names(settings, ok):
    data = {"ovnk": {"representor_mode": "simulate-dpu"}, **settings}
    if ok:
        load_spec(None, data)
        return
    with pytest.raises(InputError) as e:
        load_spec(None, data)
    assert "\n" not in str(e.value) and "simulate-dpu" in str(e.value)
    if not settings:
        assert "DPU 1 would have 'rep1-0': use naming: ovnk" in str(e.value)


def test_veth_mode_keeps_the_specs_names():
    assert load_spec(None, {"ovnk": {"representor_mode": "veth"}}).naming == "seed"


def test_simulate_dpu_lab_file_error_is_one_line(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text(yaml.safe_dump({"name": "tsim", "ovnk": {"representor_mode": "simulate-dpu"}}))
    line = one_line_error(dpulab("plan", "-f", str(f)))
    assert "rep0-<vf>" in line and "naming: ovnk" in line


def test_helper_scheduling_matches_the_fixtures():
    """The stand-in schedules as the kubelet would: full-mode ovnkube-node leaves labelled DPUs."""
    (ds,) = [d for d in yaml.safe_load_all((RENDERED / "ovnkube-single-node-zone.yaml").read_text()) if d and d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    assert schedulable(spec, {"kubernetes.io/os": "linux"})
    assert not schedulable(spec, {"kubernetes.io/os": "linux", "k8s.ovn.org/dpu": ""})
