"""Named network namespaces, made and entered in-process (no `ip` fork per namespace).

A namespace is created by unshare() in the calling thread and bind-mounted at
/run/netns/<name> exactly as `ip netns add` does, so `ip netns exec` works on it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import DpulabError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return os.path.lexists(path(name))


def names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _ensure_dir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, so namespace mounts propagate."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    if _libc.mount(b"", bytes(NETNS_DIR), b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, "mount --make-shared /run/netns")
    # two commands doing this at once would stack two bind mounts: the directory's flock
    # (the same inode before and after the bind) lets one of them do it
    dfd = os.open(NETNS_DIR, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)
        if _libc.mount(b"", bytes(NETNS_DIR), b"none", MS_SHARED | MS_REC, None) == 0:
            return
        _check(_libc.mount(bytes(NETNS_DIR), bytes(NETNS_DIR), b"none", MS_BIND | MS_REC, None), "bind /run/netns")
        _check(_libc.mount(b"", bytes(NETNS_DIR), b"none", MS_SHARED | MS_REC, None), "share /run/netns")
    finally:
        os.close(dfd)


@contextmanager
def entered(target: str | int) -> Iterator[None]:
    """Run the body with this thread inside a network namespace (a path or an open fd)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(target, os.O_RDONLY) if isinstance(target, str) else target
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {target}")
        try:
            yield
        finally:
            _check(_libc.setns(own, CLONE_NEWNET), "setns back")
    finally:
        os.close(own)
        if isinstance(target, str):
            os.close(fd)


def create(name: str, setup: Callable[[], None] | None = None) -> None:
    """Create /run/netns/<name>; EEXIST if it is there already.

    `setup` runs inside the new namespace before it is bind-mounted, so what it does (the
    ownership mark) is there the moment the name is: no one, not even a later run of ours
    after a SIGKILL, ever sees the namespace without it. The only trace a kill can leave is
    the empty placeholder file the mount goes on (see `is_placeholder`).
    """
    with _lock:
        _ensure_dir()
        p = path(name)
        fd = os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
        own = -1
        try:
            os.close(fd)
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            try:
                if setup is not None:
                    setup()
                src = "/proc/thread-self/ns/net".encode()
                _check(_libc.mount(src, bytes(p), b"none", MS_BIND, None), f"bind-mount {p}")
            finally:
                _check(_libc.setns(own, CLONE_NEWNET), "setns back")
        except BaseException:  # an error in setup, or Ctrl-C: no placeholder stays behind
            _libc.umount2(bytes(p), MNT_DETACH)  # (mounted only if the Ctrl-C came after the mount)
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            raise
        finally:
            if own >= 0:
                os.close(own)


def is_placeholder(name: str) -> bool:
    """Is /run/netns/<name> an empty file with no namespace mounted on it (what a `create`
    killed between making the mount point and mounting leaves)? Whose it is, only the
    creator's intent journal can tell."""
    p = path(name)
    try:
        st, dst = os.lstat(p), os.stat(NETNS_DIR)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and st.st_dev == dst.st_dev


def remove(name: str) -> None:
    """Unmount and remove /run/netns/<name> (a symlink to a container's namespace is just unlinked)."""
    p = path(name)
    if p.is_symlink():
        p.unlink()
        return
    if _libc.umount2(bytes(p), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(-1, f"umount {p}")
    try:
        p.unlink()
    except FileNotFoundError:
        pass


def link_pid(name: str, pid: int) -> None:
    """Expose a container's namespace as /run/netns/<name> (containerlab does the same)."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    p = path(name)
    target = f"/proc/{pid}/ns/net"
    if p.is_symlink() and os.readlink(p) == target:
        return
    if os.path.lexists(p):
        raise DpulabError(f"{p} exists and is not a link to {target}")
    p.symlink_to(target)


def inode(target: str) -> int:
    return os.stat(target).st_ino
