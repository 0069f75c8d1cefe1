"""OVN-K options and manifests, against upstream's own daemonset.sh output (the fixtures)."""

from __future__ import annotations

import filecmp
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dpulab.errors import DpulabError, InputError
from dpulab.ovnk.manifests import (
    DPU_FILE,
    DPU_HOST_FILE,
    DPU_IC_FILE,
    NODE_CONTAINERS,
    derive_dpu_manifests,
    derive_dpu_text,
    k8s_version_of_image,
    render_with_daemonset_sh,
    schema_version,
    validate_dir,
)
from dpulab.ovnk.options import OvnkOptions

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ovnk-upstream"  # shared/ beside the repo
RENDERED = FIXTURES / "manifests"
API = "https://172.18.0.2:6443"
# What Step 16 may change in the two DaemonSets; everything else must stay as rendered.
DERIVED_ENV = {"OVNKUBE_NODE_MODE", "DPU_REPRESENTOR_MODE", "OVN_SIMULATE_DPU", "K8S_NODE", "K8S_NODE_DPU",
               "OVNKUBE_NODE_MGMT_PORT_NETDEV", "OVN_GATEWAY_OPTS"}  # fmt: skip
DERIVED_SELECTORS = {"k8s.ovn.org/dpu", "k8s.ovn.org/dpu-host"}
NODE_NAME_ENV = {"K8S_NODE", "K8S_NODE_DPU"}  # renamed in every container of the DPU DaemonSet
MODES = ("veth", "simulate-dpu")
# enable_interconnect -> the file the DPU DaemonSet is derived from
DPU_SOURCE = {True: DPU_IC_FILE, False: DPU_FILE}


# --- options -----------------------------------------------------------------


def test_daemonset_args_are_the_specs_flags():
    want = shlex.split((FIXTURES / "daemonset-args.txt").read_text())
    assert OvnkOptions().daemonset_args(API, "../yaml-dpu") == want


def test_daemonset_args_follow_the_options():
    args = OvnkOptions(mtu=9000, ovn_unprivileged_mode=True, gateway_mode="local", ovn_encap_port=7081,
                       image="img:1").daemonset_args(API, "/out")  # fmt: skip
    assert {"--mtu=9000", "--ovn-unprivileged-mode=yes", "--gateway-mode=local", "--ovn-encap-port=7081",
            "--image=img:1", "--ovnkube-image=img:1", "--output-directory=/out"} <= set(args)  # fmt: skip
    assert not any(a.startswith(("--representor-mode", "--mgmt-port-netdev", "--gateway-interface")) for a in args)


@pytest.mark.parametrize(
    "bad",
    [
        {"no_such_flag": True},
        {"net_cidr": "10.244.0.0/33"},
        {"v4_join_subnet": "fd98::/64"},
        {"gateway_mode": "bridged"},
        {"representor_mode": "sriov"},
        {"mgmt_port_netdev": "a-very-long-ifname"},
        {"mtu": 100},
    ],
)
def test_options_reject_bad_values(bad):
    with pytest.raises(ValidationError):
        OvnkOptions(**bad)


def test_options_accept_ovn_host_subnet_form():
    assert OvnkOptions(net_cidr="10.244.0.0/16/24,fd00:10:244::/48/64").net_cidr.endswith("/64")


