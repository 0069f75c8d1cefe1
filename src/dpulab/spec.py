"""The lab spec: what a user asks for, from a YAML file and flags (flags win).

Defaults reproduce the spec document: lab ``dpu``, 2 host/DPU pairs, 16 links each.
Every name this spec will make an interface from is checked here, at parse time.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError
from .ovnk.options import OvnkOptions

IFNAMSIZ = 15
# A lab name becomes namespace, container and kind cluster names: DNS-label safe, short.
LAB_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,19}$"
POD_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ipv4_network(v: str, what: str, max_prefix: int) -> str:
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as e:
        raise ValueError(f"not a network address: {v} ({e})") from None
    if net.version != 4 or net.prefixlen > max_prefix:
        raise ValueError(f"{what} must be IPv4" + (f" with a prefix of /{max_prefix} or shorter" if max_prefix < 32 else ""))
    return v


class ClusterNetwork(_Strict):
    """The stand-in for kind's docker network: control plane and DPUs only, never hosts."""

    subnet: str = "172.18.0.0/16"
    mtu: int = Field(9000, ge=1280, le=65535)

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: str) -> str:
        return _ipv4_network(v, "cluster subnet", max_prefix=28)


class DataplaneOptions(_Strict):
    """OVN data plane settings (used when ``dataplane: ovn``)."""

    pod_cidr: str = "10.244.0.0/16"
    node_prefix: int = Field(24, ge=16, le=28)
    pod_mtu: int = Field(1400, ge=576, le=8942)
    encap: Literal["geneve", "vxlan"] = "geneve"
    mgmt_vf: int = Field(1, ge=0)

    @field_validator("pod_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return _ipv4_network(v, "pod CIDR", max_prefix=32)


IFNAME_CHARS = re.compile(r"^[A-Za-z0-9_.{}-]+$")


class NameTemplates(_Strict):
    """Interface name templates; `{pair}`, `{pf}` and `{vf}` are filled in per link."""

    vf: str | None = Field(None, description="Host VF netdev, e.g. 'eth0-{vf}'")
    rep: str | None = Field(None, description="DPU representor, e.g. 'rep{pf}-{vf}' or 'pf{pf}vf{vf}'")

    @field_validator("vf", "rep")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not IFNAME_CHARS.match(v) or "{vf}" not in v:
            raise ValueError(f"{v!r}: a name template uses letters, digits, '-', '_', '.' and must contain {{vf}}")
        try:
            v.format(pair=0, pf=0, vf=0)
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"{v!r}: only {{pair}}, {{pf}} and {{vf}} may be used") from None
        return v


PRIVILEGED = ("--privileged",)
# For machines whose root lacks CAP_SYS_RESOURCE (some sandboxes and CI), where --privileged
# fails with "unable to apply caps": everything else a privileged container gets.
NO_SYS_RESOURCE = ("--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined")
# dpulab sets these itself on every node container.
_OWN_RUN_OPTIONS = ("--name", "--hostname", "--label", "-l", "--network", "--net", "--ip", "--rm", "--entrypoint")


class KindOptions(_Strict):
    """`kind create cluster` as the spec's Step 3 runs it."""

    node_image: str = Field("kindest/node:v1.34.0", description="kind node image (--image)")
    kubeconfig: str | None = Field(None, description="kubeconfig kind writes (--kubeconfig); default ~/<name>.conf")
    retain: bool = Field(True, description="keep the nodes of a failed create for debugging (--retain)")


class ContainerOptions(_Strict):
    """Node containers (engines docker and podman) and the kind cluster (engine kind)."""

    image: str = Field("docker.io/library/busybox:1.36", description="Node image (docker, podman): it only has to run `sleep`")
    run_options: tuple[str, ...] = Field(
        PRIVILEGED,
        description="Extra `run` options of every node container. Where --privileged fails (no CAP_SYS_RESOURCE): "
        + " ".join(NO_SYS_RESOURCE),
    )
    kind: KindOptions = KindOptions()

    @field_validator("run_options")
    @classmethod
    def _run_options(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for opt in v:
            if opt.split("=", 1)[0] in _OWN_RUN_OPTIONS:
                raise ValueError(f"{opt!r} is set by dpulab itself; it cannot be a run option")
        return v


class Impairment(_Strict):
    """Impair a pair's VF links, or one link, in both directions (tc on both ends' egress)."""

    pair: int | None = Field(None, ge=0, description="Every VF link of this host/DPU pair (0-based)")
    vfs: str | None = Field(None, description="With pair: only these VFs, e.g. '3', '2..7', '2,4,8..11'")
    link: str | None = Field(
        None, description="One link, by either end as NODE:IFACE without the lab prefix: 'worker:eth0-3', 'worker2:eth0' (cluster port)"
    )
    delay: str | None = Field(None, description="One-way delay, e.g. '20ms' (needs the kernel's sch_netem)")
    jitter: str | None = Field(None, description="Delay variation, e.g. '5ms' (with delay; needs sch_netem)")
    loss: str | None = Field(None, description="Random loss, e.g. '1%' (needs sch_netem)")
    rate: str | None = Field(None, description="Rate limit, e.g. '100mbit', '1gbit', '500kbit' (tbf; 'mbps' is bytes/s, as in tc)")

    @model_validator(mode="after")
    def _valid(self) -> "Impairment":
        from .netem import parse_percent, parse_rate, parse_time, parse_vf_set

        if (self.pair is None) == (self.link is None):
            raise ValueError("an impairment names either a pair or a link")
        if self.vfs is not None and self.pair is None:
            raise ValueError("vfs goes with pair")
        if self.link is not None and not re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9_.-]{1,15}", self.link):
            raise ValueError(f"link {self.link!r}: write NODE:IFACE, e.g. 'worker:eth0-3'")
        parse_vf_set(self.vfs)
        for f, parse in (("delay", parse_time), ("jitter", parse_time), ("loss", parse_percent), ("rate", parse_rate)):
            if getattr(self, f) is not None:
                parse(getattr(self, f))
        if not (self.delay or self.loss or self.rate):
            raise ValueError("an impairment needs delay, loss or rate")
        if self.jitter and not self.delay:
            raise ValueError("jitter needs a delay")
        return self


