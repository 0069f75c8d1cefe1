"""The intent journal: what a command is about to create, written before it creates it.

A namespace is marked from inside before its name appears (namespaces.create), so the
only thing a kill can leave unmarked is the empty placeholder file its mount goes on.
Whether that placeholder is ours, the journal says: `<run dir>/creating/<namespace>`
exists from just before the placeholder is made until the mount is in place. A
placeholder with a journal entry is ours-in-progress (removed and remade by `up`,
removed by `down` and `gc`); without one it is someone else's and is left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import namespaces
from .state import run_dir

JOURNAL = "creating"


def journal_dir(lab: str) -> Path:
    return run_dir(lab) / JOURNAL


def record(lab: str, ns: str) -> None:
    """Note that `ns` is about to be created (before anything of it exists)."""
    d = journal_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    os.close(os.open(d / ns, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def done(lab: str, ns: str) -> None:
    try:
        os.unlink(journal_dir(lab) / ns)
    except FileNotFoundError:
        pass


def entries(lab: str, root: Path | None = None) -> list[str]:
    """Namespaces the lab's journal lists (`root`: a run directory read directly, for gc)."""
    d = (root / JOURNAL) if root is not None else journal_dir(lab)
    try:
        return sorted(n for n in os.listdir(d) if not n.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def leftover(lab: str, ns: str, root: Path | None = None) -> bool:
    """Is /run/netns/<ns> a placeholder this lab's interrupted create left behind?"""
    d = (root / JOURNAL) if root is not None else journal_dir(lab)
    return (d / ns).is_file() and namespaces.is_placeholder(ns)


def leftovers(lab: str, root: Path | None = None) -> list[str]:
    return [ns for ns in entries(lab, root) if leftover(lab, ns, root)]
