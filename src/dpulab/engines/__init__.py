"""Engines give each node a network namespace; wiring, verify and down are shared."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError
from .base import Engine, NodeStatus

if TYPE_CHECKING:
    from ..topology import Topology

__all__ = ["Engine", "NodeStatus", "get_engine", "ENGINES"]


def _netns() -> type[Engine]:
    from .netns import NetnsEngine

    return NetnsEngine


ENGINES = {"netns": _netns}


def get_engine(name: str, topo: "Topology", options: dict | None = None) -> Engine:
    try:
        factory = ENGINES[name]
    except KeyError:
        raise InputError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})") from None
    return factory()(topo, **(options or {}))
