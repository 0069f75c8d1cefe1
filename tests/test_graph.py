"""`dpulab graph`: the planned lab without root, the running one read from the kernel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest

from dpulab import graph
from dpulab.netlink import LinkInfo
from dpulab.spec import load_spec
from dpulab.topology import Topology

from .conftest import needs_root, run_cli

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz `dot` (apt-get install graphviz)")
needs_ovn = pytest.mark.skipif(shutil.which("ovn-northd") is None, reason="needs openvswitch-switch ovn-central ovn-host")


# -- pure: ranges and labels -------------------------------------------------------------
def test_ranges_and_names():
    assert graph.fmt_indices([2, 3, 4, 6, 8, 9]) == "2..4,6,8..9"
    assert graph.fmt_indices([5]) == "5"
    assert graph.name_range("eth0-{vf}", 1, list(range(2, 16))) == "eth0-2..15"
    assert graph.name_range("rep{pair}-{vf}", 1, [2, 3, 5]) == "rep1-{2..3,5}"
    assert graph.name_range("pf{pf}vf{vf}", 3, [7]) == "pf0vf7"


def _graph(**spec) -> graph.LabGraph:
    return graph.build(Topology(load_spec(None, {"name": "gt", **spec})))


def test_planned_model_groups_links_and_calls_out_gateway_and_management():
    g = _graph(pairs=2, vfs=16)
    assert {n.name for n in g.nodes} >= {"gt-control-plane", "gt-worker", "gt-worker2", "gt-worker3", "gt-worker4", "kind"}
    pair1 = [e for e in g.edges if e.b == "d1" and e.kind != "cluster"]
    assert [e.kind for e in pair1] == ["gateway", "mgmt", "vfs"]
    assert pair1[0].main_label == "VF0 gateway · eth0-0 ⇄ rep1-0"
    assert pair1[1].main_label == "VF1 management · eth0-1 ⇄ rep1-1"
    assert pair1[2].main_label == "eth0-2..15 ⇄ rep1-2..15 (14)"
    assert sum(e.count for e in pair1) == 16
    # hosts never touch the cluster network; DPUs and the control plane do
    cluster = {(e.a, e.b) for e in g.edges if e.kind == "cluster"}
    assert cluster == {("br", "cp"), ("d0", "br"), ("d1", "br")}
    assert g.summary["vf_links"] == 32 and g.mode == "planned"


def test_one_link_per_pair_is_just_the_gateway():
    g = _graph(pairs=1, vfs=1, dataplane="none")
    assert [e.kind for e in g.edges if e.b == "d0" and e.kind != "cluster"] == ["gateway"]


def test_big_lab_stays_compact():
    t0 = time.perf_counter()
    g = _graph(pairs=64, vfs=4096)
    text = graph.to_mermaid(g)
    assert time.perf_counter() - t0 < 10
    assert "eth0-2..4095 ⇄ rep63-2..4095 (4094)" in text
    edges = [line for line in text.splitlines() if "---|" in line or "-.-|" in line]
    assert len(edges) == 1 + 64 * 4  # control plane + per pair: VF0, VF1, the rest, cluster port


def _li(name: str, index: int, up: bool = True) -> LinkInfo:
    return LinkInfo(name, index, "veth", up, None, None, None, None, None, 1500, up)


def test_live_model_counts_down_links_pods_daemons_and_impairments():
    """Kernel state made up by hand: one link down, one VF held by a pod, one impairment."""
    topo = Topology(load_spec(None, {"name": "gt", "pairs": 1, "vfs": 8}))
    host = {f"eth0-{i}": _li(f"eth0-{i}", 10 + i, up=(i != 6)) for i in range(8) if i != 3}
    dpu = {f"rep0-{i}": _li(f"rep0-{i}", 20 + i) for i in range(8)} | {"eth0": _li("eth0", 2)}
    live = graph.Live(
        links={"gt-worker": host, "gt-worker2": dpu, "gt-control-plane": {"eth0": _li("eth0", 2)},
               "gt-net": {"kind": _li("kind", 1), "cp": _li("cp", 3), "w2": _li("w2", 4)},
               "gt-pod-web": {"eth0": _li("eth0", 5)}},
        cluster_ns="gt-net",
        daemons={"gt-worker2": [("ovs-vswitchd", 42), ("ovn-controller", None)]},
        qdiscs={"gt-worker2": {"eth0": "rate 100mbit"}},
    )
    pods = [{"name": "web", "host": "gt-worker", "dpu": "gt-worker2", "vf": 3, "netns": "gt-pod-web",
             "ip": "10.244.0.3", "representor": "rep0-3"}]
    g = graph.build(topo, live=live, pods=pods)
    rest = next(e for e in g.edges if e.kind == "vfs")
    assert rest.main_label == "eth0-{2,4..7} ⇄ rep0-{2,4..7} (5)"
    assert rest.state == "partial" and rest.status_label == "4 up, 1 down: eth0-6"
    pod_link = next(e for e in g.edges if e.kind == "pod-link")
    assert (pod_link.a, pod_link.b_if, pod_link.state) == ("pod_web", "rep0-3", "up")
    dpu_node = g.node("d0")
    assert [(d["component"], d["running"]) for d in dpu_node.daemons] == [("ovs-vswitchd", True), ("ovn-controller", False)]
    port = next(e for e in g.edges if e.kind == "cluster" and e.a == "d0")
    assert port.impaired == ["worker2: rate 100mbit"]
    assert g.summary["links_up"] == 7 and g.summary["links_down"] == 1 and g.summary["daemons_running"] == 1
    text = graph.to_mermaid(g)
    assert "4 up, 1 down: eth0-6" in text and "✗ ovn-controller" in text and "10.244.0.3" in text


# -- the CLI, planned (no root needed) -----------------------------------------------------
def test_cli_mermaid_for_planned_lab(lab_name):
    res = run_cli("graph", "--name", lab_name, "--pairs", "3", "--vfs", "16", "--format", "mermaid")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.splitlines()[3] == "flowchart LR"
    for node in ("control-plane", "worker", "worker2", "worker5", "worker6"):
        assert f"{lab_name}-{node}" in out
    assert "eth0-2..15 ⇄ rep2-2..15 (14)" in out
    assert "VF0 gateway · eth0-0 ⇄ rep0-0" in out and "VF1 management" in out
    assert out.count("subgraph pair") == 3


def test_cli_dot_planned_from_lab_file(tmp_path, lab_name):
    f = tmp_path / "lab.yaml"
    f.write_text(f"name: {lab_name}\npairs: 2\nvfs: 8\nnaming: ovnk\n")
    res = run_cli("graph", "-f", str(f), "--format", "dot")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f'graph "{lab_name}"')
    assert "subgraph cluster_pair1" in res.stdout and "cluster_net" in res.stdout
    assert "eth0-2..7 ⇄ rep0-2..7 (6)" in res.stdout  # ovnk naming: rep0-* on every DPU
    if shutil.which("dot"):
        check = subprocess.run(["dot", "-Tsvg"], input=res.stdout, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_cli_json_and_bad_format(lab_name):
    res = run_cli("graph", "--name", lab_name, "--pairs", "1", "--vfs", "4", "--format", "json")
    data = json.loads(res.stdout)
    assert data["mode"] == "planned" and data["summary"]["vf_links"] == 4
    assert [e["label"] for e in data["edges"] if e["kind"] == "vfs"] == ["eth0-2..3 ⇄ rep0-2..3 (2)"]
    bad = run_cli("graph", "--name", lab_name, "--pairs", "1", "--format", "visio")
    assert bad.returncode == 2 and bad.stderr.startswith("dpulab: error: --format 'visio'")


@needs_dot
def test_cli_svg_png_html_files(tmp_path, lab_name):
    for ext in ("svg", "png", "html"):
        out = tmp_path / f"lab.{ext}"
        res = run_cli("graph", "--name", lab_name, "--pairs", "2", "--vfs", "16", "-o", str(out))
        assert res.returncode == 0, res.stderr
        assert out.stat().st_size > 1000
    svg = (tmp_path / "lab.svg").read_text()
    assert svg.startswith("<svg") and "eth0-2..15 ⇄ rep1-2..15 (14)" in svg.replace("&#45;", "-")
    assert (tmp_path / "lab.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "lab.html").read_text()
    assert "<svg" in page and page.count("<html") == 1
    # self-contained: nothing is fetched (the SVG's xmlns names are identifiers, not requests)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page


# -- the running lab ----------------------------------------------------------------------
@needs_root
@needs_ovn
def test_live_graph_of_a_running_lab(clean_lab):
    name = clean_lab
    res = run_cli("up", "--name", name, "--vfs", "6")
    assert res.returncode == 0, res.stderr
    res = run_cli("pod", "add", f"{name}-worker", "web", "--name", name, "--json")
    assert res.returncode == 0, res.stderr
    pod = json.loads(res.stdout)
    down = subprocess.run(["ip", "-n", f"{name}-worker3", "link", "set", "eth0-4", "down"], capture_output=True, text=True)
    assert down.returncode == 0, down.stderr
    imp = run_cli("netem", "set", f"{name}-worker4", "eth0", "--rate", "50mbit", "--name", name)
    assert imp.returncode == 0, imp.stderr

    data = json.loads(run_cli("graph", "--name", name, "--format", "json").stdout)
    assert data["mode"] == "live"
    edges = {(e["a"], e["kind"]): e for e in data["edges"]}
    # pair 0: VF2 is in the pod, the rest grouped and up
    assert edges[("h0", "vfs")]["a_if"] == "eth0-3..5" and edges[("h0", "vfs")]["count"] == 3
    assert edges[("h0", "vfs")]["state"] == "up"
    pod_link = edges[("pod_web", "pod-link")]
    assert pod_link["b_if"] == pod["representor"] and pod_link["state"] == "up"
    # pair 1: one link down, named; its DPU's cluster port impaired
    assert edges[("h1", "vfs")]["state"] == "partial" and edges[("h1", "vfs")]["not_up"] == ["eth0-4"]
    assert edges[("d1", "cluster")]["impaired"] == ["worker4: rate 50mbit"]
    nodes = {n["name"]: n for n in data["nodes"]}
    assert all(d["running"] for d in nodes[f"{name}-worker2"]["daemons"]) and len(nodes[f"{name}-worker2"]["daemons"]) == 3
    assert pod["ip"] in nodes["web"]["lines"]
    assert data["summary"]["links_down"] == 1

    mermaid = run_cli("graph", "--name", name).stdout
    assert "1 down: eth0-4" in mermaid and "✓ ovn-northd" in mermaid
    if shutil.which("dot"):
        svg = run_cli("graph", "--name", name, "--format", "svg")
        assert svg.returncode == 0 and "<svg" in svg.stdout
