"""Deploy OVN-Kubernetes onto a lab's kind cluster in the spec's order (Steps 9-16).

Everything the deploy does to the cluster goes through a small `Cluster` interface, so
the order and its idempotency are testable without an API server. `KubeCluster` is that
interface on the official client: server-side apply (manager "dpulab", conflicts forced)
and watches with deadlines, never sleeps. Each call reports whether it changed anything,
so a second deploy reports no changes.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import yaml

from ..errors import DpulabError, InputError
from .manifests import (
    DPU_DAEMONSET,
    DPU_HOST_LABEL,
    DPU_LABEL,
    NAMESPACE,
    NETPOL_CRD_FILES,
    dpu_mode_files,
    load_docs,
    netpol_crd_url,
)
from .status import pod_node

FIELD_MANAGER = "dpulab"

# Step 9: the CRDs in the spec's order; any other k8s.ovn.org CRD the render has follows.
OVN_CRD_FILES = tuple(
    f"k8s.ovn.org_{n}.yaml"
    for n in (
        "egressfirewalls", "egressips", "egressqoses", "egressservices", "adminpolicybasedexternalroutes",
        "networkqoses", "userdefinednetworks", "clusteruserdefinednetworks", "routeadvertisements",
    )
)  # fmt: skip
SETUP_FILES = (  # Step 10
    "ovn-setup.yaml",
    "rbac-ovnkube-identity.yaml",
    "rbac-ovnkube-cluster-manager.yaml",
    "rbac-ovnkube-master.yaml",
    "rbac-ovnkube-node.yaml",
    "rbac-ovnkube-db.yaml",
)
OVS_FILE = "ovs-node.yaml"  # Step 12
# Step 13 with interconnect (the spec: --enable-interconnect=true, a zone per node)
COMPONENT_FILES = ("ovnkube-identity.yaml", "ovnkube-control-plane.yaml", "ovnkube-single-node-zone.yaml")
# without it, upstream kind.sh's centralized stack: one OVN database and master for the cluster
CENTRALIZED_COMPONENT_FILES = ("ovnkube-identity.yaml", "ovnkube-db.yaml", "ovnkube-master.yaml", "ovnkube-node.yaml")
CONTROL_PLANE_LABELS = {"k8s.ovn.org/ovnkube-db": "true", "node-role.kubernetes.io/control-plane": ""}
CONTROL_PLANE_TAINTS = ("node-role.kubernetes.io/master", "node-role.kubernetes.io/control-plane")
MAX_UNAVAILABLE_PATCH = [{"op": "add", "path": "/spec/updateStrategy/rollingUpdate", "value": {"maxUnavailable": "100%"}}]


class DeployTimeout(DpulabError):
    """A wait ran out of time; the message says what was still missing."""


@dataclass(frozen=True)
class Change:
    step: str
    target: str
    changed: bool


class Cluster(Protocol):
    """The calls a deploy makes; each mutating one returns whether it changed the cluster."""

    def apply(self, doc: dict) -> bool: ...
    def label_node(self, node: str, labels: dict[str, str]) -> bool: ...
    def remove_taint(self, node: str, key: str, effect: str) -> bool: ...
    def patch_daemonset(self, namespace: str, name: str, patch: list[dict]) -> bool: ...
    def wait_crds_established(self, names: list[str], timeout: float) -> None: ...
    def wait_pods_running(self, namespace: str, label_selector: str, nodes: list[str], timeout: float) -> None: ...
    def status_inputs(self) -> tuple[list[dict], list[dict], list[dict]]:
        """OVN-K pods, nodes and OVN-K events, API-shaped (what `ovnk status` judges)."""
        ...


def _docs(text: str, source: str) -> list[dict]:
    try:
        docs = load_docs(text)
    except yaml.YAMLError:
        raise InputError(f"{source}: not valid YAML") from None
    if not all(isinstance(d, dict) and "kind" in d and "name" in (d.get("metadata") or {}) for d in docs):
        raise InputError(f"{source}: every document needs a kind and a metadata.name")
    return docs


def fetch_url(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https URLs)
        return resp.read().decode()


def _netpol_crds(crds_dir: Path | None, fetch: Callable[[str], str]) -> list[dict]:
    """ANP/BANP CRDs: local files when a directory is given, else the upstream URLs."""
    out = []
    for name in NETPOL_CRD_FILES:
        if crds_dir is not None:
            path = Path(crds_dir) / name
            if not path.is_file():
                raise InputError(f"CRD directory {crds_dir} lacks {name}")
            out += _docs(path.read_text(), name)
            continue
        url = netpol_crd_url(name)
        try:
            out += _docs(fetch(url), url)
        except OSError as e:
            raise DpulabError(f"cannot download {url} ({e}); pass a directory of local CRD files") from None
    return out


def component_files(interconnect: bool) -> tuple[str, ...]:
    return COMPONENT_FILES if interconnect else CENTRALIZED_COMPONENT_FILES


def _load(
    manifests_dir: Path, crds_dir: Path | None, fetch: Callable[[str], str], dpu_mode: bool, interconnect: bool = True
) -> tuple[list[dict], dict[str, list[dict]]]:
    """CRD documents and every other file's documents, all read before anything is sent."""
    manifests_dir = Path(manifests_dir)
    if not manifests_dir.is_dir():
        raise InputError(f"manifests directory {manifests_dir} does not exist")
    extra = sorted(p.name for p in manifests_dir.glob("k8s.ovn.org_*.yaml") if p.name not in OVN_CRD_FILES)
    crd_files = [*OVN_CRD_FILES, *extra]
    other_files = [*SETUP_FILES, OVS_FILE, *component_files(interconnect), *(dpu_mode_files(interconnect) if dpu_mode else ())]
    missing = [f for f in (*crd_files, *other_files) if not (manifests_dir / f).is_file()]
    if missing:
        raise InputError(f"{manifests_dir} lacks {', '.join(missing)}")
    crds = [d for f in crd_files for d in _docs((manifests_dir / f).read_text(), f)]
    crds += _netpol_crds(crds_dir, fetch)
    return crds, {f: _docs((manifests_dir / f).read_text(), f) for f in other_files}


