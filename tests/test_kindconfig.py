"""kind config: compared, as parsed YAML down into the kubeadm patches, with upstream's renders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dpulab.errors import InputError
from dpulab.kindconfig import KindConfigError, kubeadm_api, lab_nodes, node_image_version, render_kind_config

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ovnk-upstream"  # shared/ beside the repo


def parsed(text: str) -> dict:
    """The config with every embedded kubeadm patch parsed into its documents."""
    cfg = yaml.safe_load(text)
    cfg["kubeadmConfigPatches"] = [list(yaml.safe_load_all(p)) for p in cfg["kubeadmConfigPatches"]]
    for node in cfg["nodes"]:
        if "kubeadmConfigPatches" in node:
            node["kubeadmConfigPatches"] = [list(yaml.safe_load_all(p)) for p in node["kubeadmConfigPatches"]]
    return cfg


def fixture(name: str) -> dict:
    return parsed((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    "image, fixture_name",
    [
        ("kindest/node:v1.34.0", "kind-dpu.kubeadm-v1beta4.yaml"),
        ("kindest/node:v1.30.13", "kind-dpu.kubeadm-v1beta3.yaml"),
    ],
)
def test_matches_upstream_render(image, fixture_name):
    assert parsed(render_kind_config(image=image)) == fixture(fixture_name)


@pytest.mark.parametrize(
    "image, api",
    [
        ("kindest/node:v1.31.0", "v1beta4"),
        ("kindest/node:v1.30.99", "v1beta3"),
        ("kindest/node:v1.29.2@sha256:" + "a" * 64, "v1beta3"),
        ("localhost:5000/kindest/node:v1.28.0", "v1beta3"),
        ("localhost:5000/kindest/node", "v1beta4"),
        ("kindest/node:latest", "v1beta4"),
        ("kindest/node@sha256:" + "b" * 64, "v1beta4"),
    ],
)
def test_kubeadm_api_from_image_tag(image, api):
    assert kubeadm_api(image) == api
    patches = parsed(render_kind_config(image=image))["kubeadmConfigPatches"][0]
    assert all(("apiVersion" in doc) == (api == "v1beta4") for doc in patches)


def test_node_image_version():
    assert node_image_version("kindest/node:v1.34.0") == (1, 34)
    assert node_image_version("registry:5000/kindest/node") is None


@pytest.mark.parametrize("pairs", [1, 3, 8])
def test_pair_count_sets_workers_only(pairs):
    got = parsed(render_kind_config(pairs=pairs))
    want = fixture("kind-dpu.kubeadm-v1beta4.yaml")
    assert [n["role"] for n in got["nodes"]] == ["control-plane"] + ["worker"] * (2 * pairs)
    got["nodes"], want["nodes"] = got["nodes"][:1], want["nodes"][:1]
    assert got == want


def test_log_level_and_dns_domain_reach_every_patch():
    for image in ("kindest/node:v1.34.0", "kindest/node:v1.30.0"):
        cfg = parsed(render_kind_config(log_level=7, dns_domain="lab.example", image=image))
        cluster, init, join = cfg["kubeadmConfigPatches"][0]
        assert cluster["networking"]["dnsDomain"] == "lab.example"
        for args in (
            cluster["apiServer"]["extraArgs"],
            cluster["controllerManager"]["extraArgs"],
            cluster["scheduler"]["extraArgs"],
            init["nodeRegistration"]["kubeletExtraArgs"],
            join["nodeRegistration"]["kubeletExtraArgs"],
        ):
            as_map = args if isinstance(args, dict) else {a["name"]: a["value"] for a in args}
            assert as_map["v"] == "7"


def test_ipv6_defaults():
    net = parsed(render_kind_config(ip_family="ipv6"))["networking"]
    assert (net["podSubnet"], net["serviceSubnet"], net["ipFamily"]) == ("fd00:10:244::/48", "fd00:10:96::/112", "ipv6")


def test_dual_stack_defaults_and_given_order():
    net = parsed(render_kind_config(ip_family="dual"))["networking"]
    assert net["podSubnet"] == "10.244.0.0/16,fd00:10:244::/48"
    assert net["serviceSubnet"] == "10.96.0.0/16,fd00:10:96::/112"
    assert net["ipFamily"] == "dual"
    net = parsed(render_kind_config(ip_family="dual", pod_cidr="fd00:1::/48, 10.1.0.0/16"))["networking"]
    assert net["podSubnet"] == "fd00:1::/48,10.1.0.0/16"


def test_ipv4_has_no_ip_family_field():
    assert "ipFamily" not in parsed(render_kind_config())["networking"]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"pairs": 0}, "pairs"),
        ({"pairs": -2}, "pairs"),
        ({"pod_cidr": "10.244.0.0/33"}, "10.244.0.0/33"),
        ({"pod_cidr": "10.244.0.1/16"}, "10.244.0.1/16"),
        ({"svc_cidr": "fd00:10:96::/112"}, "ip family ipv4"),
        ({"ip_family": "dual", "pod_cidr": "10.244.0.0/16"}, "one IPv4 and one IPv6"),
        ({"ip_family": "ipv5"}, "ipv5"),
        ({"dns_domain": "Bad_Domain"}, "dns domain"),
        ({"log_level": -1}, "log level"),
    ],
)
def test_bad_input_is_one_clear_value_error(kwargs, words):
    with pytest.raises(KindConfigError) as exc:
        render_kind_config(**kwargs)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, InputError)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_lab_nodes_follow_kind_naming():
    nodes = lab_nodes("dpu", 2)
    assert nodes.control_plane == "dpu-control-plane"
    assert nodes.hosts == ["dpu-worker", "dpu-worker3"]
    assert nodes.dpus == ["dpu-worker2", "dpu-worker4"]
    assert nodes.roles()["dpu-worker4"] == "dpu"
    with pytest.raises(KindConfigError):
        lab_nodes("dpu", 0)


def test_render_does_not_share_state_between_calls():
    first = render_kind_config(pairs=1)
    render_kind_config(pairs=5, log_level=9, image="kindest/node:v1.29.0")
    assert render_kind_config(pairs=1) == first
