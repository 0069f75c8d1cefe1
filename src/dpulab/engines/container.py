"""Nodes as containers under docker or podman: one engine, parameterised by the CLI binary.

Container labels are the ownership mark (`dpulab.lab`, `dpulab.node`). Each running node's
network namespace is linked at /run/netns/<node> (-> /proc/<pid>/ns/net), so the shared
wiring, verify and `ip netns exec` see containers exactly as they see netns nodes. Hosts
run with `--network none`; the control plane and DPUs sit on a labelled container network
at the topology's addresses.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

from .. import namespaces
from ..errors import DpulabError, NotOursError
from ..netlink import Sockets
from ..plan import CLUSTER, CREATE_NODE, DELETE_NODE, Action
from ..topology import Node, Topology
from .base import Engine, NodeStatus

LAB_LABEL, NODE_LABEL, ROLE_LABEL, CONFIG_LABEL = "dpulab.lab", "dpulab.node", "dpulab.role", "dpulab.config"
NODE_COMMAND = ("--entrypoint", "sleep")  # + image + "infinity": a node needs no init, only its namespaces
# The network driver option for the MTU is spelled differently by each engine.
MTU_OPTION = {"docker": "com.docker.network.driver.mtu", "podman": "mtu"}
# podman's `rm -f` first waits 10 s for `sleep` (PID 1) to heed SIGTERM; docker's kills at once.
FORCE_RM = {"docker": ("rm", "-f"), "podman": ("rm", "-f", "-t", "0")}
_PROC_NETNS = re.compile(r"^/proc/\d+/ns/net$")


class Cli:
    """One container CLI (docker or podman), run with argv lists; failures become one line."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self._checked = False

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        self.ensure_running()
        return self._run(args, check)

    def _run(self, args: Sequence[str], check: bool) -> subprocess.CompletedProcess:
        try:
            res = subprocess.run([self.binary, *args], capture_output=True, text=True)
        except FileNotFoundError:
            raise DpulabError(f"{self.binary} is not installed (no `{self.binary}` on PATH); install it or choose another --engine") from None
        if check and res.returncode != 0:
            raise DpulabError(f"{self.binary} {args[0]} failed: {last_line(res.stderr or res.stdout)}")
        return res

    def ensure_running(self) -> None:
        """One-line error when the engine is missing or its daemon does not answer (checked once)."""
        if self._checked:
            return
        fmt = "{{.Server.Version}}" if self.binary == "docker" else "{{.Version}}"
        res = self._run(["version", "--format", fmt], check=False)
        if res.returncode != 0:
            raise DpulabError(f"{self.binary} is not running or not reachable: {last_line(res.stderr or res.stdout)}")
        self._checked = True

    def answers(self) -> bool:
        try:
            self.ensure_running()
        except DpulabError:
            return False
        return True

    def inspect(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Containers by name; names that do not exist are simply absent."""
        if not names:
            return {}
        res = self.run("inspect", "--type", "container", *names, check=False)
        found = json.loads(res.stdout or "[]") or []
        return {c["Name"].lstrip("/"): c for c in found}

    def names(self, label: str, value: str) -> list[str]:
        res = self.run("ps", "-a", "--filter", f"label={label}={value}", "--format", "{{.Names}}")
        return sorted(res.stdout.split())

    def network(self, name: str) -> dict[str, Any] | None:
        """A network as {labels, subnets}, whichever engine's JSON shape; None if there is none."""
        res = self.run("network", "inspect", name, check=False)
        if res.returncode != 0:
            return None
        (net,) = json.loads(res.stdout)
        if "IPAM" in net:  # docker
            subnets = [c.get("Subnet") for c in net["IPAM"].get("Config") or []]
            labels = net.get("Labels") or {}
        else:  # podman (netavark)
            subnets = [s.get("subnet") for s in net.get("subnets") or []]
            labels = net.get("labels") or {}
        return {"labels": labels, "subnets": [s for s in subnets if s]}

    def image_present(self, image: str) -> bool:
        return self.run("image", "inspect", image, check=False).returncode == 0

    def pull(self, image: str) -> None:
        res = self.run("pull", "-q", image, check=False)
        if res.returncode != 0:
            raise DpulabError(
                f"image {image} is not in {self.binary} and cannot be pulled ({last_line(res.stderr)}); "
                f"`{self.binary} pull` or load it, or set containers.image"
            )


def last_line(text: str) -> str:
    """The line of an engine's output that says what went wrong (syslog noise skipped)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "failed to connect to syslog" not in ln]
    errors = [ln for ln in lines if ln.startswith(("ERROR", "Error", "error"))]
    return (errors or lines or ["no output"])[-1]


def networks_of(info: dict[str, Any]) -> list[str]:
    """The container networks a container is attached to (`none` is no network)."""
    return sorted(set((info.get("NetworkSettings") or {}).get("Networks") or {}) - {"none"})


def link_netns(node: str, pid: int) -> None:
    """Keep /run/netns/<node> pointing at the node's namespace; a restart changes the pid.

    A link to a process that is gone, or into this very namespace, is ours to replace;
    anything else under that name is not ours and is left alone.
    """
    p = namespaces.path(node)
    target = f"/proc/{pid}/ns/net"
    if p.is_symlink():
        current = os.readlink(p)
        if current == target:
            return
        stale = _PROC_NETNS.match(current) and (not os.path.exists(current) or namespaces.inode(current) == namespaces.inode(target))
        if not stale:
            raise NotOursError(f"{p} exists and points elsewhere ({current}); not touching it")
        p.unlink()
    elif os.path.lexists(p):
        raise NotOursError(f"{p} exists and is not node {node}'s namespace; not touching it")
    namespaces.link_pid(node, pid)


def unlink_netns(node: str) -> None:
    """Drop /run/netns/<node> if it is a link into /proc whose process is gone (never a mount)."""
    p = namespaces.path(node)
    if p.is_symlink() and _PROC_NETNS.match(os.readlink(p)) and not os.path.exists(p):
        p.unlink()


class ContainerEngine(Engine):
    """docker or podman: every node a labelled container, the cluster network a labelled network."""

    def __init__(self, topo: Topology, binary: str = "docker") -> None:
        super().__init__(topo)
        self.name = binary  # type: ignore[misc]  # the engine is named after its CLI
        self.cli = Cli(binary)
        self.options = topo.spec.containers
        self._seen: dict[str, dict[str, Any]] | None = None
        self._stale: set[str] = set()
        self._to_create: list[Node] = []
        self._starting: dict[str, Future] = {}

    # -- what exists ----------------------------------------------------------------------
    @property
    def network_name(self) -> str:
        return f"dpulab-{self.topo.lab}"

    def seen(self) -> dict[str, dict[str, Any]]:
        """`inspect` of every node name, once per command (cleared when nodes change)."""
        if self._seen is None:  # names from the spec alone: kind's topology asks us for its addresses
            self._seen = self.cli.inspect([n.name for n in Topology(self.topo.spec).nodes])
        return self._seen

    def changed(self) -> None:
        self._seen = None

    def is_ours(self, node: str, info: dict[str, Any]) -> bool:
        labels = (info.get("Config") or {}).get("Labels") or {}
        return labels.get(LAB_LABEL) == self.topo.lab and labels.get(NODE_LABEL) == node

    def running(self, node: str, info: dict[str, Any]) -> int:
        """The node's pid; a one-line error if its container has died."""
        state = info.get("State") or {}
        if state.get("Status") != "running" or not state.get("Pid"):
            raise DpulabError(
                f"node container {node} has {state.get('Status', 'stopped')} (exit code {state.get('ExitCode', '?')}): "
                f"{self.revive_hint(node)}"
            )
        return int(state["Pid"])

    def revive_hint(self, node: str) -> str:
        return f"`{self.cli.binary} start {node}` and `dpulab up -n {self.topo.lab}` rewire it, or `dpulab down -n {self.topo.lab}`"

    def node_status(self, node: Node, socks: Sockets) -> NodeStatus:
        """Also keeps /run/netns/<node> on the running container (verify and wiring use it)."""
        info = self.seen().get(node.name)
        if info is None:
            return NodeStatus.MISSING
        if not self.is_ours(node.name, info):
            return NodeStatus.FOREIGN
        labels = info["Config"]["Labels"]
        if labels.get(CONFIG_LABEL) != self.config_hash(node):
            self._stale.add(node.name)  # made with other settings: replaced by `up`
            return NodeStatus.MISSING
        link_netns(node.name, self.running(node.name, info))
        return NodeStatus.OURS

    # -- desired state --------------------------------------------------------------------
    def run_argv(self, node: Node) -> list[str]:
        o = self.options
        argv = ["run", "-d", "--name", node.name, "--hostname", node.name]
        for key, value in ((LAB_LABEL, self.topo.lab), (NODE_LABEL, node.name), (ROLE_LABEL, node.role)):
            argv += ["--label", f"{key}={value}"]
        argv += ["--label", f"{CONFIG_LABEL}={self.config_hash(node)}", *o.run_options]
        if node.cluster_address:
            argv += ["--network", self.network_name, "--ip", node.cluster_address]
        else:
            argv += ["--network", "none"]  # a host: no cluster network, ever
        return [*argv, *NODE_COMMAND, o.image, "infinity"]

    def config_hash(self, node: Node) -> str:
        o = self.options
        what = [o.image, list(o.run_options), node.role, node.cluster_ip, self.topo.spec.cluster.mtu]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]

    def node_actions(self, socks: Sockets, statuses: dict[str, NodeStatus], keep: set[str] = frozenset()) -> list[Action]:
        missing = [self.topo.node(n) for n, st in statuses.items() if st is NodeStatus.MISSING]
        actions: list[Action] = []
        if missing and not self.cli.image_present(self.options.image):
            image = self.options.image
            actions.append(Action(CREATE_NODE, f"image {image}", "pull (not present)", lambda s: self.cli.pull(image)))
        actions += self.network_actions(wanted=any(n.cluster_address for n in missing))
        self._to_create = missing
        actions += [
            Action(CREATE_NODE, n.name, f"{self.cli.binary} container" + (" (replace: settings changed)" if n.name in self._stale else ""),
                   lambda s, n=n: self.create(n, s))
            for n in missing
        ]
        actions += self.isolate_actions(statuses)
        wanted = {n.name for n in self.topo.nodes}
        surplus = [n for n in self.cli.names(LAB_LABEL, self.topo.lab) if n not in wanted]
        actions += [
            Action(DELETE_NODE, n, "ours, no longer in the lab", lambda s, n=n: self.delete_nodes([n], s)) for n in surplus
        ]
        return actions

    def network_actions(self, wanted: bool) -> list[Action]:
        net, name = self.cli.network(self.network_name), self.network_name
        subnet = self.topo.spec.cluster.subnet
        if net is None:
            if not wanted:
                return []
            argv = ["network", "create", "--driver", "bridge", "--subnet", subnet, "--label", f"{LAB_LABEL}={self.topo.lab}",
                    "--opt", f"{MTU_OPTION[self.cli.binary]}={self.topo.spec.cluster.mtu}", name]
            return [Action(CREATE_NODE, f"network {name}", subnet, lambda s: self.create_network(argv))]
        if net["labels"].get(LAB_LABEL) != self.topo.lab:
            raise NotOursError(f"{self.cli.binary} network {name} exists and is not part of lab {self.topo.lab!r}; not touching it")
        if subnet not in net["subnets"]:
            raise DpulabError(
                f"network {name} has subnet {', '.join(net['subnets'])}, the lab asks for {subnet}: `dpulab down -n {self.topo.lab}` first"
            )
        return []

    def create_network(self, argv: list[str]) -> None:
        res = self.cli.run(*argv, check=False)
        if res.returncode != 0:
            why = last_line(res.stderr)
            hint = "; set cluster.subnet to a free range" if "overlap" in why.lower() else ""
            raise DpulabError(f"{self.cli.binary} network create {argv[-1]} failed: {why}{hint}")

    def create(self, node: Node, socks: Sockets) -> None:
        """The first create starts every missing node at once (a `run` takes ~0.3 s); each waits for its own."""
        if not self._starting:
            stale = [n for n in self._to_create if n.name in self._stale]
            self.remove([n.name for n in stale], socks)
            with ThreadPoolExecutor(max_workers=8) as pool:
                self._starting = {n.name: pool.submit(self.start, n) for n in self._to_create}
        self._starting[node.name].result()
        self.changed()
        link_netns(node.name, self.running(node.name, self.seen()[node.name]))

    def start(self, node: Node) -> None:
        res = self.cli.run(*self.run_argv(node), check=False)
        if res.returncode != 0:
            self.cli.run(*FORCE_RM[self.cli.binary], node.name, check=False)  # a created-but-not-started container
            why = last_line(res.stderr)
            hint = ""
            if "--privileged" in self.options.run_options and "caps" in why:
                hint = "; this machine cannot run --privileged containers: set containers.run_options to the capability set (see `dpulab schema`)"
            raise DpulabError(f"{self.cli.binary} run {node.name} failed: {why}{hint}")

    def isolate_actions(self, statuses: dict[str, NodeStatus]) -> list[Action]:
        """Hosts on any container network are taken off it: a host reaches the cluster only via its DPU."""
        actions = []
        for host in self.topo.hosts:
            info = self.seen().get(host.name)
            attached = networks_of(info) if info is not None and statuses[host.name] is NodeStatus.OURS else []
            if attached:
                actions.append(Action(CLUSTER, host.name, f"disconnect from {', '.join(attached)} (isolate the host)",
                                      lambda s, h=host.name: self.isolate(h)))
        return actions

    def isolate(self, host: str) -> None:
        self.changed()
        for net in networks_of(self.seen()[host]):
            self.cli.run("network", "disconnect", net, host)
        self.changed()

    # -- removal --------------------------------------------------------------------------
    def orphans(self) -> list[str]:
        """Our containers and network, found by label, plus links left to nodes that are gone."""
        res = self.cli.run("network", "ls", "--filter", f"label={LAB_LABEL}={self.topo.lab}", "--format", "{{.Name}}")
        return self.cli.names(LAB_LABEL, self.topo.lab) + res.stdout.split() + self.dangling()

    def dangling(self) -> list[str]:
        return [n.name for n in self.topo.nodes if namespaces.path(n.name).is_symlink() and not os.path.exists(namespaces.path(n.name))]

    def delete_nodes(self, names: Sequence[str], socks: Sockets) -> list[str]:
        infos = self.cli.inspect(list(names))
        ours = [n for n in names if n in infos and self.is_ours(n, infos[n])]
        self.remove(ours, socks)
        removed = list(ours)
        net = self.cli.network(self.network_name) if self.network_name in names else None
        if net is not None and net["labels"].get(LAB_LABEL) == self.topo.lab:
            self.cli.run("network", "rm", self.network_name)
            removed.append(self.network_name)
        for n in names:
            if n not in infos and namespaces.path(n).is_symlink():
                unlink_netns(n)
        return removed

    def remove(self, names: Sequence[str], socks: Sockets) -> None:
        """Remove containers (already known to be ours) and their namespace links."""
        if not names:
            return
        for n in names:
            socks.forget(n)
        res = self.cli.run(*FORCE_RM[self.cli.binary], *names, check=False)
        if res.returncode != 0:
            left = [n for n, info in self.cli.inspect(names).items() if (info.get("State") or {}).get("Status") != "removing"]
            if left:  # anything but a removal already under way
                raise DpulabError(f"{self.cli.binary} rm {', '.join(left)} failed: {last_line(res.stderr)}")
        for n in names:
            unlink_netns(n)
        self.changed()

    def exec(self, node: str, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """Run argv inside the node's container (its own filesystem and tools)."""
        return subprocess.run([self.cli.binary, "exec", node, *argv], **kw)
