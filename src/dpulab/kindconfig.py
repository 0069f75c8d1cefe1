"""The kind Cluster config of a lab: what upstream's `contrib/kind.yaml.j2` renders (spec Step 2).

Built as data and dumped, so quoting is always right. kind reads the kubeadm patches as
YAML text, so they are embedded as literal blocks. Node images from Kubernetes 1.31 on
use kubeadm v1beta4, whose `extraArgs` are lists of {name, value}; older ones v1beta3 maps.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

import yaml

from .errors import InputError
from .topology import worker_name

DEFAULT_NODE_IMAGE = "kindest/node:v1.34.0"
IP_FAMILIES = ("ipv4", "ipv6", "dual")
# upstream's kind.sh defaults for the IPv6 halves
DEFAULT_CIDRS = {
    "pod": {4: "10.244.0.0/16", 6: "fd00:10:244::/48"},
    "service": {4: "10.96.0.0/16", 6: "fd00:10:96::/112"},
}
# upstream disables service-lb-controller (kubernetes/kubernetes#128121)
CONTROLLERS = "*,bootstrap-signer-controller,token-cleaner-controller,-service-lb-controller"
V1BETA4_SINCE = (1, 31)
_DNS_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class KindConfigError(InputError, ValueError):
    """Bad input for a kind config; a ValueError too, for callers outside the CLI."""


class LabNodes(NamedTuple):
    """kind node names by role: pair p is host worker 2p+1, DPU worker 2p+2."""

    control_plane: str
    hosts: list[str]
    dpus: list[str]

    def roles(self) -> dict[str, str]:
        return {self.control_plane: "control-plane"} | dict.fromkeys(self.hosts, "host") | dict.fromkeys(self.dpus, "dpu")


def lab_nodes(name: str, pairs: int) -> LabNodes:
    _check_pairs(pairs)
    return LabNodes(
        f"{name}-control-plane",
        [worker_name(name, 2 * p + 1) for p in range(pairs)],
        [worker_name(name, 2 * p + 2) for p in range(pairs)],
    )


def _check_pairs(pairs: int) -> None:
    if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
        raise KindConfigError(f"pairs must be 1 or more, not {pairs!r}")


def node_image_version(image: str) -> tuple[int, int] | None:
    """(major, minor) from a node image tag such as `kindest/node:v1.34.0`; None if it has none."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    m = re.match(r"v?(\d+)\.(\d+)", last.rsplit(":", 1)[1])
    return (int(m[1]), int(m[2])) if m else None


def kubeadm_api(image: str) -> str:
    version = node_image_version(image)
    return "v1beta3" if version is not None and version < V1BETA4_SINCE else "v1beta4"


def _subnets(what: str, value: str | None, ip_family: str) -> str:
    versions = {"ipv4": [4], "ipv6": [6], "dual": [4, 6]}[ip_family]
    if value is None:
        return ",".join(DEFAULT_CIDRS[what][v] for v in versions)
    nets = []
    for part in value.split(","):
        try:
            nets.append(ipaddress.ip_network(part.strip(), strict=True))
        except ValueError as e:
            raise KindConfigError(f"{what} CIDR {part.strip()!r} is not a network address ({e})") from None
    if sorted(n.version for n in nets) != versions:
        need = " and ".join(f"one IPv{v}" for v in versions)
        raise KindConfigError(f"{what} CIDR {value!r} does not fit ip family {ip_family}: give {need} network")
    return ",".join(str(n) for n in nets)


def _kubeadm_patch(api: str, *docs: dict) -> str:
    if api == "v1beta4":
        docs = tuple({"kind": d["kind"], "apiVersion": "kubeadm.k8s.io/v1beta4"} | d for d in docs)
    return yaml.dump_all(docs, Dumper=BlockDumper, sort_keys=False)


class BlockDumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, the way kind configs and manifests are written; no aliases."""

    def ignore_aliases(self, data: object) -> bool:
        return True

    def choose_scalar_style(self) -> str:
        """Double quotes where quotes are needed, as upstream's templates write them."""
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


BlockDumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def render_kind_config(
    pairs: int = 2,
    pod_cidr: str | None = None,
    svc_cidr: str | None = None,
    ip_family: str = "ipv4",
    dns_domain: str = "cluster.local",
    log_level: int = 4,
    image: str = DEFAULT_NODE_IMAGE,
) -> str:
    """YAML text of the kind config; CIDRs default per family (10.244.0.0/16, fd00:10:244::/48, ...).

    `image` is not written (kind takes it on its command line); its tag picks the kubeadm API.
    """
    if ip_family not in IP_FAMILIES:
        raise KindConfigError(f"ip family {ip_family!r} is not one of {', '.join(IP_FAMILIES)}")
    _check_pairs(pairs)
    if isinstance(log_level, bool) or not isinstance(log_level, int) or log_level < 0:
        raise KindConfigError(f"log level must be 0 or more, not {log_level!r}")
    if not _DNS_DOMAIN.match(dns_domain):
        raise KindConfigError(f"dns domain {dns_domain!r} is not a valid DNS name")
    networking = {
        "kubeProxyMode": "none",
        "disableDefaultCNI": True,
        "podSubnet": _subnets("pod", pod_cidr, ip_family),
        "serviceSubnet": _subnets("service", svc_cidr, ip_family),
    }
    if ip_family != "ipv4":
        networking["ipFamily"] = ip_family

    api = kubeadm_api(image)

    def args(**kv: str) -> dict | list:
        return kv if api == "v1beta3" else [{"name": k, "value": v} for k, v in kv.items()]

    v = str(log_level)
    cluster_patch = _kubeadm_patch(
        api,
        {
            "kind": "ClusterConfiguration",
            "metadata": {"name": "config"},
            "apiServer": {"extraArgs": args(v=v)},
            "controllerManager": {"extraArgs": args(v=v, controllers=CONTROLLERS)},
            "scheduler": {"extraArgs": args(v=v)},
            "networking": {"dnsDomain": dns_domain},
        },
        {"kind": "InitConfiguration", "nodeRegistration": {"kubeletExtraArgs": args(v=v)}},
        {"kind": "JoinConfiguration", "nodeRegistration": {"kubeletExtraArgs": args(v=v)}},
    )
    control_plane_patch = _kubeadm_patch(
        api,
        {
            "kind": "InitConfiguration",
            "nodeRegistration": {
                "kubeletExtraArgs": args(**{"node-labels": "ingress-ready=true", "authorization-mode": "AlwaysAllow"})
            },
        },
    )
    config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "networking": networking,
        "kubeadmConfigPatches": [cluster_patch],
        "nodes": [{"role": "control-plane", "kubeadmConfigPatches": [control_plane_patch]}]
        + [{"role": "worker"} for _ in range(2 * pairs)],
    }
    header = f"# kind config for {pairs} host/DPU pair(s), kubeadm {api}: rendered by dpulab like contrib/kind.yaml.j2\n"
    return header + yaml.dump(config, Dumper=BlockDumper, sort_keys=False)
