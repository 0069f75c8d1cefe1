"""OVN-Kubernetes settings for a lab: the spec's Step 8 `daemonset.sh` flags, typed.

Only pydantic here: the lab spec embeds `OvnkOptions` as field `ovnk`, and must load
without the kubernetes client installed.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

IFNAMSIZ = 15
DEFAULT_IMAGE = "localhost/ovn-daemonset-fedora:dev"

# Not daemonset.sh flags: they shape the DPU-mode DaemonSets dpulab derives (Step 16).
DPU_MODE_FIELDS = frozenset({"representor_mode", "mgmt_port_netdev", "gateway_interface"})
# daemonset.sh spells this one yes/no rather than true/false.
_YES_NO_FIELDS = frozenset({"ovn_unprivileged_mode"})


def _check_networks(value: str, *, version: int | None = None, host_len_ok: bool = False) -> str:
    """Comma-separated CIDRs; `host_len_ok` allows OVN's `net/len/hostlen` form."""
    for part in value.split(","):
        cidr = part.strip()
        if host_len_ok and cidr.count("/") == 2:
            cidr, _, host_len = cidr.rpartition("/")
            if not host_len.isdigit():
                raise ValueError(f"{part!r}: host subnet length must be a number")
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError as e:
            raise ValueError(f"{part!r} is not a network address ({e})") from None
        if version is not None and net.version != version:
            raise ValueError(f"{part!r} is not an IPv{version} network")
    return value


class OvnkOptions(BaseModel):
    """One field per Step 8 flag, in the spec's order, defaults = the spec's values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(DEFAULT_IMAGE, min_length=1)
    ovnkube_image: str | None = Field(None, description="defaults to image")
    net_cidr: str = "10.244.0.0/16"
    svc_cidr: str = "10.96.0.0/16"
    gateway_mode: Literal["shared", "local"] = "shared"
    dummy_gateway_bridge: bool = False
    gateway_options: str = ""
    enable_ipsec: bool = False
    hybrid_enabled: bool = False
    disable_snat_multiple_gws: bool = False
    disable_forwarding: bool = False
    ovn_encap_port: int | None = Field(None, ge=1, le=65535, description="None: OVN's default (6081)")
    disable_pkt_mtu_check: bool = False
    ovn_empty_lb_events: bool = False
    multicast_enabled: bool = False
    # --k8s-apiserver goes here; it is discovered per cluster (daemonset_args' api_url).
    ovn_master_count: int = Field(1, ge=1)
    ovn_unprivileged_mode: bool = False
    master_loglevel: int = Field(5, ge=0)
    node_loglevel: int = Field(5, ge=0)
    dbchecker_loglevel: int = Field(5, ge=0)
    ovn_loglevel_northd: str = "-vconsole:info -vfile:info"
    ovn_loglevel_nb: str = "-vconsole:info -vfile:info"
    ovn_loglevel_sb: str = "-vconsole:info -vfile:info"
    ovn_loglevel_controller: str = "-vconsole:info"
    ovnkube_libovsdb_client_logfile: str = ""
    enable_coredumps: bool = False
    ovnkube_config_duration_enable: bool = True
    admin_network_policy_enable: bool = True
    egress_ip_enable: bool = True
    egress_ip_healthcheck_port: int = Field(9107, ge=0, le=65535)
    egress_firewall_enable: bool = True
    egress_qos_enable: bool = True
    egress_service_enable: bool = True
    v4_join_subnet: str = "100.64.0.0/16"
    v6_join_subnet: str = "fd98::/64"
    v4_masquerade_subnet: str = "169.254.0.0/17"
    v6_masquerade_subnet: str = "fd69::/112"
    v4_transit_subnet: str = "100.88.0.0/16"
    v6_transit_subnet: str = "fd97::/64"
    ex_gw_network_interface: str = Field("", max_length=IFNAMSIZ)
    multi_network_enable: bool = False
    network_segmentation_enable: bool = False
    network_connect_enable: bool = False
    preconfigured_udn_addresses_enable: bool = False
    route_advertisements_enable: bool = False
    advertise_default_network: bool = False
    advertised_udn_isolation_mode: Literal["strict", "loose"] = "strict"
    ovnkube_metrics_scale_enable: bool = False
    compact_mode: bool = False
    enable_interconnect: bool = True
    enable_multi_external_gateway: bool = True
    enable_ovnkube_identity: bool = True
    enable_persistent_ips: bool = True
    network_qos_enable: bool = False
    mtu: int = Field(1400, ge=576, le=65535)
    enable_dnsnameresolver: bool = False
    enable_observ: bool = False

    representor_mode: Literal["veth", "simulate-dpu"] = Field(
        "veth",
        description="veth: the spec's DPU_REPRESENTOR_MODE=veth (never merged upstream); "
        "simulate-dpu: upstream's OVN_SIMULATE_DPU=true",
    )
    mgmt_port_netdev: str = Field("eth0-1", min_length=1, max_length=IFNAMSIZ)
    gateway_interface: str = Field("eth0-0", min_length=1, max_length=IFNAMSIZ)

    @field_validator("net_cidr")
    @classmethod
    def _net_cidr(cls, v: str) -> str:
        return _check_networks(v, host_len_ok=True)

    @field_validator("svc_cidr")
    @classmethod
    def _svc_cidr(cls, v: str) -> str:
        return _check_networks(v)

    @field_validator("v4_join_subnet", "v4_masquerade_subnet", "v4_transit_subnet")
    @classmethod
    def _v4(cls, v: str) -> str:
        return _check_networks(v, version=4)

    @field_validator("v6_join_subnet", "v6_masquerade_subnet", "v6_transit_subnet")
    @classmethod
    def _v6(cls, v: str) -> str:
        return _check_networks(v, version=6)

    def flag_value(self, field: str) -> str:
        """A field as daemonset.sh reads it: true/false (yes/no where it wants that), '' for unset."""
        value = self.image if field == "ovnkube_image" and self.ovnkube_image is None else getattr(self, field)
        if isinstance(value, bool):
            if field in _YES_NO_FIELDS:
                return "yes" if value else "no"
            return "true" if value else "false"
        return "" if value is None else str(value)

    def daemonset_args(self, api_url: str, output_dir: str) -> list[str]:
        """argv for `daemonset.sh`, in the spec's order (field order; the two runtime flags in place)."""
        args = [f"--output-directory={output_dir}"]
        for field in type(self).model_fields:
            if field in DPU_MODE_FIELDS:
                continue
            if field == "ovn_master_count":
                args.append(f"--k8s-apiserver={api_url}")
            args.append(f"--{field.replace('_', '-')}={self.flag_value(field)}")
        return args
