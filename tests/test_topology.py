"""The pure model: names, MACs, addresses and validation, without root."""

from __future__ import annotations

import hashlib

import pytest

from dpulab.errors import InputError
from dpulab.spec import LabSpec, load_spec
from dpulab.topology import Topology, mac_for


def test_defaults_reproduce_the_spec_drawing():
    topo = Topology(load_spec())
    assert [n.name for n in topo.nodes] == [
        "dpu-control-plane", "dpu-worker", "dpu-worker2", "dpu-worker3", "dpu-worker4"
    ]
    assert [(p.host.name, p.dpu.name) for p in topo.pairs] == [("dpu-worker", "dpu-worker2"), ("dpu-worker3", "dpu-worker4")]
    second = topo.links(topo.pairs[1])
    assert len(second) == 16
    assert (second[0].host_ifname, second[0].rep_ifname) == ("eth0-0", "rep1-0")
    assert (second[-1].host_ifname, second[-1].rep_ifname) == ("eth0-15", "rep1-15")
    assert topo.pairs[0].host.cluster_ip is None, "hosts get no cluster address"
    assert all(n.cluster_ip for n in topo.cluster_members)


@pytest.mark.parametrize("pairs", [1, 3, 8])
def test_kind_worker_numbering(pairs):
    topo = Topology(load_spec(overrides={"name": "lab", "pairs": pairs}))
    for p in topo.pairs:
        h, d = 2 * p.index + 1, 2 * p.index + 2
        assert p.host.name == ("lab-worker" if h == 1 else f"lab-worker{h}")
        assert p.dpu.name == f"lab-worker{d}"
    ips = [n.cluster_ip for n in topo.cluster_members]
    assert len(set(ips)) == len(ips)


def test_ovnk_naming_uses_pf0_everywhere():
    topo = Topology(load_spec(overrides={"naming": "ovnk", "vfs": 4}))
    assert {link.rep_ifname for link in topo.all_links} == {f"rep0-{i}" for i in range(4)}


def test_mac_formula_matches_upstream():
    for node, role, index in [("dpu-worker", "host", 0), ("dpu-worker4", "dpu", 15), ("x", "host", 255)]:
        d = hashlib.sha256(node.encode() + b"\0" + role.encode()).digest()
        assert mac_for(node, role, index) == f"52:54:00:{d[0]:02x}:{d[1]:02x}:{index:02x}"


def test_macs_unique_within_a_node_beyond_256_vfs():
    topo = Topology(load_spec(overrides={"pairs": 1, "vfs": 600}))
    macs = [link.host_mac for link in topo.all_links]
    assert len(set(macs)) == len(macs)


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"pairs": 0}, "pairs"),
        ({"vfs": 0}, "vfs"),
        ({"name": "Bad_Name"}, "not a lab name"),
        ({"name": "a" * 21}, "not a lab name"),
        ({"name": "x;rm -rf"}, "not a lab name"),
        ({"naming": "fancy"}, "naming"),
        ({"names": {"rep": "representor{pair}-{vf}"}, "vfs": 1000}, "Linux allows 15"),
        ({"names": {"vf": "eth{vf}"}}, "collides"),
        ({"names": {"vf": "x/{vf}"}}, "name template"),
        ({"names": {"vf": "x{oops}{vf}"}}, "only {pair}"),
        ({"cluster": {"subnet": "10.0.0.0/30"}}, "subnet"),
        ({"cluster": {"subnet": "10.0.0.1/24"}}, "not a network"),
        ({"bogus": 1}, "Extra inputs"),
    ],
)
def test_bad_input_is_one_line(overrides, words):
    with pytest.raises(InputError) as e:
        load_spec(overrides=overrides)
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_yaml_file_and_flags(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("name: filelab\npairs: 3\nvfs: 4\nnaming: ovnk\n")
    spec = load_spec(f, {"vfs": 8, "pairs": None})
    assert (spec.name, spec.pairs, spec.vfs, spec.naming) == ("filelab", 3, 8, "ovnk")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="mapping"):
        load_spec(bad)
    with pytest.raises(InputError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_schema_rejects_unknown_fields():
    schema = LabSpec.model_json_schema()
    assert schema["additionalProperties"] is False
    assert {"name", "pairs", "vfs", "naming", "engine", "dataplane"} <= set(schema["properties"])


@pytest.mark.parametrize(
    "pods, words",
    [
        ([{"name": "a", "host": 5}], "not a host"),
        ([{"name": "a", "host": "dpu-worker2"}], "not a host"),
        ([{"name": "a"}, {"name": "a", "host": 1}], "used twice"),
        ([{"name": "a", "vf": 1}], "reserved"),
        ([{"name": "a", "vf": 16}], "reserved or does not exist"),
        ([{"name": "a", "vf": 3}, {"name": "b", "vf": 3}], "taken"),
        ([{"name": "Bad"}], "pods.0.name"),
    ],
)
def test_lab_file_pods_are_checked(pods, words):
    with pytest.raises(InputError) as e:
        load_spec(overrides={"pods": pods})
    assert words in str(e.value)


def test_lab_file_pods_need_the_data_plane():
    with pytest.raises(InputError, match="ovn data plane"):
        load_spec(overrides={"pods": [{"name": "a"}], "dataplane": "none"})
    spec = load_spec(overrides={"pods": [{"name": "a", "host": 1}, {"name": "b", "host": "dpu-worker"}]})
    assert [spec.pod_host(p) for p in spec.pods] == ["dpu-worker3", "dpu-worker"]
