"""Engines give each node a network namespace; wiring, verify and down are shared."""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from ..errors import DpulabError, InputError
from .base import Engine, NodeStatus

if TYPE_CHECKING:
    from ..topology import Topology

__all__ = ["Engine", "NodeStatus", "get_engine", "ENGINES", "container_engine", "marked_objects"]


def _netns() -> type[Engine]:
    from .netns import NetnsEngine

    return NetnsEngine


def _container(binary: str):
    def factory():
        from functools import partial

        from .container import ContainerEngine

        return partial(ContainerEngine, binary=binary)

    return factory


def _kind():
    from .kind import KindEngine

    return KindEngine


ENGINES = {"netns": _netns, "docker": _container("docker"), "podman": _container("podman"), "kind": _kind}
CONTAINER_ENGINE_ENV = "DPULAB_CONTAINER_ENGINE"


def container_engine() -> str:
    """docker or podman, for kind's nodes: $DPULAB_CONTAINER_ENGINE, else the first that answers."""
    forced = os.environ.get(CONTAINER_ENGINE_ENV)
    if forced:
        if forced not in ("docker", "podman"):
            raise InputError(f"{CONTAINER_ENGINE_ENV}={forced!r}: it must be docker or podman")
        return forced
    from .container import Cli

    why = []
    for binary in ("docker", "podman"):
        if shutil.which(binary) is None:
            why.append(f"{binary} is not installed")
        elif Cli(binary).answers():
            return binary
        else:
            why.append(f"{binary} does not answer (daemon not running?)")
    raise DpulabError(f"no container engine: {'; '.join(why)}")


def marked_objects(lab: str) -> list[tuple[Engine, list[str]]]:
    """For `down` without a state file (a reboot wiped /run): what each container engine
    that answers holds of the lab, found by mark, never by name alone.

    docker and podman: containers and networks labelled `dpulab.lab=<lab>`; kind on
    either: a cluster named `<lab>` whose nodes carry the lab's mark (lo's alias, the file
    in each node). An engine that is not installed or does not answer is skipped."""
    from ..spec import LabSpec
    from ..topology import Topology
    from .container import Cli, ContainerEngine
    from .kind import KindEngine

    found: list[tuple[Engine, list[str]]] = []
    for binary in ("docker", "podman"):
        if shutil.which(binary) is None or not Cli(binary).answers():
            continue
        engines = (
            ContainerEngine(Topology(LabSpec(name=lab, engine=binary, dataplane="none")), binary=binary),
            KindEngine(Topology(LabSpec(name=lab, engine="kind")), binary=binary),
        )
        for engine in engines:
            names = engine.orphans()
            if names:
                found.append((engine, names))
    return found


def get_engine(name: str, topo: "Topology", options: dict | None = None) -> Engine:
    try:
        factory = ENGINES[name]
    except KeyError:
        raise InputError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})") from None
    return factory()(topo, **(options or {}))
