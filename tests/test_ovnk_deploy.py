"""Deploy order, idempotency and errors; node status verdicts; API URL discovery.

No Kubernetes API server can run on this machine, so `RecordingCluster` stands in for one
at the deploy's client boundary (the `Cluster` interface): it records every call and keeps
what server-side apply, labels, taints and the DaemonSet patch would leave behind.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dpulab.errors import DpulabError, InputError
from dpulab.kindconfig import lab_nodes
from dpulab.ovnk.deploy import DeployTimeout, KubeCluster, api_url_from_kubeconfig, deploy
from dpulab.ovnk.manifests import derive_dpu_manifests
from dpulab.ovnk.options import OvnkOptions
from dpulab.ovnk.status import ovnk_status, pod_node

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ovnk-upstream"  # shared/ beside the repo
NODES = lab_nodes("dpu", 2)
CP, HOSTS, DPUS = NODES.control_plane, NODES.hosts, NODES.dpus
ALL_NODES = [CP, "dpu-worker", "dpu-worker2", "dpu-worker3", "dpu-worker4"]
NETPOL = ["policy.networking.k8s.io_adminnetworkpolicies.yaml", "policy.networking.k8s.io_baselineadminnetworkpolicies.yaml"]


class RecordingCluster:
    """The stand-in API: server-side-apply semantics (same intent = no change; fields set by
    the DaemonSet patch survive a re-apply), node labels and taints as data."""

    def __init__(self, stuck: str | None = None):
        self.applied: dict[tuple, dict] = {}
        self.patches: dict[tuple, list] = {}
        self.labels = {n: {"kubernetes.io/hostname": n} for n in ALL_NODES}
        self.taints = {CP: {("node-role.kubernetes.io/control-plane", "NoSchedule")}}
        self.calls: list[tuple] = []
        self.stuck = stuck  # a label selector whose pods never get Running

    def apply(self, doc):
        key = (doc["apiVersion"], doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        self.calls.append(("apply", f"{doc['kind']}/{doc['metadata']['name']}"))
        changed = self.applied.get(key) != doc
        self.applied[key] = copy.deepcopy(doc)
        return changed

    def label_node(self, node, labels):
        self.calls.append(("label", node, dict(labels)))
        if node not in self.labels:
            raise DpulabError(f"label node {node}: 404 not found")
        changed = any(self.labels[node].get(k) != v for k, v in labels.items())
        self.labels[node].update(labels)
        return changed

    def remove_taint(self, node, key, effect):
        self.calls.append(("untaint", node, key))
        present = (key, effect) in self.taints.get(node, set())
        self.taints.get(node, set()).discard((key, effect))
        return present

    def patch_daemonset(self, namespace, name, patch):
        self.calls.append(("patch", f"{namespace}/{name}"))
        key = ("apps/v1", "DaemonSet", namespace, name)
        if key not in self.applied:
            raise DpulabError(f"patch DaemonSet {namespace}/{name}: 404 not found")
        changed = self.patches.get(key) != patch
        self.patches[key] = copy.deepcopy(patch)
        return changed

    def wait_crds_established(self, names, timeout):
        self.calls.append(("wait-crds", len(names)))
        applied = {k[3] for k in self.applied if k[1] == "CustomResourceDefinition"}
        if not set(names) <= applied:
            raise DeployTimeout(f"CRDs never applied: {sorted(set(names) - applied)}")

    def wait_pods_running(self, namespace, label_selector, nodes, timeout):
        self.calls.append(("wait-pods", label_selector, list(nodes)))
        name = label_selector.removeprefix("name=")
        if ("apps/v1", "DaemonSet", namespace, name) not in self.applied or label_selector == self.stuck:
            raise DeployTimeout(f"timed out after {timeout:g} s waiting for {label_selector} pods Running")


def crd(plural: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.policy.networking.k8s.io"},
        "spec": {
            "group": "policy.networking.k8s.io",
            "names": {"kind": plural.title(), "plural": plural},
            "scope": "Cluster",
            "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                          "schema": {"openAPIV3Schema": {"type": "object"}}}],  # fmt: skip
        },
    }


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifests")
    derive_dpu_manifests(FIXTURES / "manifests", out, OvnkOptions())
    return out


@pytest.fixture(scope="module")
def crds_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crds")
    for name, plural in zip(NETPOL, ("adminnetworkpolicies", "baselineadminnetworkpolicies")):
        (out / name).write_text(yaml.safe_dump(crd(plural)))
    return out


def targets(directory: Path, *files: str) -> list[tuple]:
    return [
        ("apply", f"{d['kind']}/{d['metadata']['name']}")
        for f in files
        for d in yaml.safe_load_all((directory / f).read_text())
        if d
    ]


def run(cluster, manifests, crds_dir, **kw):
    return deploy(cluster, manifests, control_plane=CP, hosts=HOSTS, dpus=DPUS, crds_dir=crds_dir, **kw)


def test_deploy_follows_the_specs_order(manifests, crds_dir):
    cluster = RecordingCluster()
    run(cluster, manifests, crds_dir)
    spec_crds = [f"k8s.ovn.org_{n}.yaml" for n in (
        "egressfirewalls", "egressips", "egressqoses", "egressservices", "adminpolicybasedexternalroutes",
        "networkqoses", "userdefinednetworks", "clusteruserdefinednetworks", "routeadvertisements")]  # fmt: skip
    extra_crds = sorted({p.name for p in manifests.glob("k8s.ovn.org_*.yaml")} - set(spec_crds))
    crd_calls = targets(manifests, *spec_crds, *extra_crds) + targets(crds_dir, *NETPOL)
    expected = [
        *crd_calls,
        ("wait-crds", len(crd_calls)),
        *targets(manifests, "ovn-setup.yaml", "rbac-ovnkube-identity.yaml", "rbac-ovnkube-cluster-manager.yaml",
                 "rbac-ovnkube-master.yaml", "rbac-ovnkube-node.yaml", "rbac-ovnkube-db.yaml"),  # fmt: skip
        ("label", CP, {"k8s.ovn.org/ovnkube-db": "true", "node-role.kubernetes.io/control-plane": ""}),
        ("untaint", CP, "node-role.kubernetes.io/master"),
        ("untaint", CP, "node-role.kubernetes.io/control-plane"),
        *targets(manifests, "ovs-node.yaml"),
        *[("label", n, {"k8s.ovn.org/zone-name": n}) for n in ALL_NODES],
        *targets(manifests, "ovnkube-identity.yaml", "ovnkube-control-plane.yaml", "ovnkube-single-node-zone.yaml"),
        ("patch", "ovn-kubernetes/ovnkube-node"),
        ("wait-pods", "name=ovnkube-node", [CP, "dpu-worker2", "dpu-worker4"]),
        ("label", "dpu-worker", {"k8s.ovn.org/dpu-host": ""}),
        ("label", "dpu-worker3", {"k8s.ovn.org/dpu-host": ""}),
        ("label", "dpu-worker2", {"k8s.ovn.org/dpu": ""}),
        ("label", "dpu-worker4", {"k8s.ovn.org/dpu": ""}),
        *targets(manifests, "ovnkube-single-node-zone-dpu.yaml", "ovnkube-node-dpu-host.yaml"),
        ("wait-pods", "name=ovnkube-node-dpu", ["dpu-worker2", "dpu-worker4"]),
    ]
    assert cluster.calls == expected


@pytest.fixture(scope="module")
def central_manifests(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("central")
    derive_dpu_manifests(FIXTURES / "manifests", out, OvnkOptions(enable_interconnect=False))
    return out


def test_without_interconnect_the_centralized_stack_is_deployed(central_manifests, crds_dir):
    """enable_interconnect false: upstream's centralized files, no zones, the DPU DaemonSet of ovnkube-node-dpu.yaml."""
    cluster = RecordingCluster()
    run(cluster, central_manifests, crds_dir, interconnect=False)
    applied = [c[1] for c in cluster.calls if c[0] == "apply"]
    components = targets(central_manifests, "ovnkube-identity.yaml", "ovnkube-db.yaml", "ovnkube-master.yaml", "ovnkube-node.yaml")
    start = applied.index(components[0][1])
    assert applied[start : start + len(components)] == [t[1] for t in components]
    assert not any("k8s.ovn.org/zone-name" in labels for labels in cluster.labels.values())
    assert ("apps/v1", "DaemonSet", "ovn-kubernetes", "ovnkube-control-plane") not in cluster.applied
    dpu_ds = cluster.applied[("apps/v1", "DaemonSet", "ovn-kubernetes", "ovnkube-node-dpu")]
    (source,) = [d for d in yaml.safe_load_all((central_manifests / "ovnkube-node-dpu.yaml").read_text()) if d]
    assert dpu_ds == source
    assert [c["name"] for c in dpu_ds["spec"]["template"]["spec"]["containers"]][0] == "ovnkube-node"
    assert cluster.calls[-1] == ("wait-pods", "name=ovnkube-node-dpu", DPUS)


