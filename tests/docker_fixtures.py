"""Real container engines for the engine tests, never the machine's own docker.

A private dockerd (scripts/docker-engine.sh) on its own socket, podman where it can run
here, and a local busybox node image (no registry is reachable in CI). Labs made with
them are downed afterwards and checked for leftovers: containers, networks, namespace
links, interfaces, run directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from dpulab.spec import NO_SYS_RESOURCE

from .conftest import ROOT, netns_names, root_links_of

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "docker-engine.sh"
DAEMON = "dpulab-docker"
DOCKER_HOST = f"unix:///run/{DAEMON}.sock"
IMAGE = "dpulab-node:test"
CAP_SYS_RESOURCE = 24


def run_options() -> list[str]:
    """--privileged (the default) where root may use it, else the documented capability set."""
    bounding = int(next(ln for ln in open("/proc/self/status") if ln.startswith("CapBnd:")).split()[1], 16)
    return ["--privileged"] if bounding >> CAP_SYS_RESOURCE & 1 else list(NO_SYS_RESOURCE)


def dpulab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, with extra environment."""
    return subprocess.run([sys.executable, "-m", "dpulab", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dpulab: error: "), res.stderr
    return lines[0]


def engine(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *args], capture_output=True, text=True)


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """A private dockerd with the node image, shared by concurrent test sessions.

    Each session holds a shared lock on it; the last one out stops it, if a test session
    started it (one started by CI or by hand is left running).
    """
    if not ROOT:
        pytest.skip("needs root")
    for tool in ("dockerd", "docker"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install docker.io busybox-static)")
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = DOCKER_HOST
    users = os.open(f"/run/{DAEMON}.users", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    by_tests = Path(f"/run/{DAEMON}.by-tests")
    try:
        fcntl.flock(users, fcntl.LOCK_SH)  # waits while a last session stops it
        if engine("docker", "version").returncode != 0:
            by_tests.touch()
        subprocess.run([str(SCRIPT), "start", DAEMON], check=True, capture_output=True)
        if engine("docker", "image", "inspect", IMAGE).returncode != 0:
            subprocess.run([str(SCRIPT), "image", DAEMON, IMAGE], check=True, capture_output=True)
        yield DOCKER_HOST
    finally:
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if by_tests.exists():
                subprocess.run([str(SCRIPT), "stop", DAEMON], check=False)
                by_tests.unlink()
        except BlockingIOError:
            pass  # another session still uses it
        os.close(users)
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old


NETAVARK_USERS = Path("/run/dpulab-podman.users")  # test sessions using podman hold a shared lock
NETAVARK_LEFT = Path("/run/dpulab-podman.chains")  # chains sessions made that another session still needed


def netavark_chains() -> set[tuple[str, str, str]]:
    """(iptables binary, table, chain) of every NETAVARK* chain there is now."""
    out = set()
    for binary in ("iptables", "ip6tables"):
        if shutil.which(f"{binary}-save") is None:
            continue
        for table in ("filter", "nat", "mangle"):
            res = subprocess.run([f"{binary}-save", "-t", table], capture_output=True, text=True)
            if res.returncode == 0:
                out |= {(binary, table, ln[1:].split()[0]) for ln in res.stdout.splitlines() if ln.startswith(":NETAVARK")}
    return out


def drop_chains(chains: set[tuple[str, str, str]]) -> None:
    """Delete these chains: first every rule elsewhere that jumps to one, then their rules, then them."""
    for binary, table in {(b, t) for b, t, _ in chains}:
        mine = {c for b, t, c in chains if (b, t) == (binary, table)}
        rules = subprocess.run([binary, "-t", table, "-S"], capture_output=True, text=True).stdout
        for line in rules.splitlines():
            words = shlex.split(line)
            if words[:1] == ["-A"] and words[1] not in mine and "-j" in words and words[words.index("-j") + 1] in mine:
                subprocess.run([binary, "-t", table, "-D", *words[1:]], capture_output=True)
        for flag in ("-F", "-X"):
            for chain in sorted(mine):
                subprocess.run([binary, "-t", table, flag, chain], capture_output=True)


@contextmanager
def netavark_cleaned() -> Iterator[None]:
    """netavark leaves its NETAVARK_* iptables chains (and the jumps to them) when the last
    network goes. Those this test session saw appear are removed by the last session using
    podman, once no container is left that could still use them; chains that were there
    before are someone else's and stay."""
    before = netavark_chains()
    users = os.open(NETAVARK_USERS, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(users, fcntl.LOCK_SH)
        yield
    finally:
        made = netavark_chains() - before
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            last = True
        except BlockingIOError:
            last = False
        left = {tuple(c) for c in json.loads(NETAVARK_LEFT.read_text())} if NETAVARK_LEFT.exists() else set()
        idle = engine("podman", "ps", "-aq").stdout.strip() == ""
        if last and idle:
            drop_chains((made | left) & netavark_chains())
            NETAVARK_LEFT.unlink(missing_ok=True)
        elif made:
            NETAVARK_LEFT.write_text(json.dumps(sorted(made | left)))
        os.close(users)


@pytest.fixture(scope="session")
def podman_ready(tmp_path_factory) -> Iterator[None]:
    """podman with the node image; where crun cannot run (hybrid cgroups), runc via CONTAINERS_CONF.
    What netavark leaves of the session's networks in iptables is removed afterwards (netavark_cleaned)."""
    if not ROOT:
        pytest.skip("needs root")
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup.sh installs podman, runc and netavark)")
    with netavark_cleaned():
        yield from _podman_ready(tmp_path_factory)


def _podman_ready(tmp_path_factory) -> Iterator[None]:
    old = os.environ.get("CONTAINERS_CONF")
    if engine("podman", "image", "inspect", IMAGE).returncode != 0:
        subprocess.run([str(SCRIPT), "image", DAEMON, IMAGE], check=True, capture_output=True, env={**os.environ, "OCI_BIN": "podman"})
    probe = ["run", "--rm", "--network", "none", *run_options(), IMAGE, "true"]
    if engine("podman", *probe).returncode != 0:
        conf = tmp_path_factory.mktemp("podman") / "containers.conf"
        conf.write_text('[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n')
        os.environ["CONTAINERS_CONF"] = str(conf)
        res = engine("podman", *probe)
        if res.returncode != 0:
            pytest.skip(f"podman cannot run a container here, even with runc: {res.stderr.strip().splitlines()[-1:]}")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = old


def subnet_of(name: str) -> str:
    """A /24 per lab name, so that concurrent test sessions' networks do not overlap."""
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16)
    return f"10.{200 + h % 50}.{h // 50 % 256}.0/24"


def lab_file(path: Path, name: str, engine_name: str, **extra) -> Path:
    """A lab file on a container engine: small, no data plane, the local node image."""
    data = {
        "name": name,
        "engine": engine_name,
        "dataplane": "none",
        "pairs": 1,
        "vfs": 2,
        "cluster": {"subnet": subnet_of(name)},
        "containers": {"image": IMAGE, "run_options": run_options()},
    }
    for key, value in extra.items():
        if isinstance(value, dict):
            data.setdefault(key, {}).update(value)
        else:
            data[key] = value
    f = path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def new_name(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:6]


def ours(binary: str, what: str, label: str) -> list[str]:
    """Containers (`ps`) or networks (`network`) carrying a label, by name."""
    argv = ["ps", "-a"] if what == "ps" else ["network", "ls"]
    res = engine(binary, *argv, "--filter", f"label={label}", "--format", "{{.Names}}" if what == "ps" else "{{.Name}}")
    assert res.returncode == 0, res.stderr
    return res.stdout.split()


@contextmanager
def downed_after(name: str, binary: str, env: dict[str, str] | None = None, label: str = "dpulab.lab") -> Iterator[str]:
    """Yields the lab name; afterwards `dpulab down` must leave nothing of it anywhere."""
    try:
        yield name
    finally:
        res = dpulab("down", "--name", name, env=env)
        assert res.returncode == 0, res.stderr
        assert not ours(binary, "ps", f"{label}={name}"), "containers left behind"
        assert not ours(binary, "network", f"dpulab.lab={name}"), "networks left behind"
        assert not {n for n in netns_names() if n.startswith(name + "-")}, "namespace links left behind"
        assert not root_links_of(name), "interfaces left in the root namespace"
        assert not Path(f"/run/dpulab/{name}").exists(), "run directory left behind"


def inspect(binary: str, name: str) -> dict:
    res = engine(binary, "inspect", "--type", "container", name)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)[0]
