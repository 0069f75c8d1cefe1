"""The kind engine: the spec's Steps 3-5 (and 6-7 on request) on kind's own node containers.

`kind create cluster` makes the nodes (docker or podman, as detected); the shared wiring
then places the host/DPU veths into them by pid, hosts are taken off kind's network (the
isolation the spec's Step 4 claims but does not achieve), and Step 5's sysctls are set
through the engine in use. kind owns the containers, their labels and their addresses, so
dpulab marks a cluster as its own by `lo`'s alias in every node, a file in every node's
own filesystem (/etc/dpulab.mark: it outlives a reboot, which takes the aliases with the
namespaces and /run with the record) and a record in the lab's run directory, and never
touches a kind cluster carrying none of them.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .. import namespaces
from ..errors import DpulabError, InputError, NotOursError
from ..kindconfig import render_kind_config
from ..netlink import Rtnl, Sockets
from ..plan import CLUSTER, CREATE_NODE, Action
from ..state import run_dir
from ..topology import Node, Topology, mark, worker_name
from .base import NodeStatus
from .container import ContainerEngine, last_line, link_netns, networks_of, unlink_netns

if TYPE_CHECKING:
    from ..spec import LabSpec

KIND_CLUSTER_LABEL, KIND_ROLE_LABEL = "io.x-k8s.kind.cluster", "io.x-k8s.kind.role"
RECORD = "kind.json"
MARK_DIR, MARK_FILE = "/etc", "dpulab.mark"  # in each node's own filesystem
# Step 5: (key, value, at_least). IPv6 keys are skipped where the kernel has no IPv6 (the
# spec's --ignore); the inotify limits are machine-wide and only ever raised, never lowered.
SYSCTLS = (
    ("net.ipv6.conf.all.disable_ipv6", 0, False),
    ("net.ipv6.conf.all.forwarding", 1, False),
    ("fs.inotify.max_user_watches", 524288, True),
    ("fs.inotify.max_user_instances", 512, True),
)


def node_mark(lab: str, node: str) -> str:
    return mark(lab, "node", node)


def kubeconfig_path(spec: "LabSpec") -> str:
    return os.path.expanduser(spec.containers.kind.kubeconfig or f"~/{spec.name}.conf")


@dataclass(frozen=True)
class KindTopology(Topology):
    """The lab as kind built it: kind's network, not the spec, gave the cluster addresses."""

    observe: Callable[[], dict[str, str]] = field(default=dict, compare=False)

    @cached_property
    def _observed(self) -> dict[str, str]:
        return self.observe()

    @cached_property
    def cluster_network(self) -> ipaddress.IPv4Network:
        cp = self._observed.get(f"{self.lab}-control-plane")
        return ipaddress.ip_interface(cp).network if cp else super().cluster_network

    def _cluster_ip(self, worker: int) -> str:
        name = f"{self.lab}-control-plane" if worker == 0 else worker_name(self.lab, worker)
        return self._observed.get(name) or super()._cluster_ip(worker)