def test_deploy_leaves_the_cluster_as_the_spec_does(manifests, crds_dir):
    cluster = RecordingCluster()
    run(cluster, manifests, crds_dir)
    assert cluster.taints[CP] == set()
    for node in ALL_NODES:
        assert cluster.labels[node]["k8s.ovn.org/zone-name"] == node
    assert all(cluster.labels[h]["k8s.ovn.org/dpu-host"] == "" for h in HOSTS)
    assert all(cluster.labels[d]["k8s.ovn.org/dpu"] == "" for d in DPUS)
    assert cluster.patches[("apps/v1", "DaemonSet", "ovn-kubernetes", "ovnkube-node")] == [
        {"op": "add", "path": "/spec/updateStrategy/rollingUpdate", "value": {"maxUnavailable": "100%"}}
    ]
    dpu_ds = cluster.applied[("apps/v1", "DaemonSet", "ovn-kubernetes", "ovnkube-node-dpu")]
    # interconnect (the spec): the DaemonSet of ovnkube-single-node-zone-dpu.yaml, ovnkube in ovnkube-controller
    (source,) = [d for d in yaml.safe_load_all((manifests / "ovnkube-single-node-zone-dpu.yaml").read_text()) if d]
    assert dpu_ds == source
    (controller,) = [c for c in dpu_ds["spec"]["template"]["spec"]["containers"] if c["name"] == "ovnkube-controller"]
    env = {e["name"]: e.get("value") for e in controller["env"]}
    assert env["DPU_REPRESENTOR_MODE"] == "veth" and env["OVNKUBE_NODE_MODE"] == "dpu"