class PodSpec(_Strict):
    """A pod `up` makes (like `dpulab pod add`): on a host, on a VF, through the host's DPU."""

    name: str = Field(pattern=POD_NAME_PATTERN, description="Pod name")
    host: int | str = Field(0, description="Host: pair index or node name (e.g. dpu-worker3)")
    vf: int | None = Field(None, ge=0, description="VF (default: the first free one)")
    namespace: str = Field("default", pattern=POD_NAME_PATTERN, description="Kubernetes namespace")


class LabSpec(_Strict):
    """A simulated DPU lab."""

    name: str = Field("dpu", description="Lab (and kind cluster) name: a-z, 0-9, '-', at most 20")
    pairs: int = Field(2, ge=1, le=64, description="Host/DPU pairs")
    vfs: int = Field(16, ge=1, le=4096, description="Links (VF <-> representor) per pair")
    naming: Literal["seed", "ovnk"] = Field(
        "seed", description="seed: DPU p has rep<p>-<i> (the spec's drawing); ovnk: rep0-<i> on every DPU"
    )
    names: NameTemplates = NameTemplates()
    engine: Literal["netns", "docker", "podman", "kind"] = Field(
        "netns", description="netns: namespaces only | docker, podman: node containers | kind: a kind cluster"
    )
    dataplane: Literal["ovn", "none"] = Field(
        "ovn", description="ovn: OVS + OVN on the DPUs, pods on VFs (default) | none: wiring only"
    )
    cluster: ClusterNetwork = ClusterNetwork()
    ovn: DataplaneOptions = DataplaneOptions()
    ovnk: OvnkOptions = Field(OvnkOptions(), description="OVN-Kubernetes deployment (kind engine), the spec's Step 8 flags")
    containers: ContainerOptions = ContainerOptions()
    impairments: tuple[Impairment, ...] = Field((), description="Link impairments (delay, jitter, loss, rate), applied by `up`")
    pods: tuple[PodSpec, ...] = Field((), description="Pods `up` makes on the data plane (never removes others)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(LAB_NAME_PATTERN, v):
            raise ValueError(
                f"{v!r} is not a lab name: lowercase letters, digits and '-', starting with a letter, at most 20"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _kind_dataplane(cls, data: Any) -> Any:
        """On kind, OVN-Kubernetes in the cluster is the data plane (`dpulab ovnk`), not dpulab's own."""
        if isinstance(data, dict) and data.get("engine") == "kind":
            if data.get("dataplane", "none") != "none":
                raise ValueError("on the kind engine OVN-Kubernetes is the data plane (`dpulab ovnk deploy`): dataplane must be none")
            data = {**data, "dataplane": "none"}
        return data

    @model_validator(mode="after")
    def _fits(self) -> "LabSpec":
        from .topology import interface_names  # the one place names are made

        for name in interface_names(self):
            if len(name) > IFNAMSIZ:
                raise ValueError(f"interface name {name!r} is {len(name)} characters; Linux allows {IFNAMSIZ}")
        from .topology import CLUSTER_IFNAME, fill, templates

        vf, rep = templates(self)
        for index in range(min(self.vfs, 100)):
            for template, where in ((vf, "host"), (rep, "DPU")):
                name = fill(template, 0, index)
                if name in (CLUSTER_IFNAME, "lo"):
                    raise ValueError(f"{where} interface name {name!r} collides with the node's own {name}")
        if self.dataplane == "ovn" and self.vfs <= max(1, self.ovn.mgmt_vf):
            raise ValueError(
                f"the ovn data plane needs at least {max(1, self.ovn.mgmt_vf) + 1} vfs "
                f"(VF 0 is the gateway link, VF {self.ovn.mgmt_vf} the management port)"
            )
        if self.pods:
            self._check_pods()
        net = ipaddress.ip_network(self.cluster.subnet)
        if net.num_addresses - 3 < 1 + 2 * self.pairs:
            raise ValueError(f"cluster subnet {net} is too small for {self.pairs} pairs")
        return self

    @model_validator(mode="after")
    def _impairments_fit(self) -> "LabSpec":
        from .netem import parse_vf_set

        for k, imp in enumerate(self.impairments):
            if imp.pair is not None and imp.pair >= self.pairs:
                raise ValueError(f"impairments[{k}]: pair {imp.pair} does not exist (pairs 0..{self.pairs - 1})")
            if imp.vfs is not None:
                try:
                    parse_vf_set(imp.vfs, self.vfs)
                except ValueError as e:
                    raise ValueError(f"impairments[{k}].vfs: {e}") from None
        return self

    @model_validator(mode="after")
    def _simulate_dpu_names(self) -> "LabSpec":
        """Upstream's simulated DPU (`simulate-dpu`) finds a representor only by the name
        rep0-<vf> on every DPU (pf is always 0), and a host VF's pf/vf by `(\\d+)-(\\d+)$`:
        other names would deploy fine and never plug a pod, so they are refused here."""
        if self.ovnk.representor_mode != "simulate-dpu":
            return self
        from .topology import fill, templates

        vf, rep = templates(self)
        for pair in sorted({0, 1, self.pairs - 1} & set(range(self.pairs))):
            for index in sorted({0, 1, self.vfs - 1} & set(range(self.vfs))):
                name, host = fill(rep, pair, index), fill(vf, pair, index)
                if name != f"rep0-{index}":
                    how = "naming: ovnk" if self.names.rep is None else "names.rep 'rep{pf}-{vf}' (no {pair})"
                    raise ValueError(
                        f"ovnk.representor_mode simulate-dpu needs representors named rep0-<vf> on every DPU "
                        f"(upstream recognises only those), but DPU {pair} would have {name!r}: use {how}"
                    )
                m = re.search(r"(\d+)-(\d+)$", host)
                if not m or (int(m[1]), int(m[2])) != (0, index):
                    raise ValueError(
                        f"ovnk.representor_mode simulate-dpu finds a host VF's index by its '0-<vf>' suffix "
                        f"(as eth0-{index}), but pair {pair} would have {host!r}: use a names.vf template such as 'eth0-{{vf}}'"
                    )
        return self


    def pod_host(self, pod: PodSpec) -> str:
        """The node name of a pod's host (`host` may be a pair index)."""
        from .topology import worker_name

        return worker_name(self.name, 2 * pod.host + 1) if isinstance(pod.host, int) else pod.host

    def _check_pods(self) -> None:
        from .topology import worker_name

        if self.dataplane != "ovn":
            raise ValueError("pods need the ovn data plane (dataplane: ovn)")
        hosts = {worker_name(self.name, 2 * p + 1) for p in range(self.pairs)}
        names = [p.name for p in self.pods]
        if len(set(names)) != len(names):
            raise ValueError(f"pods: a name is used twice ({', '.join(sorted({n for n in names if names.count(n) > 1}))})")
        taken: set[tuple[str, int]] = set()
        for pod in self.pods:
            host = self.pod_host(pod)
            if host not in hosts:
                raise ValueError(f"pod {pod.name}: host {pod.host!r} is not a host of this lab ({', '.join(sorted(hosts))})")
            if pod.vf is not None:
                if pod.vf >= self.vfs or pod.vf in (0, self.ovn.mgmt_vf):
                    raise ValueError(f"pod {pod.name}: VF {pod.vf} is reserved or does not exist (2..{self.vfs - 1})")
                if (host, pod.vf) in taken:
                    raise ValueError(f"pod {pod.name}: VF {pod.vf} of {host} is taken by another pod")
                taken.add((host, pod.vf))


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "lab"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


LAB_FILE_MAX = 1 << 20


def load_spec(path: Path | None = None, overrides: dict[str, Any] | None = None) -> LabSpec:
    """Build a LabSpec from an optional YAML file plus flag overrides (flags win).

    Raises InputError with one readable line for anything wrong.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = f.read(LAB_FILE_MAX + 1)  # /dev/zero, a log file by mistake: never read whole
            if len(raw) > LAB_FILE_MAX:
                raise InputError(f"lab file {path}: larger than {LAB_FILE_MAX // 1024} KiB; is it the right file?")
            loaded = yaml.safe_load(raw.decode("utf-8"))
        except OSError as e:
            raise InputError(f"cannot read lab file {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"lab file {path}: not UTF-8 text") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise InputError(f"lab file {path}{where}: not valid YAML") from None
        except (ValueError, RecursionError):  # a 5000-digit number, nesting thousands deep
            raise InputError(f"lab file {path}: a value is too large or nested too deeply") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(f"lab file {path}: expected a mapping at the top level")
        data = loaded
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        return LabSpec.model_validate(data)
    except ValidationError as e:
        raise InputError(_one_line(e)) from None
    except RecursionError:
        raise InputError("lab file: a value is nested too deeply") from None


def json_schema() -> str:
    return json.dumps(LabSpec.model_json_schema(), indent=2)
