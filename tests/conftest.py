"""Shared fixtures. Tests that need root skip without it; each lab test uses its own lab name."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (real network namespaces)")
DPULAB = [sys.executable, "-m", "dpulab"]


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run([*DPULAB, *args], capture_output=True, text=True, check=check)


def netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def root_links_of(lab: str) -> set[str]:
    """Root-namespace interfaces carrying this lab's mark (others may come and go meanwhile)."""
    out = set()
    for name in os.listdir("/sys/class/net"):
        try:
            alias = Path(f"/sys/class/net/{name}/ifalias").read_text().strip()
        except OSError:
            continue
        if alias.startswith(f"dpulab:{lab}:"):
            out.add(name)
    return out


def ifindexes(ns: str) -> dict[str, int]:
    """Interface name -> ifindex in a namespace, read from the kernel."""
    from dpulab.netlink import Rtnl

    r = Rtnl(ns)
    try:
        return {n: li.index for n, li in r.links().items()}
    finally:
        r.close()


@pytest.fixture
def lab_name() -> str:
    """A lab name no other test (or parallel run) uses."""
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture
def clean_lab(lab_name):
    """Yields a lab name; afterwards downs it and asserts nothing of it is left."""
    yield lab_name
    run_cli("down", "--name", lab_name)
    leftovers = {n for n in netns_names() if n.startswith(lab_name + "-")}
    assert not leftovers, f"namespaces left behind: {leftovers}"
    assert not Path(f"/run/dpulab/{lab_name}").exists(), "run directory left behind"
    assert not root_links_of(lab_name), f"interfaces left in the root namespace: {root_links_of(lab_name)}"