def test_second_deploy_changes_nothing(manifests, crds_dir):
    cluster = RecordingCluster()
    first = run(cluster, manifests, crds_dir)
    state = copy.deepcopy((cluster.applied, cluster.patches, cluster.labels, cluster.taints))
    second = run(cluster, manifests, crds_dir)
    assert [(c.step, c.target) for c in second] == [(c.step, c.target) for c in first]
    assert [c for c in second if c.changed] == []
    assert (cluster.applied, cluster.patches, cluster.labels, cluster.taints) == state
    # the fresh cluster had no master taint to remove: even the first run reports that honestly
    assert [c.target for c in first if not c.changed] == [f"node/{CP} taint node-role.kubernetes.io/master"]


def test_progress_callback_sees_every_change(manifests, crds_dir):
    seen = []
    changes = run(RecordingCluster(), manifests, crds_dir, on_change=seen.append)
    assert seen == changes


def test_without_dpu_mode_stops_after_step_14(manifests, crds_dir, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    for p in manifests.iterdir():
        if p.name not in ("ovnkube-single-node-zone-dpu.yaml", "ovnkube-node-dpu-host.yaml"):
            (base / p.name).write_bytes(p.read_bytes())
    cluster = RecordingCluster()
    run(cluster, base, crds_dir, dpu_mode=False)
    assert cluster.calls[-1] == ("wait-pods", "name=ovnkube-node", [CP, *DPUS])
    assert not any("k8s.ovn.org/dpu" in labels for labels in cluster.labels.values())


def test_missing_manifest_changes_nothing(manifests, crds_dir, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in manifests.iterdir():
        if p.name != "ovs-node.yaml":
            (partial / p.name).write_bytes(p.read_bytes())
    cluster = RecordingCluster()
    with pytest.raises(InputError, match="lacks ovs-node.yaml"):
        run(cluster, partial, crds_dir)
    assert cluster.calls == []
    with pytest.raises(InputError, match="does not exist"):
        run(cluster, tmp_path / "nope", crds_dir)


def test_broken_manifest_changes_nothing(manifests, crds_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in manifests.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "ovnkube-identity.yaml").write_text("kind: [\n")
    cluster = RecordingCluster()
    with pytest.raises(InputError, match="ovnkube-identity.yaml: not valid YAML"):
        run(cluster, broken, crds_dir)
    assert cluster.calls == []


def test_local_crd_dir_must_have_both_files(manifests, tmp_path):
    (tmp_path / NETPOL[0]).write_text(yaml.safe_dump(crd("adminnetworkpolicies")))
    cluster = RecordingCluster()
    with pytest.raises(InputError, match=NETPOL[1]):
        run(cluster, manifests, tmp_path)
    assert cluster.calls == []


def test_without_local_crds_the_upstream_urls_are_fetched(manifests, crds_dir):
    fetched = []

    def fetch(url):
        fetched.append(url)
        return (crds_dir / url.rsplit("/", 1)[1]).read_text()

    run(RecordingCluster(), manifests, None, fetch=fetch)
    base = "https://raw.githubusercontent.com/kubernetes-sigs/network-policy-api/v0.1.5/config/crd/experimental/"
    assert fetched == [base + n for n in NETPOL]


def test_download_failure_changes_nothing(manifests):
    def fetch(url):
        raise OSError("network unreachable")

    cluster = RecordingCluster()
    with pytest.raises(DpulabError, match="local CRD files"):
        run(cluster, manifests, None, fetch=fetch)
    assert cluster.calls == []


def test_timeout_stops_before_dpu_mode(manifests, crds_dir):
    cluster = RecordingCluster(stuck="name=ovnkube-node")
    with pytest.raises(DeployTimeout, match="timed out after 5 s"):
        run(cluster, manifests, crds_dir, timeout=5)
    assert not any("k8s.ovn.org/dpu" in labels for labels in cluster.labels.values())
    assert ("apps/v1", "DaemonSet", "ovn-kubernetes", "ovnkube-node-dpu") not in cluster.applied


def test_api_errors_propagate_as_dpulab_errors(manifests, crds_dir):
    cluster = RecordingCluster()
    del cluster.labels["dpu-worker3"]  # a node the lab expects is missing
    with pytest.raises(DpulabError, match="dpu-worker3"):
        run(cluster, manifests, crds_dir)


# --- KubeCluster's waits: the watch loop, with the client's list and watch stood in ---


def pod(name, node, phase="Running", app="ovnkube-node", waiting=None, bound=True):
    p = {
        "metadata": {"name": name, "labels": {"name": app}, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeName": node} if bound else {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}},
        "status": {"phase": phase},
    }  # fmt: skip
    if waiting:
        p["status"]["containerStatuses"] = [{"name": "ovnkube-controller", "state": {"waiting": {"reason": waiting}}}]
    return p


class FakeWatch:
    """Replays scripted watch streams (one list of events, or an exception, per call)."""

    streams: list = []
    calls: list = []

    def stream(self, fn, **kw):
        FakeWatch.calls.append(kw)
        script = FakeWatch.streams.pop(0) if FakeWatch.streams else []
        if isinstance(script, Exception):
            raise script
        yield from script


@pytest.fixture
def kube(monkeypatch):
    from kubernetes.client import ApiClient

    monkeypatch.setattr("kubernetes.watch.Watch", FakeWatch)
    FakeWatch.streams, FakeWatch.calls = [], []
    kc = KubeCluster.__new__(KubeCluster)
    kc._api = ApiClient()
    listing = {"metadata": {"resourceVersion": "5"}, "items": [pod("a", "dpu-worker2", "Pending")]}
    kc._core = SimpleNamespace(list_namespaced_pod=lambda **kw: copy.deepcopy(listing))
    return kc


def test_wait_returns_when_the_watch_reports_running(kube):
    FakeWatch.streams = [[{"type": "MODIFIED", "object": pod("a", "dpu-worker2")}]]
    kube.wait_pods_running("ovn-kubernetes", "name=ovnkube-node", ["dpu-worker2"], timeout=30)
    assert FakeWatch.calls[0]["resource_version"] == "5" and FakeWatch.calls[0]["deserialize"] is False
    assert 1 <= FakeWatch.calls[0]["timeout_seconds"] <= 30


def test_wait_relists_after_an_expired_watch(kube):
    from kubernetes.client.exceptions import ApiException

    FakeWatch.streams = [ApiException(status=410, reason="Gone"), [{"type": "ADDED", "object": pod("b", "dpu-worker2")}]]
    kube.wait_pods_running("ovn-kubernetes", "name=ovnkube-node", ["dpu-worker2"], timeout=30)
    assert len(FakeWatch.calls) == 2


def test_wait_times_out_saying_what_is_missing(kube):
    with pytest.raises(DeployTimeout, match=r"dpu-worker2: Pending; dpu-worker4: no pod"):
        kube.wait_pods_running("ovn-kubernetes", "name=ovnkube-node", ["dpu-worker2", "dpu-worker4"], timeout=0.05)


class FakeCore:
    """CoreV1Api/AppsV1Api stand-in: returns client models, records patches."""

    def __init__(self, labels=None, taints=(), rv="7", rv_after="7"):
        from kubernetes import client

        self.node = client.V1Node(
            metadata=client.V1ObjectMeta(name="n", labels=labels or {}),
            spec=client.V1NodeSpec(taints=[client.V1Taint(key=k, effect=e) for k, e in taints]),
        )
        self.ds = lambda v: SimpleNamespace(metadata=client.V1ObjectMeta(name="ds", resource_version=v))
        self.rv, self.rv_after, self.patched = rv, rv_after, []

    def read_node(self, name):
        return self.node

    def patch_node(self, name, body, **kw):
        self.patched.append((body, kw["_content_type"]))

    def read_namespaced_daemon_set(self, name, namespace):
        return self.ds(self.rv)

    def patch_namespaced_daemon_set(self, name, namespace, body, **kw):
        self.patched.append((body, kw["_content_type"]))
        return self.ds(self.rv_after)


def kube_with(core: FakeCore) -> KubeCluster:
    from kubernetes.client import ApiClient

    kc = KubeCluster.__new__(KubeCluster)
    kc._api, kc._core, kc._apps = ApiClient(), core, core
    return kc


def test_kube_label_node_patches_only_what_differs():
    core = FakeCore(labels={"a": "1"})
    assert kube_with(core).label_node("n", {"a": "1"}) is False and core.patched == []
    assert kube_with(core).label_node("n", {"a": "1", "b": ""}) is True
    assert core.patched == [({"metadata": {"labels": {"a": "1", "b": ""}}}, "application/merge-patch+json")]


def test_kube_remove_taint_keeps_the_others():
    core = FakeCore(taints=[("node-role.kubernetes.io/control-plane", "NoSchedule"), ("other", "NoExecute")])
    assert kube_with(core).remove_taint("n", "node-role.kubernetes.io/master", "NoSchedule") is False
    assert kube_with(core).remove_taint("n", "node-role.kubernetes.io/control-plane", "NoSchedule") is True
    assert core.patched == [({"spec": {"taints": [{"key": "other", "effect": "NoExecute"}]}}, "application/merge-patch+json")]


def test_kube_patch_daemonset_reports_change_by_resource_version():
    from dpulab.ovnk.deploy import MAX_UNAVAILABLE_PATCH

    assert kube_with(FakeCore(rv="7", rv_after="7")).patch_daemonset("ns", "ds", MAX_UNAVAILABLE_PATCH) is False
    core = FakeCore(rv="7", rv_after="8")
    assert kube_with(core).patch_daemonset("ns", "ds", MAX_UNAVAILABLE_PATCH) is True
    assert core.patched == [(MAX_UNAVAILABLE_PATCH, "application/json-patch+json")]


def test_client_errors_become_one_line():
    import json

    from kubernetes.client.exceptions import ApiException

    from dpulab.ovnk.deploy import api_errors

    with pytest.raises(DpulabError, match=r"^label node x: 403 nodes \"x\" is forbidden$"):
        with api_errors("label node x"):
            raise ApiException(status=403, reason="Forbidden", body=json.dumps({"message": 'nodes "x" is forbidden'}))


# --- status ---------------------------------------------------------------------

ROLES = NODES.roles()


def node(name, ready=True, labels=None):
    return {"metadata": {"name": name, "labels": labels or {}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}  # fmt: skip


def step14_pods():
    pods = [pod(f"{app}-cp", CP, app=app) for app in ("ovs-node", "ovnkube-identity", "ovnkube-control-plane", "ovnkube-node")]
    for d in DPUS:
        pods += [pod(f"ovs-{d}", d, app="ovs-node"), pod(f"node-{d}", d)]
    for h in HOSTS:
        pods += [pod(f"ovs-{h}", h, "Pending", app="ovs-node"), pod(f"node-{h}", h, "Pending")]
    return pods


def test_step14_state_is_all_as_expected():
    rows = ovnk_status(step14_pods(), [node(CP), *(node(n) for n in DPUS), *(node(h, ready=False) for h in HOSTS)], ROLES)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    host_rows = [r for r in rows if r.role == "host"]
    assert len(host_rows) == 4 and all("isolated host" in r.why and r.actual == "Pending" for r in host_rows)
    assert {(r.node, r.component) for r in rows if r.role == "control-plane"} == {
        (CP, c) for c in ("ovs-node", "ovnkube-identity", "ovnkube-control-plane", "ovnkube-node")
    }


def test_a_pending_dpu_pod_is_named_with_its_reasons():
    pods = step14_pods()
    pods[-5] = pod("node-dpu-worker4", "dpu-worker4", "Pending", waiting="ImagePullBackOff")
    events = [{"involvedObject": {"kind": "Pod", "name": "node-dpu-worker4"}, "type": "Warning",
               "reason": "Failed", "message": "image not found", "lastTimestamp": "2026-01-01T00:01:00Z"}]  # fmt: skip
    rows = ovnk_status(pods, [node(n) for n in ALL_NODES], ROLES, events)
    (bad,) = [r for r in rows if not r.ok]
    assert (bad.node, bad.component, bad.actual) == ("dpu-worker4", "ovnkube-node", "Pending")
    assert "ImagePullBackOff" in bad.why and "image not found" in bad.why


def test_crashlooping_running_pod_differs_and_missing_pod_is_reported():
    pods = [p for p in step14_pods() if p["metadata"]["name"] != "ovs-dpu-worker2"]
    pods.append(pod("identity-again", CP, app="ovnkube-identity", waiting="CrashLoopBackOff"))
    pods = [p for p in pods if p["metadata"]["name"] != "ovnkube-identity-cp"]
    rows = {(r.node, r.component): r for r in ovnk_status(pods, [node(n) for n in ALL_NODES], ROLES)}
    assert not rows[("dpu-worker2", "ovs-node")].ok and rows[("dpu-worker2", "ovs-node")].actual == "no pod"
    assert not rows[(CP, "ovnkube-identity")].ok and "CrashLoopBackOff" in rows[(CP, "ovnkube-identity")].why


def test_dpu_mode_expectations_and_leftovers():
    labels = {**{h: {"k8s.ovn.org/dpu-host": ""} for h in HOSTS}, **{d: {"k8s.ovn.org/dpu": ""} for d in DPUS}}
    nodes = [node(n, labels=labels.get(n)) for n in ALL_NODES]
    pods = [pod(f"{app}-cp", CP, app=app) for app in ("ovs-node", "ovnkube-identity", "ovnkube-control-plane", "ovnkube-node")]
    pods += [pod(f"ovs-{d}", d, app="ovs-node") for d in DPUS] + [pod(f"dpu-{d}", d, app="ovnkube-node-dpu") for d in DPUS]
    pods += [pod(f"dh-{h}", h, app="ovnkube-node-dpu-host", bound=False, phase="Pending") for h in HOSTS]
    pods.append(pod("old-full-node", "dpu-worker2"))  # full-mode pod still on a labelled DPU
    rows = ovnk_status(pods, nodes, ROLES)
    bad = {(r.node, r.component, r.expected) for r in rows if not r.ok}
    assert bad == {("dpu-worker2", "ovnkube-node", "absent")}
    # isolated hosts: the DPU-host pods cannot start, as the spec expects; each still has its pod
    host_rows = [r for r in rows if r.role == "host"]
    assert [(r.component, r.actual, r.ok) for r in host_rows] == [("ovnkube-node-dpu-host", "Pending", True)] * 2
    assert all("isolated host" in r.why for r in host_rows)
    no_host_pods = [p for p in pods if p["metadata"]["labels"]["name"] != "ovnkube-node-dpu-host"]
    missing = {(r.node, r.component, r.actual) for r in ovnk_status(no_host_pods, nodes, ROLES) if not r.ok and r.role == "host"}
    assert missing == {(h, "ovnkube-node-dpu-host", "no pod") for h in HOSTS}


def test_pod_node_of_an_unscheduled_daemonset_pod():
    assert pod_node(pod("x", "dpu-worker3", bound=False)) == "dpu-worker3"
    assert pod_node({"metadata": {"name": "y"}, "spec": {}}) is None


# --- API URL discovery (Step 8) -----------------------------------------------------

KIND_INTERNAL = """
apiVersion: v1
kind: Config
clusters:
- cluster: {certificate-authority-data: xx, server: "https://dpu-control-plane:6443"}
  name: kind-dpu
- cluster: {server: "https://other:6443"}
  name: other
contexts:
- context: {cluster: kind-dpu, user: kind-dpu}
  name: kind-dpu
current-context: kind-dpu
"""


def test_api_url_replaces_the_container_name_with_its_ip():
    asked = []
    url = api_url_from_kubeconfig(KIND_INTERNAL, lambda name: asked.append(name) or "172.18.0.2\n")
    assert (url, asked) == ("https://172.18.0.2:6443", ["dpu-control-plane"])
    assert api_url_from_kubeconfig(KIND_INTERNAL, lambda name: "fc00:f853::2") == "https://[fc00:f853::2]:6443"


def test_api_url_errors():
    with pytest.raises(DpulabError, match="no address on network kind"):
        api_url_from_kubeconfig(KIND_INTERNAL, lambda name: "")
    with pytest.raises(InputError, match="names no API server"):
        api_url_from_kubeconfig("apiVersion: v1\nclusters: []\n", lambda name: "1.2.3.4")
    with pytest.raises(InputError, match="not valid"):
        api_url_from_kubeconfig("clusters: [1, 2]", lambda name: "1.2.3.4")
