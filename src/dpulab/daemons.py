"""Starting and stopping the lab's OVS/OVN daemons: each in its node's namespace, with its
own run directory (pidfile, sockets, log), stopped by pid and waited for."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import namespaces
from .errors import DpulabError


@dataclass(frozen=True)
class Daemon:
    """One daemon: `binary` run in `netns`, detached, with files under `rundir`."""

    node: str
    component: str  # e.g. ovsdb-server, ovs-vswitchd, ovn-controller, ovnnb, ovnsb, ovn-northd
    binary: str
    netns: str
    rundir: Path

    @property
    def pidfile(self) -> Path:
        return self.rundir / f"{self.component}.pid"

    @property
    def logfile(self) -> Path:
        return self.rundir / f"{self.component}.log"

    def pid(self) -> int | None:
        """The pid in the pidfile, if that process is alive and is this daemon."""
        return pidfile_pid(self.pidfile)

    def start(self, args: Sequence[str], env: dict[str, str] | None = None) -> int:
        # a start that a killed dpulab left in flight finishes (or fails) first: two would race
        # for the pidfile and the database lock, and the loser would fail this `up`
        await_starts(self.pidfile)
        pid = self.pid()
        if pid is not None:
            return pid
        argv = [
            "nsenter", f"--net={namespaces.path(self.netns)}", "--",
            self.binary, *args,
            f"--pidfile={self.pidfile}", f"--log-file={self.logfile}",
            "--detach", "--no-chdir", "-vconsole:off",
        ]
        self.rundir.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, text=True)
        pid = self.pid()
        if pid is None:  # (a failed start next to a running one, e.g. one a killed up left, is fine)
            raise DpulabError(
                f"{self.component} on {self.node} did not start (exit {res.returncode}); log {self.logfile}: "
                + self.last_log_lines(3)
            )
        return pid

    def stale(self) -> bool:
        """Running, but not in the node's namespace: that was deleted (by hand) and remade."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat(namespaces.path(self.netns)).st_ino
        except OSError:
            return False

    def last_log_lines(self, n: int) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").strip().splitlines()[-n:]
        except OSError:
            return "(no log)"
        return " | ".join(lines) or "(empty log)"

    def stop(self, timeout: float = 5.0) -> bool:
        """SIGTERM, wait, SIGKILL: only the pid our pidfile names, and only if it is this daemon."""
        return stop_pidfile(self.pidfile, timeout)

    def as_dict(self) -> dict:
        return {"node": self.node, "component": self.component, "pid": self.pid(), "log": str(self.logfile)}


def pidfile_pid(pidfile: Path) -> int | None:
    """The pid a pidfile names, if that process is alive (not a zombie) and was started with
    exactly this pidfile: the only way dpulab ever finds a process to stop."""
    try:
        pid = int(pidfile.read_text().strip())
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    if stat.rsplit(") ", 1)[-1].startswith("Z"):
        return None  # a zombie is not running
    return pid if f"--pidfile={pidfile}".encode() in args else None


def _alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1].startswith("Z")
    except OSError:
        return False


def pidfile_claims(under: Path) -> dict[int, Path]:
    """Live processes started with `--pidfile=` a path inside `under`, by the pidfile they were
    given. Read only: whoever they are, they are stopped only through that pidfile."""
    prefix = f"--pidfile={under}/".encode()
    out: dict[int, Path] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for a in args:
            if a.startswith(prefix) and _alive(int(entry)):
                out[int(entry)] = Path(a[len("--pidfile="):].decode(errors="replace"))
                break
    return out


def await_starts(pidfile_or_dir: Path, timeout: float = 10.0) -> dict[int, Path]:
    """Wait until no process is still starting up with a pidfile at this path (or under this
    directory) that does not yet name it: a daemon whose start a killed command left in
    flight. Returns the ones still starting at the timeout (reported, never killed)."""
    exact = pidfile_or_dir.suffix == ".pid"
    under = pidfile_or_dir.parent if exact else pidfile_or_dir
    deadline = time.monotonic() + timeout
    while True:
        pending = {
            pid: pf
            for pid, pf in pidfile_claims(under).items()
            if (not exact or pf == pidfile_or_dir) and pidfile_pid(pf) != pid
        }
        if not pending or time.monotonic() > deadline:
            return pending
        time.sleep(0.05)


def stop_all(root: Path, timeout: float = 5.0) -> list[str]:
    """Stop every daemon with a pidfile anywhere under `root` (a lab's run directory), by pid,
    after waiting for any start still in flight; returns the pidfiles whose daemon was stopped."""
    if not root.is_dir() or root.is_symlink():
        return []
    await_starts(root)
    stopped = []
    for pidfile in sorted(root.rglob("*.pid")):
        if stop_pidfile(pidfile, timeout):
            stopped.append(str(pidfile.relative_to(root)))
    return stopped


def stop_pidfile(pidfile: Path, timeout: float = 5.0) -> bool:
    """SIGTERM, wait, SIGKILL: only the pid the pidfile names, and only if it is that daemon."""
    pid = pidfile_pid(pidfile)
    if pid is None:
        return False
    deadline = time.monotonic() + timeout
    sig = signal.SIGTERM
    while pidfile_pid(pidfile) == pid:
        try:
            if sig:
                os.kill(pid, sig)
                sig = None
            elif time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline += timeout
        except ProcessLookupError:
            break
        time.sleep(0.01)
    return True


def _pdeathsig(argv: list[str]) -> list[str]:
    """Run a helper so that it dies with us: a killed `up` leaves no ovs-vsctl retrying for
    20 s, no ovsdb-tool writing into a run directory `down` is removing."""
    return ["setpriv", "--pdeathsig", "KILL", "--", *argv] if _SETPRIV else argv


_SETPRIV = shutil.which("setpriv") is not None


def run(argv: Sequence[str], what: str, netns: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run a short command (ovs-vsctl, ovn-nbctl, ethtool), raising a one-line error on failure."""
    full = ["nsenter", f"--net={namespaces.path(netns)}", "--", *argv] if netns else list(argv)
    if shutil.which(argv[0]) is None:
        raise DpulabError(f"{argv[0]} is not installed (Debian: openvswitch-switch ovn-central ovn-host ethtool)")
    full = _pdeathsig(full)
    try:
        res = subprocess.run(full, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise DpulabError(f"{argv[0]} is not installed (Debian: openvswitch-switch ovn-central ovn-host ethtool)") from None
    except subprocess.TimeoutExpired:
        raise DpulabError(f"{what}: {argv[0]} timed out") from None
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise DpulabError(f"{what}: {msg[-1] if msg else f'exit {res.returncode}'}")
    return res.stdout
