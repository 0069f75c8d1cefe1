"""`dpulab events`: what changes in a lab, as it happens.

Sources, all waited on by one select():
- rtnetlink link notifications (RTNLGRP_LINK), from a socket opened inside each of the
  lab's namespaces: links added, removed, renamed, going up or down;
- inotify on /run/netns (namespaces appearing and going away: nodes, pods) and on the
  lab's run directory (state.json is replaced atomically: pods added and removed);
- a pidfd per running daemon (readable when it exits), and a slow poll of the pidfiles
  for daemons that (re)start.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import namespaces
from .netlink import NLMSG_DONE, NLMSG_ERROR, RTM_DELLINK, RTM_NEWLINK, LinkInfo, Rtnl, messages
from .state import STATE_FILE, LabState, run_dir
from .topology import Topology

RTMGRP_LINK = 0x1

# inotify (linux/inotify.h)
IN_CLOEXEC, IN_NONBLOCK = 0o2000000, 0o4000
IN_CREATE, IN_DELETE, IN_MOVED_TO, IN_CLOSE_WRITE, IN_DELETE_SELF = 0x100, 0x200, 0x80, 0x8, 0x400
_EV = struct.Struct("=iIII")


@dataclass
class Event:
    kind: str  # link | node | pod | daemon | lab
    action: str  # added | removed | up | down | renamed | started | exited
    node: str  # a node, pod, or namespace name
    subject: str = ""  # interface, daemon component, pod name
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"time": round(self.time, 6), "kind": self.kind, "action": self.action, "node": self.node,
                "subject": self.subject, "detail": self.detail, **self.extra}

    def line(self) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time * 1000) % 1000:03d}"
        what = f"{self.kind} {self.subject}".rstrip() if self.kind != "node" else "namespace"
        text = f"{ts}  {self.node:<22} {what} {self.action}"
        return text + (f"  ({self.detail})" if self.detail else "")


class _Inotify:
    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.watches: dict[int, str] = {}

    def watch(self, path: str, mask: int) -> bool:
        wd = self._libc.inotify_add_watch(self.fd, path.encode(), mask)
        if wd < 0:
            return False
        self.watches[wd] = path
        return True

    def read(self) -> list[tuple[str, int, str]]:
        """(watched dir, mask, name) of every pending event."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        out, off = [], 0
        while off + _EV.size <= len(data):
            wd, mask, _cookie, n = _EV.unpack_from(data, off)
            name = data[off + _EV.size: off + _EV.size + n].split(b"\0", 1)[0].decode(errors="replace")
            out.append((self.watches.get(wd, ""), mask, name))
            off += _EV.size + n
        return out

    def close(self) -> None:
        os.close(self.fd)


def _link_socket(ns: str) -> socket.socket:
    """A NETLINK_ROUTE socket inside the namespace, subscribed to link notifications."""
    with namespaces.entered(str(namespaces.path(ns))):
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK, 0)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((0, RTMGRP_LINK))
    except OSError:
        s.close()
        raise
    return s


def _prime(s: socket.socket, timeout: float = 2.0) -> dict[int, LinkInfo]:
    """Dump the links on the subscribed socket itself: notifications queued before the dump's
    end are older than it and only update the picture; those after it are news."""
    from .netlink import DUMP_LINKS

    seq = 0x5EED
    s.sendto(DUMP_LINKS.encode(seq, {}), (0, 0))
    links: dict[int, LinkInfo] = {}
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OSError(errno.ETIMEDOUT, "link dump timed out")
        select.select([s], [], [], left)
        try:
            data = s.recv(1 << 20)
        except BlockingIOError:
            continue
        for off, mtype, mseq in messages(data):
            if mtype == RTM_NEWLINK:
                li = LinkInfo.from_bytes(data, off)
                links[li.index] = li
            elif mtype == RTM_DELLINK:
                links.pop(LinkInfo.from_bytes(data, off).index, None)
            elif mtype in (NLMSG_DONE, NLMSG_ERROR) and mseq == seq:
                return links


def _state_of(li: LinkInfo) -> str:
    return "up" if li.up and li.oper_up else "down"


