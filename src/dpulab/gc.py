"""`dpulab gc`: what labs whose state is gone left behind, found and removed by mark only.

A lab is gone when /run/dpulab/<lab>/state.json is not there (a `down` that was killed, a
run directory removed by hand, a reboot of /run with namespaces bind-mounted elsewhere).
What it may have left, and how each is recognised as its:

- namespaces whose `lo` alias is `dpulab:<lab>:node:<namespace>` (the mark is written
  inside the namespace before its name appears, so there is no unmarked one of ours);
- empty placeholders under /run/netns that the lab's intent journal names (a create that
  was killed between making the mount point and mounting);
- interfaces in the machine's own namespace whose alias starts `dpulab:<lab>:`;
- daemons: the pid in a pidfile under the lab's run directory, when that process was
  started with exactly that `--pidfile=`;
- the run directory itself, once nothing of the above is left.

Anything else is reported and left alone: a same-named namespace without the mark, a
pidfile naming a process that is not that daemon, a process that names one of our
pidfiles that does not name it. Each lab is handled under its lock, so a command running
on it (an `up` that has not saved its state yet) is never disturbed: gc skips it.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from . import daemons, intent, namespaces
from .errors import DpulabError
from .netlink import Rtnl
from .spec import LAB_NAME_PATTERN
from .state import STATE_FILE, LabState, locked, run_root
from .topology import MARK_PREFIX

_NODE_MARK = re.compile(rf"^{MARK_PREFIX}:({LAB_NAME_PATTERN[1:-1]}):node:(.+)$")
_ANY_MARK = re.compile(rf"^{MARK_PREFIX}:({LAB_NAME_PATTERN[1:-1]}):")

# actions
REMOVED, WOULD_REMOVE = "removed", "would remove"
STOPPED, WOULD_STOP = "stopped", "would stop"
LEFT_ALONE, SKIPPED, KEPT = "not ours: left alone", "skipped", "kept"


@dataclass
class Finding:
    kind: str  # namespace | placeholder | interface | daemon | process | run directory
    name: str
    lab: str
    action: str
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Orphan:
    """What one gone lab left, as found before anything is done."""

    lab: str
    namespaces: list[str]
    root_links: list[str]
    run_dir: Path | None


def _lo_alias(ns: str) -> str | None:
    try:
        r = Rtnl(ns)
    except OSError:
        return None
    try:
        lo = r.link("lo")
    except OSError:
        return None
    finally:
        r.close()
    return lo.alias if lo is not None else None


def _node_mark_lab(ns: str) -> str | None:
    """The lab whose node mark this namespace carries (for exactly this name), if any."""
    if namespaces.path(ns).is_symlink():
        return None  # a container's namespace, linked by its engine: that engine cleans it
    m = _NODE_MARK.match(_lo_alias(ns) or "")
    return m.group(1) if m and m.group(2) == ns else None


def _ns_users() -> dict[int, list[int]]:
    """Network namespace inode -> pids of the processes in it."""
    out: dict[int, list[int]] = {}
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                out.setdefault(os.stat(f"/proc/{e}/ns/net").st_ino, []).append(int(e))
            except OSError:
                continue
    return out


def _root_marked() -> dict[str, list[str]]:
    r = Rtnl()
    try:
        links = r.links()
    finally:
        r.close()
    out: dict[str, list[str]] = {}
    for name, info in links.items():
        m = _ANY_MARK.match(info.alias or "")
        if m:
            out.setdefault(m.group(1), []).append(name)
    return out


def _scan(findings: list[Finding], only: list[str] | None = None) -> dict[str, _Orphan]:
    root = run_root()
    live = set()
    dirs: dict[str, Path] = {}
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if not re.fullmatch(LAB_NAME_PATTERN, d.name) or d.is_symlink() or not d.is_dir():
                if only is None:
                    findings.append(Finding("run directory", str(d), "?", LEFT_ALONE, "not a run directory dpulab made"))
                continue
            if (d / STATE_FILE).exists():
                live.add(d.name)
            else:
                dirs[d.name] = d
    orphans: dict[str, _Orphan] = {}

    def orphan(lab: str) -> _Orphan:
        return orphans.setdefault(lab, _Orphan(lab, [], [], dirs.get(lab)))

    for ns in namespaces.names():
        lab = _node_mark_lab(ns)
        if lab is not None and lab not in live:
            orphan(lab).namespaces.append(ns)
    for lab, links in _root_marked().items():
        if lab not in live:
            orphan(lab).root_links += links
    for lab in dirs:
        orphan(lab)
    return orphans


def _collect_lab(o: _Orphan, dry_run: bool, findings: list[Finding]) -> None:
    lab = o.lab
    unresolved = []
    d = o.run_dir
    # daemons first (they live in the namespaces), by pidfile only
    if d is not None:
        for pidfile in sorted(d.rglob("*.pid")):
            pid = daemons.pidfile_pid(pidfile)
            if pid is not None:
                if not dry_run:
                    daemons.stop_pidfile(pidfile)
                findings.append(Finding("daemon", f"pid {pid}", lab, WOULD_STOP if dry_run else STOPPED, str(pidfile)))
                continue
            try:
                named = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                continue
            if os.path.exists(f"/proc/{named}"):
                findings.append(Finding("daemon", f"pid {named}", lab, LEFT_ALONE, f"{pidfile} names it, but it was not started with that pidfile"))
        if not dry_run:
            daemons.await_starts(d, timeout=5.0)
        for pid, pf in daemons.pidfile_claims(d).items():
            if daemons.pidfile_pid(pf) != pid:
                unresolved.append(f"pid {pid}")
                findings.append(Finding("process", f"pid {pid}", lab, LEFT_ALONE, f"names {pf}, which does not name it"))
    # namespaces, each re-checked for the mark right before it goes; one a process still
    # lives in (a lab under another DPULAB_RUN_DIR, a shell someone left in it) stays
    users = _ns_users()
    for ns in o.namespaces:
        try:
            inside = users.get(os.stat(namespaces.path(ns)).st_ino, [])
        except OSError:
            continue
        if inside and not dry_run:
            unresolved.append(ns)
            findings.append(Finding("namespace", ns, lab, KEPT, f"in use by pid {', '.join(map(str, inside[:3]))}"))
        elif dry_run:
            findings.append(Finding("namespace", ns, lab, WOULD_REMOVE, "lo carries the lab's mark"))
        elif _node_mark_lab(ns) == lab:
            namespaces.remove(ns)
            findings.append(Finding("namespace", ns, lab, REMOVED, "lo carried the lab's mark"))
    if d is not None:
        for ns in intent.entries(lab, d):
            if ns in o.namespaces or not namespaces.exists(ns):
                continue
            if intent.leftover(lab, ns, d):
                if not dry_run:
                    namespaces.remove(ns)
                findings.append(Finding("placeholder", ns, lab, WOULD_REMOVE if dry_run else REMOVED, "an interrupted create, in the lab's journal"))
            elif _node_mark_lab(ns) != lab:
                findings.append(Finding("namespace", ns, lab, LEFT_ALONE, "the lab's journal names it, but it carries no mark of the lab"))
    # interfaces in the machine's own namespace
    if o.root_links:
        r = Rtnl()
        try:
            for name in o.root_links:
                info = r.link(name)
                m = _ANY_MARK.match((info.alias if info else None) or "")
                if info is None or not m or m.group(1) != lab:
                    continue
                if not dry_run:
                    r.del_link(name)
                    r.run()
                findings.append(Finding("interface", name, lab, WOULD_REMOVE if dry_run else REMOVED, info.alias or ""))
        finally:
            r.close()
    # the run directory, once nothing in it is alive
    if d is not None or not dry_run:
        path = d or (run_root() / lab)
        if dry_run:
            findings.append(Finding("run directory", str(path), lab, WOULD_REMOVE, "no state file"))
        elif unresolved:
            findings.append(Finding("run directory", str(path), lab, KEPT, "still named by " + ", ".join(unresolved)))
        else:
            LabState(lab, {}).remove()
            if d is not None:
                findings.append(Finding("run directory", str(path), lab, REMOVED, "no state file"))


def gc(dry_run: bool = False, only: list[str] | None = None) -> list[Finding]:
    """Find (and unless dry_run, remove) what labs without a state file left behind
    (`only`: just these labs)."""
    findings: list[Finding] = []
    for lab, o in sorted(_scan(findings, only).items()):
        if only is not None and lab not in only:
            continue
        if dry_run:
            _collect_lab(o, True, findings)
            continue
        try:
            with locked(lab, "gc"):
                if (run_root() / lab / STATE_FILE).exists():
                    continue  # an `up` made it a live lab meanwhile
                _collect_lab(o, False, findings)
        except DpulabError as e:  # busy: a command runs on it
            findings.append(Finding("lab", lab, lab, SKIPPED, str(e)))
    return findings