def test_options_import_without_kubernetes():
    code = (
        "import sys; sys.modules['kubernetes'] = None; sys.modules['kubernetes_validate'] = None\n"
        "import dpulab.ovnk; from dpulab.ovnk.options import OvnkOptions; OvnkOptions(); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


# --- derive ------------------------------------------------------------------


@pytest.fixture(scope="module")
def derived(tmp_path_factory) -> dict:
    """(representor mode, enable_interconnect) -> output directory; plain mode names: interconnect (the spec)."""
    out = {}
    for mode in MODES:
        for ic in (True, False):
            out[mode, ic] = tmp_path_factory.mktemp(f"{mode}-{'ic' if ic else 'central'}")
            derive_dpu_manifests(RENDERED, out[mode, ic], OvnkOptions(representor_mode=mode, enable_interconnect=ic))
        out[mode] = out[mode, True]
    return out


def daemonset(path: Path) -> dict:
    (ds,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "DaemonSet"]
    return ds


def pod_spec(ds: dict) -> dict:
    return ds["spec"]["template"]["spec"]


def env_of(ds: dict, container: str = "ovnkube-node") -> dict[str, dict]:
    (c,) = [c for c in pod_spec(ds)["containers"] if c["name"] == container]
    return {e["name"]: e for e in c.get("env", [])}


def without_derived(ds: dict, source: str) -> dict:
    """The DaemonSet minus what Step 16 sets: what must equal the rendered source.

    Only the container that runs ovnkube gets the mode, representor and node variables;
    in every other container just the node name variable may be renamed."""
    ds = yaml.safe_load(yaml.safe_dump(ds))
    for c in pod_spec(ds)["containers"]:
        drop = DERIVED_ENV if c["name"] == NODE_CONTAINERS[source] else NODE_NAME_ENV
        c["env"] = [e for e in c.get("env", []) if e["name"] not in drop]
    sel = pod_spec(ds)["nodeSelector"]
    pod_spec(ds)["nodeSelector"] = {k: v for k, v in sel.items() if k not in DERIVED_SELECTORS}
    return ds


@pytest.mark.parametrize("ic", [True, False], ids=["interconnect", "centralized"])
def test_every_other_file_is_copied_byte_for_byte(derived, ic):
    for mode in MODES:
        out = derived[mode, ic]
        names = {p.name for p in RENDERED.iterdir()}
        assert {p.name for p in out.iterdir()} == names
        changed = {DPU_SOURCE[ic], DPU_HOST_FILE}
        same = [n for n in names - changed if filecmp.cmp(RENDERED / n, out / n, shallow=False)]
        assert sorted(same) == sorted(names - changed)
        assert all(not filecmp.cmp(RENDERED / n, out / n, shallow=False) for n in changed)
        # the DPU DaemonSet of the other stack is not deployed: left exactly as rendered
        assert filecmp.cmp(RENDERED / DPU_SOURCE[not ic], out / DPU_SOURCE[not ic], shallow=False)


@pytest.mark.parametrize("ic", [True, False], ids=["interconnect", "centralized"])
def test_dpu_daemonset_veth(derived, ic):
    source = DPU_SOURCE[ic]
    ds = daemonset(derived["veth", ic] / source)
    assert ds["metadata"]["name"] == "ovnkube-node-dpu" and ds["metadata"]["namespace"] == "ovn-kubernetes"
    main = NODE_CONTAINERS[source]
    assert main == ("ovnkube-controller" if ic else "ovnkube-node")
    env = env_of(ds, main)
    assert env["OVNKUBE_NODE_MODE"]["value"] == "dpu"
    assert env["DPU_REPRESENTOR_MODE"]["value"] == "veth"
    assert env["K8S_NODE_DPU"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "OVN_SIMULATE_DPU" not in env
    assert not any("K8S_NODE" in env_of(ds, c["name"]) for c in pod_spec(ds)["containers"])
    assert not any("DPU_REPRESENTOR_MODE" in env_of(ds, c["name"]) for c in pod_spec(ds)["containers"] if c["name"] != main)
    assert pod_spec(ds)["nodeSelector"] == {"kubernetes.io/os": "linux", "k8s.ovn.org/dpu": ""}
    names = list(env)
    assert names.index("DPU_REPRESENTOR_MODE") == names.index("OVNKUBE_NODE_MODE") + 1  # the spec's snippet order
    assert without_derived(ds, source) == without_derived(daemonset(RENDERED / source), source)


def test_interconnect_dpu_daemonset_runs_its_own_zone(derived):
    """The interconnect DaemonSet keeps the zone's own OVN databases and northd (a DPU is its zone)."""
    ds = daemonset(derived["veth"] / DPU_IC_FILE)
    containers = [c["name"] for c in pod_spec(ds)["containers"]]
    assert {"nb-ovsdb", "sb-ovsdb", "ovn-northd", "ovnkube-controller", "ovn-controller"} <= set(containers)
    controller = next(c for c in pod_spec(ds)["containers"] if c["name"] == "ovnkube-controller")
    assert controller["command"] == ["/root/ovnkube.sh", "ovnkube-controller-with-node"]
    assert env_of(ds, "ovnkube-controller")["OVN_ENABLE_INTERCONNECT"]["value"] == "true"


def test_dpu_host_daemonset_veth(derived):
    ds = daemonset(derived["veth"] / DPU_HOST_FILE)
    env = env_of(ds)
    assert env["OVNKUBE_NODE_MODE"]["value"] == "dpu-host"
    assert env["OVNKUBE_NODE_MGMT_PORT_NETDEV"]["value"] == "eth0-1"
    assert env["OVN_GATEWAY_OPTS"]["value"] == "--gateway-interface=eth0-0"
    assert env["K8S_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert not {"DPU_REPRESENTOR_MODE", "OVN_SIMULATE_DPU"} & env.keys()
    assert pod_spec(ds)["nodeSelector"] == {"kubernetes.io/os": "linux", "k8s.ovn.org/dpu-host": ""}
    assert without_derived(ds, DPU_HOST_FILE) == without_derived(daemonset(RENDERED / DPU_HOST_FILE), DPU_HOST_FILE)


@pytest.mark.parametrize("ic", [True, False], ids=["interconnect", "centralized"])
def test_simulate_dpu_sets_upstreams_flag_on_both_sides(derived, ic):
    for name, mode in ((DPU_SOURCE[ic], "dpu"), (DPU_HOST_FILE, "dpu-host")):
        ds = daemonset(derived["simulate-dpu", ic] / name)
        env = env_of(ds, NODE_CONTAINERS[name])
        assert env["OVN_SIMULATE_DPU"]["value"] == "true"
        assert env["OVNKUBE_NODE_MODE"]["value"] == mode
        assert "DPU_REPRESENTOR_MODE" not in env
        if mode == "dpu":
            assert env["K8S_NODE_DPU"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        assert without_derived(ds, name) == without_derived(daemonset(RENDERED / name), name)


def test_derivation_is_idempotent_and_a_projection(derived, tmp_path):
    again = tmp_path / "again"
    derive_dpu_manifests(derived["veth"], again, OvnkOptions())
    for name in (DPU_IC_FILE, DPU_HOST_FILE):
        assert (again / name).read_bytes() == (derived["veth"] / name).read_bytes()
    # in place, switching mode: the same files as deriving that mode from the render
    derive_dpu_manifests(again, again, OvnkOptions(representor_mode="simulate-dpu"))
    for name in (DPU_IC_FILE, DPU_HOST_FILE):
        assert (again / name).read_bytes() == (derived["simulate-dpu"] / name).read_bytes()


def test_gateway_interface_replaces_any_other_and_keeps_other_options():
    text = (RENDERED / DPU_HOST_FILE).read_text().replace(
        '- name: OVN_GATEWAY_OPTS\n          value: ""',
        "- name: OVN_GATEWAY_OPTS\n          value: \"--gateway-interface eth9 --gateway-nexthop=10.0.0.1\"",
    )
    env = env_of(yaml.safe_load(derive_dpu_text(text, OvnkOptions(gateway_interface="eth0-7"), DPU_HOST_FILE)))
    assert env["OVN_GATEWAY_OPTS"]["value"] == "--gateway-nexthop=10.0.0.1 --gateway-interface=eth0-7"


def test_k8s_node_becomes_k8s_node_dpu_in_place():
    text = (RENDERED / DPU_FILE).read_text().replace("K8S_NODE_DPU", "K8S_NODE")
    ds = yaml.safe_load(derive_dpu_text(text, OvnkOptions(), DPU_FILE))
    source = yaml.safe_load(text)
    for c, src in zip(pod_spec(ds)["containers"], pod_spec(source)["containers"]):
        src_names = [e["name"] for e in src.get("env", [])]
        names = [e["name"] for e in c.get("env", [])]
        if "K8S_NODE" in src_names:
            assert names.index("K8S_NODE_DPU") == src_names.index("K8S_NODE")
            assert "K8S_NODE" not in names


def test_missing_dpu_file_is_input_error(tmp_path):
    (tmp_path / DPU_FILE).write_text((RENDERED / DPU_FILE).read_text())
    (tmp_path / DPU_HOST_FILE).write_text((RENDERED / DPU_HOST_FILE).read_text())
    # with interconnect (the default) the DPU DaemonSet must come from the single-node-zone render
    with pytest.raises(InputError, match=f"lacks {DPU_IC_FILE}:"):
        derive_dpu_manifests(tmp_path, tmp_path / "out", OvnkOptions())
    assert derive_dpu_manifests(tmp_path, tmp_path / "central", OvnkOptions(enable_interconnect=False))
    (tmp_path / DPU_HOST_FILE).unlink()
    with pytest.raises(InputError, match=DPU_HOST_FILE):
        derive_dpu_manifests(tmp_path, tmp_path / "out", OvnkOptions(enable_interconnect=False))
    with pytest.raises(InputError, match="does not exist"):
        derive_dpu_manifests(tmp_path / "nope", tmp_path / "out", OvnkOptions())


def test_daemonset_without_node_container_is_an_error():
    text = (RENDERED / DPU_HOST_FILE).read_text().replace("- name: ovnkube-node\n", "- name: something-else\n")
    with pytest.raises(DpulabError, match="no ovnkube-node container"):
        derive_dpu_text(text, OvnkOptions(), DPU_HOST_FILE)
    text = (RENDERED / DPU_IC_FILE).read_text().replace("- name: ovnkube-controller\n", "- name: something-else\n")
    with pytest.raises(DpulabError, match="no ovnkube-controller container"):
        derive_dpu_text(text, OvnkOptions(), DPU_IC_FILE)


# --- validation ----------------------------------------------------------------


@pytest.mark.parametrize("ic", [True, False], ids=["interconnect", "centralized"])
@pytest.mark.parametrize("mode", MODES)
def test_every_output_document_is_schema_valid(derived, mode, ic):
    notes: list[str] = []
    assert validate_dir(derived[mode, ic], "1.34", notes) == []
    skipped = [n for n in notes if "not validated" in n]
    assert skipped and all("ServiceMonitor" in n for n in skipped)


def test_validation_finds_errors(tmp_path):
    wrong_type, typo = daemonset(RENDERED / DPU_FILE), daemonset(RENDERED / DPU_FILE)
    pod_spec(wrong_type)["containers"][0]["env"][0]["value"] = 5  # must be a string
    pod_spec(typo)["hostNetwrok"] = True  # strict: unknown field
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump_all([wrong_type, typo]))
    (tmp_path / "broken.yaml").write_text("kind: [\n")
    (tmp_path / "custom.yaml").write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    notes: list[str] = []
    errors = validate_dir(tmp_path, "v1.34.0", notes)
    assert any("bad.yaml" in e and "env.0.value" in e for e in errors)
    assert any("bad.yaml" in e and "hostNetwrok" in e for e in errors)
    assert any("broken.yaml" in e and "not valid YAML" in e for e in errors)
    assert not any("custom.yaml" in e for e in errors) and any("Widget" in n for n in notes)


def test_schema_version_exact_or_newest():
    assert schema_version("1.34") == ("1.34.0", None)
    assert schema_version(k8s_version_of_image("kindest/node:v1.34.0")) == ("1.34.0", None)
    version, note = schema_version("1.99")
    assert note and version in note
    assert schema_version(None)[1] is not None


# --- daemonset.sh --------------------------------------------------------------

FAKE_DAEMONSET_SH = """#!/bin/bash
# stand-in for upstream's script: records how it was run
printf '%s\\n' "$@" > "$RECORD/argv"
pwd > "$RECORD/cwd"
command -v jinjanate > "$RECORD/jinjanate" || exit 9
[ -n "$FAIL" ] && { echo "template missing" >&2; exit 3; }
out="${1#--output-directory=}"
echo "kind: Namespace" > "$out/ovn-setup.yaml"
"""


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    images = tmp_path / "src" / "dist" / "images"
    images.mkdir(parents=True)
    (images / "daemonset.sh").write_text(FAKE_DAEMONSET_SH)
    record = tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("RECORD", str(record))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv must come from the code, not from here
    return tmp_path / "src", record


def test_render_runs_daemonset_sh_with_argv_cwd_and_venv_path(checkout, tmp_path):
    src, record = checkout
    out = render_with_daemonset_sh(src, OvnkOptions(), API, tmp_path / "out")
    assert record.joinpath("argv").read_text().splitlines() == OvnkOptions().daemonset_args(API, str(out))
    assert Path(record.joinpath("cwd").read_text().strip()) == src / "dist" / "images"
    assert Path(record.joinpath("jinjanate").read_text().strip()).parent == Path(sys.prefix) / "bin"
    assert (out / "ovn-setup.yaml").is_file()


def test_render_failure_is_one_line(checkout, tmp_path, monkeypatch):
    src, _ = checkout
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(DpulabError, match=r"exit 3\): template missing$"):
        render_with_daemonset_sh(src, OvnkOptions(), API, tmp_path / "out")


def test_render_without_daemonset_sh_says_upstream_removed_it(tmp_path):
    with pytest.raises(InputError, match="removed it .* April 2026"):
        render_with_daemonset_sh(tmp_path, OvnkOptions(), API, tmp_path / "out")


# --- Helm values ------------------------------------------------------------------


def test_helm_values_follow_the_options():
    from dpulab.ovnk.helm import DPU_VALUES, HOST_VALUES, helm_values

    opts = OvnkOptions(image="localhost:5000/ovn-kube:v1", net_cidr="10.1.0.0/16,fd00:1::/48", svc_cidr="10.96.0.0/16",
                       mgmt_port_netdev="eth0-3", gateway_interface="eth0-9", mtu=1500)  # fmt: skip
    values = helm_values(opts, API)
    host, dpu = values[HOST_VALUES], values[DPU_VALUES]
    assert host["podNetwork"] == dpu["global"]["dpuHostClusterNetworkCIDR"] == "10.1.0.0/16/24,fd00:1::/48/64"
    assert host["global"]["image"]["repository"] == dpu["global"]["dpuImage"]["repository"] == "localhost:5000/ovn-kube"
    assert host["global"]["image"]["tag"] == "v1"
    assert host["ovnkube-node-dpu-host"] == {"nodeMgmtPortNetdev": "eth0-3", "gatewayOpts": "--gateway-interface=eth0-9"}
    assert host["mtu"] == dpu["global"]["mtu"] == 1500
    assert helm_values(OvnkOptions(image="repo/ovn"), API)[HOST_VALUES]["global"]["image"]["tag"] == "latest"
    assert helm_values(OvnkOptions(net_cidr="10.244.0.0/16/23"), API)[HOST_VALUES]["podNetwork"] == "10.244.0.0/16/23"
