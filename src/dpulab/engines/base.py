"""The engine interface (after kind's provider): nodes, their namespaces, exec, cluster network."""

from __future__ import annotations

import enum
import subprocess
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Sequence

from .. import namespaces

if TYPE_CHECKING:
    from ..netlink import Sockets
    from ..plan import Action
    from ..topology import Node, Topology


class NodeStatus(enum.Enum):
    MISSING = "missing"
    OURS = "ours"
    FOREIGN = "foreign"  # a same-named object without this lab's mark: never touched


class Engine(ABC):
    """What differs between netns, docker, podman and kind: everything else is shared."""

    name: ClassVar[str]

    def __init__(self, topo: "Topology") -> None:
        self.topo = topo

    def netns(self, node: str) -> str:
        """The node's namespace, as a name under /run/netns (a mount or a link to a container's)."""
        return node

    @abstractmethod
    def node_status(self, node: "Node", socks: "Sockets") -> NodeStatus: ...

    @abstractmethod
    def node_actions(self, socks: "Sockets", statuses: dict[str, NodeStatus], keep: set[str]) -> list["Action"]:
        """Actions that bring nodes and the cluster network to the desired state.

        `keep`: namespaces of ours that are not nodes but must stay (pods).
        """

    @abstractmethod
    def delete_nodes(self, names: Sequence[str], socks: "Sockets") -> list[str]:
        """Delete these nodes if they carry our mark; return what was removed."""

    @abstractmethod
    def orphans(self) -> list[str]:
        """Objects of this lab the engine can find by mark (for `down` without a state file)."""

    def exec(self, node: str, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """Run argv inside the node's network namespace."""
        return subprocess.run(
            ["nsenter", f"--net={namespaces.path(self.netns(node))}", "--", *argv], **kw
        )
