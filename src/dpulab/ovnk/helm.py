"""Values for upstream's Helm chart (helm/ovn-kubernetes) with simulated DPUs (`global.simulateDpu`).

Since April 2026 upstream installs only with this chart. The host file is an overlay on
upstream's `values-single-node-zone.yaml`, the DPU file one on `values-single-node-zone-dpu.yaml`;
both are filled the way ovn-kubernetes/dpu-simulator's `pkg/cni/helm_values.go` fills them.
Upstream installs the two sides into two clusters (a host and a DPU cluster); in the lab's
single kind cluster the host-side release already owns the shared objects (ovn-setup,
ovs-node), so the DPU side turns those off. Only keys that the chart or dpu-simulator use
are set; everything else stays at upstream's defaults.
"""

from __future__ import annotations

import ipaddress

from .options import OvnkOptions

HOST_VALUES = "values-dpu-host.yaml"
DPU_VALUES = "values-dpu.yaml"
# upstream's simulated DPU names representors rep0-<i> on every DPU; index 0 is the host's gateway link
GATEWAY_REPRESENTOR = "rep0-0"


def _image(ref: str) -> dict[str, str]:
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    return {"repository": name, "tag": tag, "pullPolicy": "IfNotPresent"}


def pod_network(net_cidr: str) -> str:
    """OVN's `cidr/hostsubnet` form, which the chart wants: /24 per node for IPv4, /64 for IPv6."""
    parts = []
    for part in net_cidr.split(","):
        part = part.strip()
        if part.count("/") == 1:
            part += "/24" if ipaddress.ip_network(part).version == 4 else "/64"
        parts.append(part)
    return ",".join(parts)


def helm_values(opts: OvnkOptions, api_url: str) -> dict[str, dict]:
    """File name -> values for the host side and the DPU side of a lab."""
    network = pod_network(opts.net_cidr)
    host = {
        "k8sAPIServer": api_url,
        "podNetwork": network,
        "serviceNetwork": opts.svc_cidr,
        "mtu": opts.mtu,
        "global": {"image": _image(opts.image), "simulateDpu": True},
        "tags": {"ovnkube-node-dpu-host": True},
        "ovnkube-node-dpu-host": {
            "nodeMgmtPortNetdev": opts.mgmt_port_netdev,
            "gatewayOpts": f"--gateway-interface={opts.gateway_interface}",
        },
    }
    dpu = {
        "tags": {"ovs-node": False, "ovnkube-identity": False},
        "global": {
            "dpuImage": _image(opts.image),
            "simulateDpu": True,
            "enableOvnKubeIdentity": False,
            "dpuHostGatewayRepresentorInterface": GATEWAY_REPRESENTOR,
            "dpuHostClusterK8sAPIServer": api_url,
            "dpuHostClusterNetworkCIDR": network,
            "dpuHostClusterServiceCIDR": opts.svc_cidr,
            "mtu": opts.mtu,
        },
    }
    return {HOST_VALUES: host, DPU_VALUES: dpu}
