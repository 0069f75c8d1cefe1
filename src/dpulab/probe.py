"""Reachability probes run from inside namespaces, in-process: ICMP echo over raw
sockets (all probes in flight at once) and TCP connects."""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from typing import Iterable

from . import namespaces


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _raw_icmp_in(ns: str) -> socket.socket:
    with namespaces.entered(str(namespaces.path(ns))):
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)


def ping(probes: Iterable[tuple[str, str]], timeout: float = 1.0, tries: int = 3) -> dict[tuple[str, str], float | None]:
    """ICMP echo from namespace to address for every (ns, addr); RTT in ms or None.

    Every probe is sent at once and re-sent up to `tries` times within `timeout`
    (the first packets to a new neighbour may be dropped while it resolves).
    """
    probes = list(dict.fromkeys(probes))
    socks: dict[str, socket.socket] = {}
    result: dict[tuple[str, str], float | None] = {p: None for p in probes}
    ident = os.getpid() & 0xFFFF
    sent: dict[tuple[str, int], tuple[tuple[str, str], float]] = {}
    try:
        for ns, _ in probes:
            if ns not in socks:
                socks[ns] = _raw_icmp_in(ns)
                socks[ns].setblocking(False)
        deadline = time.monotonic() + timeout
        seq = 0
        for attempt in range(tries):
            for p in probes:
                if result[p] is not None:
                    continue
                seq += 1
                ns, addr = p
                hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                payload = b"dpulab-probe"
                pkt = struct.pack("!BBHHH", 8, 0, _checksum(hdr + payload), ident, seq) + payload
                try:
                    socks[ns].sendto(pkt, (addr, 0))
                except OSError:
                    continue  # unreachable: stays None
                sent[(ns, seq)] = (p, time.monotonic())
            slot_end = min(deadline, time.monotonic() + timeout / tries)
            while any(v is None for v in result.values()):
                left = slot_end - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select(list(socks.values()), [], [], left)
                for s in ready:
                    ns = next(n for n, x in socks.items() if x is s)
                    while True:
                        try:
                            data, (src, _) = s.recvfrom(2048)
                        except BlockingIOError:
                            break
                        ihl = (data[0] & 0x0F) * 4
                        typ, _, _, rid, rseq = struct.unpack_from("!BBHHH", data, ihl)
                        hit = sent.get((ns, rseq))
                        if typ == 0 and rid == ident and hit and hit[0][1] == src and result[hit[0]] is None:
                            result[hit[0]] = (time.monotonic() - hit[1]) * 1000
            if time.monotonic() >= deadline:
                break
    finally:
        for s in socks.values():
            s.close()
    return result


def tcp_connect_errno(ns: str, addr: str, port: int, timeout: float = 0.5) -> int:
    """Try a TCP connect from a namespace; 0 if it connected, else the errno it failed with."""
    with namespaces.entered(str(namespaces.path(ns))):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            return 0
        except socket.timeout:
            return errno.ETIMEDOUT
        except OSError as e:
            return e.errno or errno.EIO
    finally:
        s.close()


def tcp_exchange(pairs: Iterable[tuple[str, str, str]], port: int = 7777, timeout: float = 2.0) -> dict[tuple[str, str], str | None]:
    """For each (client ns, server ns, server addr): connect, send, read the echo back.

    Servers listen inside their namespaces; returns None per pair on success, else why.
    TCP catches what ICMP hides (broken checksum offload in the userspace datapath).
    """
    import threading

    pairs = list(pairs)
    servers: dict[str, socket.socket] = {}
    result: dict[tuple[str, str], str | None] = {}
    stop = threading.Event()

    def serve(s: socket.socket) -> None:
        s.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(timeout)
                try:
                    conn.sendall(conn.recv(64))
                except OSError:
                    pass

    threads = []
    try:
        for _, server_ns, addr in pairs:
            if server_ns in servers:
                continue
            with namespaces.entered(str(namespaces.path(server_ns))):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
                s.listen(16)
            except OSError as e:
                s.close()
                for client_ns, sns, _ in pairs:
                    if sns == server_ns:
                        result[(client_ns, sns)] = f"cannot listen on {addr}: {e.strerror}"
                continue
            servers[server_ns] = s
            t = threading.Thread(target=serve, args=(s,), daemon=True)
            t.start()
            threads.append(t)
        for client_ns, server_ns, addr in pairs:
            if (client_ns, server_ns) in result:
                continue
            payload = f"dpulab {client_ns}->{server_ns}".encode()[:64]
            with namespaces.entered(str(namespaces.path(client_ns))):
                c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(timeout)
            try:
                for attempt in range(3):
                    try:
                        c.connect((addr, port))
                        break
                    except socket.timeout:
                        if attempt == 2:
                            raise
                c.sendall(payload)
                got = c.recv(64)
                result[(client_ns, server_ns)] = None if got == payload else f"echo mismatch ({len(got)} bytes)"
            except OSError as e:
                result[(client_ns, server_ns)] = errno.errorcode.get(e.errno or 0, str(e)) if e.errno else "timed out"
            finally:
                c.close()
    finally:
        stop.set()
        for t in threads:
            t.join(1)
        for s in servers.values():
            s.close()
    return result
