"""A lab's run directory: its state file (what was asked and created) and its lock.

/run/dpulab/<lab>/ holds state.json, the lock, and a directory per daemon. The
state records intent and ownership; `verify` never trusts it for facts.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import DpulabError, InputError
from .spec import LabSpec

STATE_FILE = "state.json"


def run_root() -> Path:
    return Path(os.environ.get("DPULAB_RUN_DIR", "/run/dpulab"))


def run_dir(lab: str) -> Path:
    return run_root() / lab


def labs() -> list[str]:
    root = run_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / STATE_FILE).is_file())


class LabState:
    """The state file: spec, engine data, pods, daemons. Saved atomically after each change."""

    def __init__(self, lab: str, data: dict[str, Any]) -> None:
        self.lab = lab
        self.data = data

    @property
    def dir(self) -> Path:
        return run_dir(self.lab)

    @property
    def spec(self) -> LabSpec:
        return LabSpec.model_validate(self.data["spec"])

    @spec.setter
    def spec(self, spec: LabSpec) -> None:
        self.data["spec"] = spec.model_dump(mode="json")

    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("pods", {})

    @property
    def daemons(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("daemons", {})

    @classmethod
    def load(cls, lab: str) -> "LabState | None":
        path = run_dir(lab) / STATE_FILE
        try:
            return cls(lab, json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as e:
            raise DpulabError(f"state file {path} is unreadable ({e}); `dpulab down --name {lab}` cleans up by mark") from None

    @classmethod
    def require(cls, lab: str) -> "LabState":
        st = cls.load(lab)
        if st is None:
            raise InputError(f"no lab named {lab!r} (labs here: {', '.join(labs()) or 'none'})")
        return st

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data["updated"] = time.time()
        tmp = self.dir / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.dir / STATE_FILE)

    def remove(self) -> None:
        """Delete the run directory (only ever our own /run/dpulab/<lab>)."""
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def locked(lab: str, command: str) -> Iterator[None]:
    """Serialise commands on one lab; a second one says who holds the lock."""
    d = run_dir(lab)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another command"
            raise DpulabError(f"lab {lab!r} is busy: {holder} holds its lock") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"`dpulab {command}` (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)


def argv_summary() -> str:
    return " ".join(sys.argv[1:3]) or "dpulab"