def _target(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def deploy(
    cluster: Cluster,
    manifests_dir: Path,
    *,
    control_plane: str,
    hosts: list[str],
    dpus: list[str],
    crds_dir: Path | None = None,
    fetch: Callable[[str], str] = fetch_url,
    dpu_mode: bool = True,
    interconnect: bool = True,
    timeout: float = 600,
    on_change: Callable[[Change], None] | None = None,
) -> list[Change]:
    """Steps 9-16 against `cluster`; returns one Change per object or node setting, in order.

    `interconnect` (OvnkOptions.enable_interconnect, true in the spec): Step 13's
    single-node-zone stack, zone labels (Step 12) and the DPU DaemonSet of
    `ovnkube-single-node-zone-dpu.yaml`; without it the centralized stack (ovnkube-db,
    ovnkube-master, ovnkube-node), no zone labels and `ovnkube-node-dpu.yaml`.
    Nothing is sent before every file has been read. Waits (CRDs established; OVN-K pods
    Running on the control plane and the DPUs, as Step 14 expects) get `timeout` seconds
    each; the isolated hosts are not waited for.
    """
    if len(hosts) != len(dpus):
        raise InputError(f"{len(hosts)} hosts but {len(dpus)} DPUs: each host needs its DPU")
    crds, docs = _load(manifests_dir, crds_dir, fetch, dpu_mode, interconnect)
    changes: list[Change] = []

    def record(step: str, target: str, changed: bool) -> None:
        changes.append(Change(step, target, changed))
        if on_change is not None:
            on_change(changes[-1])

    def apply(step: str, documents: list[dict]) -> None:
        for doc in documents:
            record(step, _target(doc), cluster.apply(doc))

    def of(*files: str) -> list[dict]:
        return [d for f in files for d in docs[f]]

    apply("crds", crds)
    cluster.wait_crds_established([d["metadata"]["name"] for d in crds if d["kind"] == "CustomResourceDefinition"], timeout)
    apply("setup", of(*SETUP_FILES))

    record("control-plane", f"node/{control_plane} labels", cluster.label_node(control_plane, CONTROL_PLANE_LABELS))
    for key in CONTROL_PLANE_TAINTS:
        record("control-plane", f"node/{control_plane} taint {key}", cluster.remove_taint(control_plane, key, "NoSchedule"))

    apply("ovs", of(OVS_FILE))
    if interconnect:
        for node in [control_plane, *(n for pair in zip(hosts, dpus) for n in pair)]:
            record("zones", f"node/{node} zone-name", cluster.label_node(node, {"k8s.ovn.org/zone-name": node}))

    apply("components", of(*component_files(interconnect)))
    record(
        "components",
        "DaemonSet/ovnkube-node maxUnavailable",
        cluster.patch_daemonset(NAMESPACE, "ovnkube-node", MAX_UNAVAILABLE_PATCH),
    )
    cluster.wait_pods_running(NAMESPACE, "name=ovnkube-node", [control_plane, *dpus], timeout)

    if dpu_mode:
        for node in hosts:
            record("dpu-mode", f"node/{node} {DPU_HOST_LABEL}", cluster.label_node(node, {DPU_HOST_LABEL: ""}))
        for node in dpus:
            record("dpu-mode", f"node/{node} {DPU_LABEL}", cluster.label_node(node, {DPU_LABEL: ""}))
        apply("dpu-mode", of(*dpu_mode_files(interconnect)))
        cluster.wait_pods_running(NAMESPACE, f"name={DPU_DAEMONSET}", dpus, timeout)
    return changes


def api_url_from_kubeconfig(kubeconfig_text: str, container_ip: Callable[[str], str]) -> str:
    """Step 8's API URL: the internal kubeconfig's server, its host replaced by that container's IP."""
    try:
        cfg = yaml.safe_load(kubeconfig_text) or {}
        clusters = {c["name"]: c["cluster"] for c in cfg.get("clusters") or []}
        contexts = {c["name"]: c["context"] for c in cfg.get("contexts") or []}
    except (yaml.YAMLError, AttributeError, KeyError, TypeError):
        raise InputError("the kubeconfig is not valid") from None
    current = contexts.get(cfg.get("current-context"), {}).get("cluster")
    cluster = clusters.get(current) or (next(iter(clusters.values())) if len(clusters) == 1 else None)
    if not cluster or not cluster.get("server"):
        raise InputError("the kubeconfig names no API server for its current context")
    url = urlsplit(cluster["server"])
    if not url.hostname:
        raise InputError(f"API server {cluster['server']!r} has no host")
    ip_text = container_ip(url.hostname).strip()
    try:
        ip = ipaddress.ip_address(ip_text)
    except ValueError:
        raise DpulabError(f"container {url.hostname} has no address on network kind (got {ip_text!r})") from None
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    return urlunsplit((url.scheme, host + (f":{url.port}" if url.port else ""), url.path, "", ""))


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        raise DpulabError(f"{argv[0]} is not installed")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise DpulabError(f"{' '.join(argv[:3])} did not answer within 60 s") from None
    if proc.returncode != 0:
        raise DpulabError(f"{' '.join(argv[:3])} failed: {(proc.stderr.strip() or 'no output').splitlines()[-1]}")
    return proc.stdout


def kind_internal_kubeconfig(name: str) -> str:
    return _run(["kind", "get", "kubeconfig", "--internal", "--name", name])


def container_ip_on_kind(engine: str | None = None) -> Callable[[str], str]:
    """container name -> its IP on network `kind`, asked of docker (or podman, as the spec does)."""
    engine = engine or ("docker" if shutil.which("docker") else "podman")
    return lambda name: _run([engine, "inspect", "-f", "{{.NetworkSettings.Networks.kind.IPAddress}}", name])


def discover_api_url(name: str, engine: str | None = None) -> str:
    return api_url_from_kubeconfig(kind_internal_kubeconfig(name), container_ip_on_kind(engine))


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Client exceptions become one DpulabError line naming what was being done."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
    from urllib3.exceptions import HTTPError

    try:
        yield
    except ResourceNotFoundError:
        raise DpulabError(f"{what}: the API server does not know this kind") from None
    except (ApiException, DynamicApiError) as e:
        detail = getattr(e, "reason", None) or str(e).splitlines()[0]
        try:
            detail = json.loads(e.body)["message"]
        except (TypeError, ValueError, KeyError, AttributeError):
            pass
        raise DpulabError(f"{what}: {getattr(e, 'status', '?')} {detail}") from None
    except HTTPError as e:
        raise DpulabError(f"{what}: cannot reach the API server ({type(e).__name__})") from None


def api_client(kubeconfig: Path):
    """An ApiClient for `kubeconfig`, or one readable error."""
    from kubernetes import config

    if not Path(kubeconfig).expanduser().is_file():
        raise InputError(f"kubeconfig {kubeconfig} does not exist")
    try:
        return config.new_client_from_config(config_file=str(Path(kubeconfig).expanduser()))
    except yaml.YAMLError:
        raise InputError(f"kubeconfig {kubeconfig}: not valid YAML") from None
    except (config.ConfigException, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"kubeconfig {kubeconfig}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


class KubeCluster:
    """`Cluster` on the official kubernetes client."""

    def __init__(self, kubeconfig: Path):
        from kubernetes import client

        self._api = api_client(kubeconfig)
        self._core = client.CoreV1Api(self._api)
        self._apps = client.AppsV1Api(self._api)
        self._ext = client.ApiextensionsV1Api(self._api)
        self._dynamic = None

    @property
    def _dyn(self):
        from kubernetes import dynamic

        if self._dynamic is None:
            with api_errors("API discovery"):
                self._dynamic = dynamic.DynamicClient(self._api)
        return self._dynamic

    def apply(self, doc: dict) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError

        with api_errors(f"apply {_target(doc)}"):
            res = self._dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            name = doc["metadata"]["name"]
            namespace = doc["metadata"].get("namespace") if res.namespaced else None
            try:
                before = self._dyn.get(res, name=name, namespace=namespace).metadata.resourceVersion
            except NotFoundError:
                before = None
            after = self._dyn.server_side_apply(
                res, body=doc, name=name, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True
            )
            return after.metadata.resourceVersion != before

    def label_node(self, node: str, labels: dict[str, str]) -> bool:
        with api_errors(f"label node {node}"):
            current = self._core.read_node(node).metadata.labels or {}
            if all(current.get(k) == v for k, v in labels.items()):
                return False
            self._core.patch_node(
                node, {"metadata": {"labels": labels}}, field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json",
            )  # fmt: skip
            return True

    def remove_taint(self, node: str, key: str, effect: str) -> bool:
        with api_errors(f"untaint node {node}"):
            taints = self._api.sanitize_for_serialization(self._core.read_node(node).spec.taints or [])
            keep = [t for t in taints if not (t.get("key") == key and t.get("effect") == effect)]
            if len(keep) == len(taints):
                return False
            self._core.patch_node(
                node, {"spec": {"taints": keep}}, field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json",
            )  # fmt: skip
            return True

    def patch_daemonset(self, namespace: str, name: str, patch: list[dict]) -> bool:
        with api_errors(f"patch DaemonSet {namespace}/{name}"):
            before = self._apps.read_namespaced_daemon_set(name, namespace).metadata.resource_version
            after = self._apps.patch_namespaced_daemon_set(
                name, namespace, patch, field_manager=FIELD_MANAGER, _content_type="application/json-patch+json"
            )
            return after.metadata.resource_version != before

    def _wait(self, what: str, list_fn, unmet: Callable[[dict[str, dict]], list[str]], timeout: float, **kw) -> None:
        """List, then watch from that version until `unmet` is empty; relist on expiry; fail at the deadline."""
        from kubernetes import watch

        deadline = time.monotonic() + timeout
        while True:
            with api_errors(f"list for {what}"):
                listing = self._api.sanitize_for_serialization(list_fn(**kw))
            objs = {o["metadata"]["name"]: o for o in listing.get("items") or []}
            missing = unmet(objs)
            remaining = deadline - time.monotonic()
            if not missing:
                return
            if remaining <= 0:
                raise DeployTimeout(f"timed out after {timeout:g} s waiting for {what}: {'; '.join(missing)}")
            stream = watch.Watch().stream(
                list_fn, resource_version=listing["metadata"].get("resourceVersion"),
                timeout_seconds=max(1, int(remaining)), deserialize=False, **kw,
            )  # fmt: skip
            try:
                with api_errors(f"watch for {what}"):
                    for event in stream:
                        obj = event["object"]
                        if event["type"] == "DELETED":
                            objs.pop(obj["metadata"]["name"], None)
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            objs[obj["metadata"]["name"]] = obj
                        if not unmet(objs):
                            return
            except DpulabError:
                if time.monotonic() >= deadline:
                    raise
                # an expired watch (410 Gone) or a dropped stream: list again

    def status_inputs(self) -> tuple[list[dict], list[dict], list[dict]]:
        with api_errors("read OVN-Kubernetes status"):
            lists = (
                self._core.list_namespaced_pod(NAMESPACE), self._core.list_node(), self._core.list_namespaced_event(NAMESPACE)
            )  # fmt: skip
        return tuple(self._api.sanitize_for_serialization(x).get("items") or [] for x in lists)

    def wait_crds_established(self, names: list[str], timeout: float) -> None:
        def unmet(objs: dict[str, dict]) -> list[str]:
            return [
                f"{n} not established"
                for n in names
                if not any(
                    c.get("type") == "Established" and c.get("status") == "True"
                    for c in (objs.get(n, {}).get("status") or {}).get("conditions") or []
                )
            ]

        self._wait("CRDs", self._ext.list_custom_resource_definition, unmet, timeout)

    def wait_pods_running(self, namespace: str, label_selector: str, nodes: list[str], timeout: float) -> None:
        def unmet(objs: dict[str, dict]) -> list[str]:
            phases = {}
            for pod in objs.values():
                if (node := pod_node(pod)) is not None and phases.get(node) != "Running":
                    phases[node] = (pod.get("status") or {}).get("phase", "Unknown")
            return [f"{n}: {phases.get(n, 'no pod')}" for n in nodes if phases.get(n) != "Running"]

        self._wait(
            f"{label_selector} pods Running", self._core.list_namespaced_pod, unmet, timeout,
            namespace=namespace, label_selector=label_selector,
        )  # fmt: skip
