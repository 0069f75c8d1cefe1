"""The DPU data plane, as OVN-Kubernetes in DPU mode has it, with the real daemons:
OVN NB/SB + northd on the control plane; ovsdb-server + ovs-vswitchd (userspace
datapath) + ovn-controller on every DPU; Geneve (or VXLAN) between DPUs over the
cluster network; one logical switch per host joined by ovn_cluster_router; each
host's management port on VF 1, plugged on its DPU."""

from __future__ import annotations

import ctypes
import fcntl
import ipaddress
import os
import shutil
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import namespaces
from .daemons import Daemon, run
from .engines import Engine
from .netlink import Sockets
from .state import run_dir
from .topology import CLUSTER_IFNAME, Link, Node, Pair, Topology

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
NB_SCHEMA = "/usr/share/ovn/ovn-nb.ovsschema"
SB_SCHEMA = "/usr/share/ovn/ovn-sb.ovsschema"
ROUTER = "ovn_cluster_router"
BINARIES = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovn-northd", "ovn-nbctl", "ovn-controller")
SIOCETHTOOL, ETHTOOL_STXCSUM = 0x8946, 0x17


def tx_checksum_off(netns: str, ifname: str) -> None:
    """`ethtool -K <if> tx off`, in-process: the userspace datapath forwards a kernel
    sender's unfinished checksums as they are, which breaks TCP (and hides from ICMP)."""
    with namespaces.entered(str(namespaces.path(netns))):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
        ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)
    finally:
        s.close()


def create_db(db: Path, schema: str) -> None:
    """`ovsdb-tool create`, under a temporary name: a kill never leaves a half-written
    database that a later `up` would find and fail to serve."""
    tmp = db.with_name(f".{db.name}.tmp")
    tmp.unlink(missing_ok=True)
    run(["ovsdb-tool", "create", str(tmp), schema], f"create {db.name}")
    os.replace(tmp, db)


