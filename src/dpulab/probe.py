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