class KindEngine(ContainerEngine):
    """Nodes made by kind; wiring, isolation, verify and down shared with the other engines."""

    def __init__(self, topo: Topology, binary: str | None = None) -> None:
        """`binary`: the engine kind runs on; default: the one recorded at create, else detected."""
        from . import container_engine

        record = self.read_record(topo.lab)
        binary = binary or record.get("provider") or container_engine()
        super().__init__(KindTopology(topo.spec, self.observed_addresses), binary)
        self.name = "kind"  # type: ignore[misc]
        self.kind_options = topo.spec.containers.kind

    # -- ownership ------------------------------------------------------------------------
    @staticmethod
    def read_record(lab: str) -> dict[str, Any]:
        try:
            return json.loads((run_dir(lab) / RECORD).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def write_record(self) -> None:
        d = run_dir(self.topo.lab)
        d.mkdir(parents=True, exist_ok=True)
        (d / RECORD).write_text(json.dumps({"cluster": self.topo.lab, "provider": self.cli.binary}))

    def marked(self, pid: int, node: str) -> bool:
        """Does the node's `lo` carry our mark? Read through /proc, before linking anything."""
        with namespaces.entered(f"/proc/{pid}/ns/net"):
            r = Rtnl()
        try:
            lo = r.links().get("lo")
        finally:
            r.close()
        return lo is not None and lo.alias == node_mark(self.topo.lab, node)

    def write_file_mark(self, node: str) -> None:
        """The node's mark as a file in its own filesystem (`cp` from a tar stream: no shell, either engine)."""
        data = node_mark(self.topo.lab, node).encode()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(MARK_FILE)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        res = subprocess.run([self.cli.binary, "cp", "-", f"{node}:{MARK_DIR}/"], input=buf.getvalue(), capture_output=True)
        if res.returncode != 0:
            raise DpulabError(f"{self.cli.binary} cp (mark node {node}) failed: {last_line(res.stderr.decode(errors='replace'))}")

    def file_marked(self, node: str) -> bool:
        """Does the node's filesystem hold our mark? Read with `cp`, so a stopped node answers too."""
        res = subprocess.run([self.cli.binary, "cp", f"{node}:{MARK_DIR}/{MARK_FILE}", "-"], capture_output=True)
        if res.returncode != 0:
            return False
        try:
            with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tar:
                member = tar.next()
                f = tar.extractfile(member) if member is not None and member.isfile() and member.size < 256 else None
                return f is not None and f.read().decode(errors="replace").strip() == node_mark(self.topo.lab, node)
        except tarfile.TarError:
            return False

    def is_ours(self, node: str, info: dict[str, Any]) -> bool:
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(KIND_CLUSTER_LABEL) != self.topo.lab:
            return False
        if self.read_record(self.topo.lab).get("cluster") == self.topo.lab:
            return True
        pid = (info.get("State") or {}).get("Pid")
        return (bool(pid) and self.marked(int(pid), node)) or self.file_marked(node)

    def revive_hint(self, node: str) -> str:
        return f"`dpulab down -n {self.topo.lab}` and `dpulab up` make the cluster anew"

    def node_status(self, node: Node, socks: Sockets) -> NodeStatus:
        info = self.seen().get(node.name)
        if info is None:
            return NodeStatus.MISSING
        if ((info.get("Config") or {}).get("Labels") or {}).get(KIND_CLUSTER_LABEL) != self.topo.lab:
            return NodeStatus.FOREIGN
        if not self.is_ours(node.name, info):
            raise NotOursError(
                f"kind cluster {self.topo.lab!r} exists and was not made by dpulab; "
                f"choose another --name or `kind delete cluster --name {self.topo.lab}` yourself"
            )
        link_netns(node.name, self.running(node.name, info))
        return NodeStatus.OURS

    # -- bring-up -------------------------------------------------------------------------
    def node_actions(self, socks: Sockets, statuses: dict[str, NodeStatus], keep: set[str] = frozenset()) -> list[Action]:
        lab = self.topo.lab
        missing = [n for n, st in statuses.items() if st is NodeStatus.MISSING]
        existing = self.cli.names(KIND_CLUSTER_LABEL, lab)
        wanted = [n.name for n in self.topo.nodes]
        if existing and (missing or set(existing) - set(wanted)):
            raise DpulabError(
                f"kind cluster {lab!r} has nodes {', '.join(existing)}, the lab needs {', '.join(wanted)}: "
                f"kind cannot add or remove nodes; `dpulab down -n {lab}` and `dpulab up` again"
            )
        actions: list[Action] = []
        if missing:
            if shutil.which("kind") is None:
                raise InputError("kind is not installed (no `kind` on PATH): install it from kind.sigs.k8s.io or choose another --engine")
            image = self.kind_options.node_image
            actions.append(Action(CREATE_NODE, f"kind cluster {lab}", f"{len(wanted)} nodes, {image}, {self.cli.binary}", self.create_cluster))
            actions += [
                Action(CLUSTER, h.name, "disconnect from kind's network (isolate the host)", lambda s, h=h.name: self.isolate(h))
                for h in self.topo.hosts
            ]
            actions += [self.sysctl_action(n, [f"{k}={v}" for k, v, _ in SYSCTLS]) for n in wanted]
            return actions
        actions += self.isolate_actions(statuses)
        for n in wanted:
            drift = self.sysctl_drift(n)
            if drift:
                actions.append(self.sysctl_action(n, drift))
        return actions

    def kind(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "KIND_EXPERIMENTAL_PROVIDER": self.cli.binary}
        try:
            res = subprocess.run(["kind", *args], capture_output=True, text=True, env=env)
        except FileNotFoundError:
            raise InputError("kind is not installed (no `kind` on PATH): install it from kind.sigs.k8s.io") from None
        if res.returncode != 0:
            raise DpulabError(f"kind {' '.join(args[:2])} --name {self.topo.lab} failed: {last_line(res.stderr or res.stdout)}")
        return res

    def create_cluster(self, socks: Sockets) -> None:
        """Step 3 with Step 2's config; the record first, so even a failed create's retained nodes are ours."""
        spec, k = self.topo.spec, self.kind_options
        config = run_dir(spec.name) / "kind-config.yaml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(render_kind_config(pairs=spec.pairs, pod_cidr=spec.ovn.pod_cidr, image=k.node_image))
        self.write_record()
        argv = ["create", "cluster", "--name", spec.name, "--kubeconfig", kubeconfig_path(spec), "--image", k.node_image, "--config", str(config)]
        self.kind(*argv, *(["--retain"] if k.retain else []))
        self.changed()
        for node in self.topo.nodes:
            link_netns(node.name, self.running(node.name, self.seen()[node.name]))
            socks(node.name).set_link("lo", alias=node_mark(spec.name, node.name))
            self.write_file_mark(node.name)

    def sysctl_drift(self, node: str) -> list[str]:
        """Step 5 settings the node does not have yet, read from the kernel."""
        out = []
        for key, want, at_least in SYSCTLS:
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                if key.startswith("net."):  # per network namespace
                    with namespaces.entered(str(namespaces.path(node))):
                        value = int(Path(path).read_text())
                else:
                    value = int(Path(path).read_text())
            except FileNotFoundError:
                continue
            if (value < want) if at_least else (value != want):
                out.append(f"{key}={want}")
        return out

    def sysctl_action(self, node: str, settings: list[str]) -> Action:
        def run(s: Sockets) -> None:
            todo = [kv for kv in settings if kv in self.sysctl_drift(node)]  # a just-made node: only what differs
            if todo:
                self.cli.run("exec", node, "sysctl", "-w", *todo)

        return Action(CLUSTER, node, "sysctl " + " ".join(settings), run)

    # -- addresses ------------------------------------------------------------------------
    def observed_addresses(self) -> dict[str, str]:
        """Node -> address/prefix on the control plane's network (kind's docker/podman IPAM chose them)."""
        seen = self.seen()
        cp = seen.get(f"{self.topo.lab}-control-plane")
        nets = networks_of(cp) if cp else []
        if not nets:
            return {}
        out = {}
        for name, info in seen.items():
            ep = ((info.get("NetworkSettings") or {}).get("Networks") or {}).get(nets[0]) or {}
            if ep.get("IPAddress"):
                out[name] = f"{ep['IPAddress']}/{ep['IPPrefixLen']}"
        return out

    # -- removal --------------------------------------------------------------------------
    def orphans(self) -> list[str]:
        infos = self.cli.inspect(self.cli.names(KIND_CLUSTER_LABEL, self.topo.lab))
        return [n for n, info in infos.items() if self.is_ours(n, info)] + self.dangling()

    def delete_nodes(self, names: Sequence[str], socks: Sockets) -> list[str]:
        """`kind delete cluster` when the names include our cluster's nodes; then stale links."""
        infos = self.cli.inspect(list(names))
        ours = [n for n in names if n in infos and self.is_ours(n, infos[n])]
        for n in names:
            socks.forget(n)
        if ours:
            self.kind("delete", "cluster", "--name", self.topo.lab, "--kubeconfig", kubeconfig_path(self.topo.spec))
            self.changed()
        for n in names:
            unlink_netns(n)
        return ours

    def load_image(self, image: str) -> None:
        """Step 7: the image into every node (podman via an archive, as `kind load docker-image` needs docker)."""
        if not self.cli.image_present(image):
            raise DpulabError(f"image {image} is not in {self.cli.binary}: build it first (`dpulab image build`)")
        if self.cli.binary == "docker":
            self.kind("load", "docker-image", image, "--name", self.topo.lab)
            return
        with tempfile.TemporaryDirectory(prefix="dpulab-image-") as tmp:
            archive = os.path.join(tmp, "image.tar")
            self.cli.run("save", "-o", archive, image)
            self.kind("load", "image-archive", archive, "--name", self.topo.lab)


def build_ovnk_image(src: Path, image: str, oci_bin: str) -> None:
    """Step 6: upstream's own image build, from an ovn-kubernetes checkout, with the engine in use."""
    images = src / "dist" / "images"
    if not (images / "Makefile").is_file():
        raise InputError(f"{src} is not an ovn-kubernetes checkout (no dist/images/Makefile)")
    argv = ["make", "-C", str(images), f"IMAGE={image}", "OVN_REPO=", "OVN_GITREF=", f"OCI_BIN={oci_bin}", "fedora-image"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise InputError("make is not installed; it runs ovn-kubernetes' image build") from None
    if res.returncode != 0:
        raise DpulabError(f"building {image} in {images} failed: {last_line(res.stderr or res.stdout)}")
