"""A lab's run directory: its state file (what was asked and created) and its lock.

/run/dpulab/<lab>/ holds state.json, the lock, and a directory per daemon. The
state records intent and ownership; `verify` never trusts it for facts.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import DpulabError, InputError
from .spec import LAB_NAME_PATTERN, LabSpec

STATE_FILE = "state.json"


def run_root() -> Path:
    return Path(os.environ.get("DPULAB_RUN_DIR", "/run/dpulab"))


def run_dir(lab: str) -> Path:
    """The lab's run directory. The name is checked here, where every path starts, so no
    name (`..`, `/`, empty) ever leads anything outside /run/dpulab/<lab>."""
    if not isinstance(lab, str) or not re.fullmatch(LAB_NAME_PATTERN, lab):
        raise InputError(f"{lab!r} is not a lab name: lowercase letters, digits and '-', starting with a letter, at most 20")
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
        """Delete the run directory (only ever our own /run/dpulab/<lab>; never through a link)."""
        for _ in range(5):  # a helper of a killed command may still be writing a file into it
            shutil.rmtree(self.dir, ignore_errors=True)
            if not os.path.lexists(self.dir):
                return
            time.sleep(0.05)


@contextmanager
def locked(lab: str, command: str) -> Iterator[None]:
    """Serialise commands on one lab; a second one says who holds the lock."""
    d = run_dir(lab)
    if d.is_symlink():
        raise DpulabError(f"{d} is a symbolic link, not a run directory dpulab made; not following it")
    holder = ""
    for _ in range(40):
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if holder:
                raise DpulabError(f"lab {lab!r} is busy: {holder} holds its lock") from None
            time.sleep(0.005)  # the holder has not written its name yet, or is just leaving
            continue
        # the holder before us (down, gc) may have removed the directory with the lock file
        # we opened: that lock guards nothing, take the new one
        try:
            st, now = os.fstat(fd), os.stat(d / "lock", follow_symlinks=False)
            current = (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    else:
        raise DpulabError(f"lab {lab!r} is busy: another command holds its lock")
    try:
        text = f"`dpulab {command}` (pid {os.getpid()})\n".encode()
        os.pwrite(fd, text, 0)
        os.ftruncate(fd, len(text))
        yield
    finally:
        try:
            os.ftruncate(fd, 0)  # no stale name for the next holder's first instant
        except OSError:
            pass
        _tidy(d)  # still holding the lock
        os.close(fd)


def _tidy(d: Path) -> None:
    """A command that made nothing (`pod add` on a lab that is not there, an `up` refused)
    leaves no run directory behind: just the lock file (and an empty journal) go."""
    try:
        if (d / STATE_FILE).exists() or not set(os.listdir(d)) <= {"lock", "creating"}:
            return
        if (d / "creating").exists():
            (d / "creating").rmdir()  # fails, and so keeps everything, unless empty
        (d / "lock").unlink()
        d.rmdir()
    except OSError:
        pass


def _holder(fd: int) -> str:
    """The lock holder's own line, if that process is still alive."""
    lines = os.pread(fd, 256, 0).decode(errors="replace").splitlines()
    text = lines[0].strip() if lines else ""
    m = re.search(r"\(pid (\d+)\)$", text)
    return text if m and os.path.exists(f"/proc/{m.group(1)}") else ""


def argv_summary() -> str:
    return " ".join(sys.argv[1:3]) or "dpulab"