class Watcher:
    """Follows one lab; `events()` yields Event as they come."""

    def __init__(self, lab: str, *, poll: float = 0.5) -> None:
        self.lab = lab
        self.poll = poll
        self.state = LabState.require(lab)
        self.socks: dict[str, socket.socket] = {}  # namespace -> subscribed socket
        self.links: dict[str, dict[int, LinkInfo]] = {}  # namespace -> ifindex -> last seen
        self.pidfds: dict[int, tuple[str, str, int]] = {}  # pidfd -> (node, component, pid)
        self.daemon_pids: dict[tuple[str, str], int] = {}
        self.pods: dict[str, dict] = dict(self.state.pods)
        self.inotify = _Inotify()
        self.inotify.watch(str(namespaces.NETNS_DIR), IN_CREATE | IN_DELETE | IN_MOVED_TO)
        self.inotify.watch(str(run_dir(lab)), IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF)
        self._names: dict[str, str] = {}  # namespace -> the node or pod it is
        self._pending: list[Event] = []
        self._refresh(initial=True)

    # -- what to watch ----------------------------------------------------------------------
    def _topology(self) -> tuple[Topology, Any]:
        """The lab's topology and engine, made again only when its spec changes."""
        from .engines import get_engine

        spec = self.state.spec
        if getattr(self, "_cached", None) is None or self._cached[0] != spec:
            topo = Topology(spec)
            self._cached = (spec, topo, get_engine(spec.engine, topo))
        return self._cached[1], self._cached[2]

    def _wanted(self) -> dict[str, str]:
        topo, engine = self._topology()
        out = {engine.netns(n.name): n.name for n in topo.nodes}
        cns = getattr(engine, "cluster_ns", None)
        if cns:
            out[cns] = cns
        for p in self.pods.values():
            out[p["netns"]] = f"pod/{p['name']}"
        return out

    def _refresh(self, initial: bool = False) -> None:
        """Open sockets for namespaces that appeared, drop those that went; (re)read daemons."""
        wanted = self._wanted()
        self._names.update(wanted)
        for ns in list(self.socks):
            if ns not in wanted or not namespaces.exists(ns):
                self._drop(ns, announce=not initial)
        for ns, who in wanted.items():
            if ns in self.socks or not namespaces.exists(ns):
                continue
            try:
                s = _link_socket(ns)
            except OSError:
                continue  # not a namespace yet (being made): the next poll retries
            try:
                now = _prime(s)
            except OSError:
                s.close()
                continue
            self.socks[ns] = s
            self.links[ns] = now
            if not initial:
                self._emit(Event("node", "added", who, detail=f"{len(now)} interfaces"))
        self._daemons(initial)

    def _drop(self, ns: str, announce: bool) -> None:
        s = self.socks.pop(ns, None)
        if s:
            s.close()
        self.links.pop(ns, None)
        if announce:
            self._emit(Event("node", "removed", self._names.get(ns, ns)))

    def _daemons(self, initial: bool) -> None:
        if self.state.spec.dataplane != "ovn":
            return
        from .dataplane import Dataplane

        topo, engine = self._topology()
        for d in Dataplane(topo, engine).all_daemons():
            key = (d.node, d.component)
            pid = d.pid()
            if pid is None or self.daemon_pids.get(key) == pid:
                continue
            self.daemon_pids[key] = pid
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            self.pidfds[fd] = (d.node, d.component, pid)
            if not initial:
                self._emit(Event("daemon", "started", d.node, d.component, f"pid {pid}", {"pid": pid}))

    # -- turning notifications into events --------------------------------------------------
    def _emit(self, ev: Event) -> None:
        self._pending.append(ev)

    def _netlink(self, ns: str) -> None:
        s = self.socks.get(ns)
        if s is None:
            return
        who = self._names.get(ns, ns)
        while True:
            try:
                data = s.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # we fell behind: re-read the links, report differences
                    self._resync(ns)
                    continue
                return
            for off, mtype, _seq in messages(data):
                if mtype in (RTM_NEWLINK, RTM_DELLINK):
                    self._link_msg(ns, who, mtype, LinkInfo.from_bytes(data, off))

    def _link_msg(self, ns: str, who: str, mtype: int, li: LinkInfo) -> None:
        known = self.links.setdefault(ns, {})
        old = known.get(li.index)
        if mtype == RTM_DELLINK:
            if known.pop(li.index, None) is not None or old is None:
                self._emit(Event("link", "removed", who, li.name or (old.name if old else "?")))
            return
        known[li.index] = li
        if old is None:
            self._emit(Event("link", "added", who, li.name, _state_of(li), {"state": _state_of(li)}))
            return
        if old.name != li.name:
            self._emit(Event("link", "renamed", who, li.name, f"was {old.name}", {"was": old.name}))
        if _state_of(old) != _state_of(li):
            why = "admin down" if not li.up else "no carrier (peer down)" if not li.oper_up else ""
            self._emit(Event("link", _state_of(li), who, li.name, why))

    def _resync(self, ns: str) -> None:
        r = Rtnl(ns)
        try:
            now = {li.index: li for li in r.links().values()}
        finally:
            r.close()
        who = self._names.get(ns, ns)
        for idx, old in list(self.links.get(ns, {}).items()):
            if idx not in now:
                self._link_msg(ns, who, RTM_DELLINK, old)
        for li in now.values():
            self._link_msg(ns, who, RTM_NEWLINK, li)

    def _state_changed(self) -> None:
        st = LabState.load(self.lab)
        if st is None:
            return
        self.state = st
        now = dict(st.pods)
        for name in self.pods.keys() - now.keys():
            p = self.pods[name]
            self._emit(Event("pod", "removed", p["host"], name, f"VF {p['vf']} back on {p['host']}", {"pod": name}))
        for name in now.keys() - self.pods.keys():
            p = now[name]
            self._emit(Event("pod", "added", p["host"], name, f"VF {p['vf']} ({p['vf_netdev']}), {p['ip']}",
                             {"pod": name, "vf": p["vf"], "ip": p["ip"], "netns": p["netns"]}))
        self.pods = now
        self._refresh()

    def _pidfd(self, fd: int) -> None:
        node, component, pid = self.pidfds.pop(fd)
        os.close(fd)
        self._emit(Event("daemon", "exited", node, component, f"pid {pid}", {"pid": pid}))

    # -- the loop -------------------------------------------------------------------------
    def events(self, timeout: float | None = None) -> Iterator[Event]:
        deadline = None if timeout is None else time.monotonic() + timeout
        next_poll = time.monotonic() + self.poll
        while True:
            while self._pending:
                yield self._pending.pop(0)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            wait = min(next_poll, deadline if deadline is not None else next_poll) - now
            by_fd: dict[int, Callable[[], None]] = {self.inotify.fd: self._inotify}
            for ns, s in self.socks.items():
                by_fd[s.fileno()] = lambda ns=ns: self._netlink(ns)
            for fd in self.pidfds:
                by_fd[fd] = lambda fd=fd: self._pidfd(fd)
            ready, _, _ = select.select(list(by_fd), [], [], max(0.0, wait))
            for fd in ready:
                if fd in by_fd:
                    by_fd[fd]()
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll
                self._refresh()
                if not run_dir(self.lab).joinpath(STATE_FILE).exists() and not self.socks:
                    self._emit(Event("lab", "removed", self.lab))
                    while self._pending:
                        yield self._pending.pop(0)
                    return

    def _inotify(self) -> None:
        changed_state = False
        for where, mask, name in self.inotify.read():
            if where == str(namespaces.NETNS_DIR):
                if mask & IN_DELETE and name in self.socks:
                    self._drop(name, announce=True)
                elif mask & (IN_CREATE | IN_MOVED_TO):
                    pass  # made by unshare+mount just after the file: the poll picks it up
            elif name == STATE_FILE or mask & IN_DELETE_SELF:
                changed_state = True
        if changed_state:
            self._state_changed()
        else:
            self._refresh()

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        for fd in self.pidfds:
            os.close(fd)
        self.inotify.close()


def stream(lab: str, *, count: int | None = None, timeout: float | None = None,
           on_ready: Callable[[Watcher], None] | None = None) -> Iterator[Event]:
    w = Watcher(lab)
    try:
        if on_ready:
            on_ready(w)
        n = 0
        for ev in w.events(timeout):
            yield ev
            n += 1
            if count is not None and n >= count:
                return
    finally:
        w.close()


def to_json(ev: Event) -> str:
    return json.dumps(ev.as_dict(), sort_keys=False)