def pod_mac(ip: str) -> str:
    """OVN-Kubernetes derives a pod's MAC from its IP: 0a:58 + the four address bytes."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ipaddress.ip_address(ip).packed)


@dataclass(frozen=True)
class NodeNet:
    """A host node's slice of the pod network (OVN-K's node subnet)."""

    host: str
    subnet: ipaddress.IPv4Network

    @property
    def switch(self) -> str:
        return self.host

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def mgmt_ip(self) -> str:
        return str(self.subnet.network_address + 2)

    @property
    def router_port(self) -> str:
        return f"rtos-{self.host}"

    @property
    def mgmt_port(self) -> str:
        return f"k8s-{self.host}"

    def pod_ip(self, k: int) -> str:
        """The k-th pod address (.3 onwards: .1 is the router, .2 the management port)."""
        addr = self.subnet.network_address + 3 + k
        if addr >= self.subnet.broadcast_address:
            raise ValueError(f"node subnet {self.subnet} of {self.host} is full")
        return str(addr)


class Dataplane:
    def __init__(self, topo: Topology, engine: Engine) -> None:
        self.topo = topo
        self.engine = engine
        self.opts = topo.spec.ovn
        self.root = run_dir(topo.lab)

    # -- layout ---------------------------------------------------------------------------
    @cached_property
    def node_nets(self) -> dict[str, NodeNet]:
        subnets = ipaddress.ip_network(self.opts.pod_cidr).subnets(new_prefix=self.opts.node_prefix)
        return {pair.host.name: NodeNet(pair.host.name, next(subnets)) for pair in self.topo.pairs}

    @property
    def central_dir(self) -> Path:
        return self.root / self.topo.control_plane.name

    def central_daemons(self) -> list[Daemon]:
        cp = self.topo.control_plane
        ns = self.engine.netns(cp.name)
        return [
            Daemon(cp.name, "ovnnb", "ovsdb-server", ns, self.central_dir),
            Daemon(cp.name, "ovnsb", "ovsdb-server", ns, self.central_dir),
            Daemon(cp.name, "ovn-northd", "ovn-northd", ns, self.central_dir),
        ]

    def dpu_dir(self, dpu: Node) -> Path:
        return self.root / dpu.name

    def dpu_daemons(self, dpu: Node) -> list[Daemon]:
        ns, d = self.engine.netns(dpu.name), self.dpu_dir(dpu)
        return [
            Daemon(dpu.name, "ovsdb-server", "ovsdb-server", ns, d),
            Daemon(dpu.name, "ovs-vswitchd", "ovs-vswitchd", ns, d),
            Daemon(dpu.name, "ovn-controller", "ovn-controller", ns, d),
        ]

    def all_daemons(self) -> list[Daemon]:
        return self.central_daemons() + [d for dpu in self.topo.dpus for d in self.dpu_daemons(dpu)]

    def nbctl(self, *args: str, what: str = "OVN northbound") -> str:
        return run(["ovn-nbctl", f"--db=unix:{self.central_dir / 'ovnnb_db.sock'}", *args], what)

    def sbctl(self, *args: str) -> str:
        return run(["ovn-sbctl", f"--db=unix:{self.central_dir / 'ovnsb_db.sock'}", *args], "OVN southbound")

    def vsctl(self, dpu: Node, *args: str) -> str:
        return run(["ovs-vsctl", f"--db=unix:{self.dpu_dir(dpu) / 'db.sock'}", "--timeout=20", *args], f"OVS on {dpu.name}")

    def mgmt_link(self, pair: Pair) -> Link:
        return self.topo.links(pair)[self.opts.mgmt_vf]

    # -- bring-up -------------------------------------------------------------------------
    def up(self, socks: Sockets) -> None:
        """Start what is not running and (re)apply configuration; idempotent."""
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            from .errors import InputError

            raise InputError(
                f"the ovn data plane needs {', '.join(missing)} (Debian: openvswitch-switch ovn-central ovn-host; "
                "scripts/setup.sh installs them), or use --dataplane none"
            )
        cp = self.topo.control_plane
        tx_checksum_off(self.engine.netns(cp.name), CLUSTER_IFNAME)
        for daemon in self.all_daemons():
            if daemon.stale():  # its node's namespace was deleted and remade: start it in the new one
                daemon.stop()
        with ThreadPoolExecutor(max_workers=1 + len(self.topo.pairs)) as pool:
            central = pool.submit(self._central)
            dpus = [pool.submit(self._dpu, pair, socks) for pair in self.topo.pairs]
            central.result()
            self._logical_network()
            for f in dpus:
                f.result()
        for pair in self.topo.pairs:
            self._host_mgmt(pair, socks)

    def _central(self) -> None:
        cp = self.topo.control_plane
        d = self.central_dir
        d.mkdir(parents=True, exist_ok=True)
        nb, sb, northd = self.central_daemons()
        for daemon, schema, port in ((nb, NB_SCHEMA, 6641), (sb, SB_SCHEMA, 6642)):
            db = d / f"{daemon.component}_db.db"
            if not db.exists():
                create_db(db, schema)
            if daemon.pid() is None:
                daemon.start(
                    [str(db), f"--remote=punix:{d / f'{daemon.component}_db.sock'}",
                     f"--remote=ptcp:{port}:{cp.cluster_address}", f"--unixctl={d / f'{daemon.component}.ctl'}"]
                )
        if northd.pid() is None:
            northd.start(
                [f"--ovnnb-db=unix:{d / 'ovnnb_db.sock'}", f"--ovnsb-db=unix:{d / 'ovnsb_db.sock'}",
                 f"--unixctl={d / 'ovn-northd.ctl'}"]
            )

    def _logical_network(self) -> None:
        cmds: list[str] = ["--may-exist", "lr-add", ROUTER]
        for pair in self.topo.pairs:
            net = self.node_nets[pair.host.name]
            mgmt = self.mgmt_link(pair)
            cmds += [
                "--", "--may-exist", "ls-add", net.switch,
                "--", "set", "logical_switch", net.switch, f"other_config:subnet={net.subnet}",
                "--", "--may-exist", "lrp-add", ROUTER, net.router_port, pod_mac(net.gateway),
                f"{net.gateway}/{net.subnet.prefixlen}",
                "--", "--may-exist", "lsp-add", net.switch, f"stor-{net.host}",
                "--", "lsp-set-type", f"stor-{net.host}", "router",
                "--", "lsp-set-addresses", f"stor-{net.host}", "router",
                "--", "lsp-set-options", f"stor-{net.host}", f"router-port={net.router_port}",
                "--", "--may-exist", "lsp-add", net.switch, net.mgmt_port,
                "--", "lsp-set-addresses", net.mgmt_port, f"{mgmt.host_mac} {net.mgmt_ip}",
            ]
        self.nbctl(*cmds)

    def _dpu(self, pair: Pair, socks: Sockets) -> None:
        dpu, host = pair.dpu, pair.host
        d = self.dpu_dir(dpu)
        d.mkdir(parents=True, exist_ok=True)
        ovsdb, vswitchd, controller = self.dpu_daemons(dpu)
        env = {"OVS_RUNDIR": str(d), "OVS_DBDIR": str(d), "OVS_LOGDIR": str(d), "OVN_RUNDIR": str(d)}
        db = d / "conf.db"
        if not db.exists():
            create_db(db, OVS_SCHEMA)
        if ovsdb.pid() is None:
            ovsdb.start([str(db), f"--remote=punix:{d / 'db.sock'}", f"--unixctl={d / 'ovsdb-server.ctl'}"], env)
        self.vsctl(dpu, "--no-wait", "init")  # every time: an up killed right after the start skipped it
        if vswitchd.pid() is None:
            vswitchd.start([f"unix:{d / 'db.sock'}", f"--unixctl={d / 'ovs-vswitchd.ctl'}"], env)
        opts = self.opts
        mgmt = self.mgmt_link(pair)
        self.vsctl(
            dpu,
            "--may-exist", "add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
            "--", "--may-exist", "add-port", "br-phy", CLUSTER_IFNAME,
            "--", "--may-exist", "add-br", "br-int",
            "--", "set", "bridge", "br-int", "datapath_type=netdev", "fail-mode=secure",
            "other_config:disable-in-band=true",
            "--", "set", "open", ".",
            f"external_ids:system-id={dpu.name}",
            f"external_ids:hostname={dpu.name}",
            f"external_ids:host-k8s-nodename={host.name}",
            f"external_ids:ovn-remote=tcp:{self.topo.control_plane.cluster_address}:6642",
            f"external_ids:ovn-encap-type={opts.encap}",
            f"external_ids:ovn-encap-ip={dpu.cluster_address}",
            "external_ids:ovn-bridge-datapath-type=netdev",
            "--", "--may-exist", "add-port", "br-int", mgmt.rep_ifname,
            "--", "set", "interface", mgmt.rep_ifname, f"external_ids:iface-id=k8s-{host.name}",
        )
        self.plug(dpu, mgmt.rep_ifname, f"k8s-{host.name}", socks)  # each re-plugged if remade
        self.plug(dpu, CLUSTER_IFNAME, None, socks, bridge="br-phy")
        self._encap_ip_on_bridge(dpu, socks)
        if controller.pid() is None:
            controller.start([f"unix:{d / 'db.sock'}"], env)

    def plug(self, dpu: Node, rep: str, iface_id: str | None, socks: Sockets, bridge: str = "br-int") -> None:
        """Plug a representor into br-int with its iface-id, noting its netdev's ifindex. One
        remade since it was plugged (deleted by hand, its host rebuilt) is unplugged first, in
        a transaction of its own: OVS does not reopen a netdev for a delete and an add in one
        transaction, nor by itself, and would go on reading the old one."""
        info = socks(self.engine.netns(dpu.name)).link(rep)
        if info is None:
            from .errors import DpulabError

            raise DpulabError(f"{dpu.name}: representor {rep} is missing")
        seen = self.vsctl(dpu, "--if-exists", "get", "interface", rep, "external_ids:dpulab-ifindex").strip().strip('"')
        if seen == str(info.index):
            return
        if seen:
            self.vsctl(dpu, "--if-exists", "del-port", bridge, rep)
        self.vsctl(
            dpu, "--may-exist", "add-port", bridge, rep, "--", "set", "interface", rep,
            *([f"external_ids:iface-id={iface_id}"] if iface_id else []), f'external_ids:dpulab-ifindex="{info.index}"',
        )

    def _encap_ip_on_bridge(self, dpu: Node, socks: Sockets) -> None:
        """The tunnel endpoint address must live on OVS's br-phy, not on its uplink port."""
        r = socks(self.engine.netns(dpu.name))
        links = r.links()
        addr, plen = dpu.cluster_ip.split("/")
        have = {(i, a) for i, a, _ in r.addresses()}
        eth, br = links[CLUSTER_IFNAME], links["br-phy"]
        if (eth.index, addr) in have:
            r.del_address(eth.index, dpu.cluster_ip)
        r.set_link("br-phy", up=True, mtu=self.topo.spec.cluster.mtu)
        if (br.index, addr) not in have:
            r.add_address(br.index, dpu.cluster_ip)
        r.run()

    def _host_mgmt(self, pair: Pair, socks: Sockets) -> None:
        """The host's management netdev (VF 1): node address, route to the pod network via the DPU."""
        host, link = pair.host, self.mgmt_link(pair)
        net = self.node_nets[host.name]
        ns = self.engine.netns(host.name)
        r = socks(ns)
        info = r.links()[link.host_ifname]
        r.set_link(link.host_ifname, mtu=self.opts.pod_mtu, up=True)
        r.add_address(info.index, f"{net.mgmt_ip}/{net.subnet.prefixlen}")
        r.run()
        r.add_route(self.opts.pod_cidr, gateway=net.gateway, oif=info.index)
        r.run()
        tx_checksum_off(ns, link.host_ifname)

    # -- readiness, teardown --------------------------------------------------------------
    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until every chassis has applied the northbound state (ovn-nbctl --wait=hv)."""
        self.nbctl(f"--timeout={int(timeout)}", "--wait=hv", "sync", what="waiting for the DPUs' ovn-controllers")

    def stop(self) -> list[str]:
        stopped = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            daemons = self.all_daemons()
            for daemon, was in zip(daemons, pool.map(lambda x: x.stop(), daemons)):
                if was:
                    stopped.append(f"{daemon.node}/{daemon.component}")
        return stopped

    def retire(self) -> list[str]:
        """Stop the daemons of DPUs no longer in the lab (`up` with fewer pairs), forget their
        chassis and their hosts' switches, and remove their run directories."""
        from .daemons import stop_all

        keep = {n.name for n in self.topo.nodes}
        gone = []
        for d in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.is_symlink()) if self.root.is_dir() else []:
            if d.name.startswith(f"{self.topo.lab}-worker") and d.name not in keep and any(d.glob("*.pid")):
                stop_all(d)
                shutil.rmtree(d, ignore_errors=True)
                gone.append(d.name)
        if gone and self.central_daemons()[1].pid() is not None:
            self.sbctl(*[a for name in gone for a in ("--", "--if-exists", "chassis-del", name)][1:])
            hosts = set(self.node_nets)
            switches = self.nbctl("--bare", "--columns=name", "list", "Logical_Switch").split()
            stale = [sw for sw in switches if sw.startswith(f"{self.topo.lab}-worker") and sw not in hosts]
            if stale:
                self.nbctl(*[a for sw in stale for a in ("--", "--if-exists", "ls-del", sw, "--", "--if-exists",
                                                           "lrp-del", f"rtos-{sw}")][1:])
        return gone

    def ports_up(self) -> dict[str, bool]:
        out = self.nbctl("--bare", "--columns=name,up", "--format=csv", "--no-headings", "list", "Logical_Switch_Port")
        result = {}
        for line in out.splitlines():
            if "," in line:
                name, up = line.split(",", 1)
                result[name] = up.strip() == "true"
        return result
