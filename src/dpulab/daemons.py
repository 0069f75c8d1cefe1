"""Starting and stopping the lab's OVS/OVN daemons: each in its node's namespace, with its
own run directory (pidfile, sockets, log), stopped by pid and waited for."""

from __future__ import annotations

import os
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
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return None  # a zombie is not running
        return pid if str(self.pidfile).encode() in cmdline else None

    def start(self, args: Sequence[str], env: dict[str, str] | None = None) -> int:
        argv = [
            "nsenter", f"--net={namespaces.path(self.netns)}", "--",
            self.binary, *args,
            f"--pidfile={self.pidfile}", f"--log-file={self.logfile}",
            "--detach", "--no-chdir", "-vconsole:off",
        ]
        self.rundir.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(argv, env={**os.environ, **(env or {})}, capture_output=True, text=True)
        pid = self.pid()
        if res.returncode != 0 or pid is None:
            raise DpulabError(
                f"{self.component} on {self.node} did not start (exit {res.returncode}); log {self.logfile}: "
                + self.last_log_lines(3)
            )
        return pid

    def last_log_lines(self, n: int) -> str:
        try:
            lines = self.logfile.read_text(errors="replace").strip().splitlines()[-n:]
        except OSError:
            return "(no log)"
        return " | ".join(lines) or "(empty log)"

    def stop(self, timeout: float = 5.0) -> bool:
        """SIGTERM, wait, SIGKILL: only the pid our pidfile names, and only if it is this daemon."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid() == pid:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline += timeout
            time.sleep(0.01)
        return True

    def as_dict(self) -> dict:
        return {"node": self.node, "component": self.component, "pid": self.pid(), "log": str(self.logfile)}


def run(argv: Sequence[str], what: str, netns: str | None = None, env: dict[str, str] | None = None) -> str:
    """Run a short command (ovs-vsctl, ovn-nbctl, ethtool), raising a one-line error on failure."""
    full = ["nsenter", f"--net={namespaces.path(netns)}", "--", *argv] if netns else list(argv)
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
