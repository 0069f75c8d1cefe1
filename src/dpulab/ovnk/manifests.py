"""OVN-Kubernetes manifests for a lab: render with upstream's daemonset.sh, derive DPU mode, validate.

`derive_dpu_manifests` changes only what the spec's Step 16 asks of the two DPU-mode
DaemonSets; every other rendered file is copied byte for byte. The edits are set/replace
operations, so deriving again (even in place) gives the same files.

daemonset.sh renders the DPU DaemonSet (`ovnkube-node-dpu`) twice: in
`ovnkube-single-node-zone-dpu.yaml`, the interconnect stack (its own NB/SB/northd, the
ovnkube-controller-with-node container) that goes with `--enable-interconnect=true` as
the spec deploys it, and in `ovnkube-node-dpu.yaml` for the centralized stack. The one
that matches `enable_interconnect` is derived; the other stays as rendered and is not
deployed.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ..errors import DpulabError, InputError
from ..kindconfig import BlockDumper, node_image_version
from .options import OvnkOptions

NAMESPACE = "ovn-kubernetes"
DPU_FILE = "ovnkube-node-dpu.yaml"  # the DPU DaemonSet, centralized OVN (no interconnect)
DPU_IC_FILE = "ovnkube-single-node-zone-dpu.yaml"  # the same DaemonSet, interconnect single-node zone
DPU_HOST_FILE = "ovnkube-node-dpu-host.yaml"
DPU_DAEMONSET = "ovnkube-node-dpu"  # in both DPU files
NODE_CONTAINER = "ovnkube-node"
# The container that runs ovnkube (and so gets the node mode and names) in each file.
NODE_CONTAINERS = {DPU_FILE: NODE_CONTAINER, DPU_IC_FILE: "ovnkube-controller", DPU_HOST_FILE: NODE_CONTAINER}
DPU_LABEL = "k8s.ovn.org/dpu"
DPU_HOST_LABEL = "k8s.ovn.org/dpu-host"

# Step 9's Admin/Baseline Admin Network Policy CRDs: fetched unless given as local files.
NETPOL_API_VERSION = "v0.1.5"
NETPOL_CRD_FILES = (
    "policy.networking.k8s.io_adminnetworkpolicies.yaml",
    "policy.networking.k8s.io_baselineadminnetworkpolicies.yaml",
)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: manifests are large


def dpu_mode_files(interconnect: bool) -> tuple[str, str]:
    """The two files Step 16 derives and deploys: the DPU DaemonSet's, from the interconnect
    stack when `enable_interconnect` (the spec's Step 8) else the centralized one; the DPU host's."""
    return (DPU_IC_FILE if interconnect else DPU_FILE), DPU_HOST_FILE


def load_docs(text: str) -> list:
    """The non-empty documents of a YAML stream (safe loading)."""
    return [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]


def _node_name_ref() -> dict:
    return {"fieldRef": {"fieldPath": "spec.nodeName"}}


def netpol_crd_url(filename: str) -> str:
    return (
        "https://raw.githubusercontent.com/kubernetes-sigs/network-policy-api/"
        f"{NETPOL_API_VERSION}/config/crd/experimental/{filename}"
    )


def render_with_daemonset_sh(
    ovnk_src: Path, opts: OvnkOptions, api_url: str, out_dir: Path, *, timeout: float = 300
) -> Path:
    """Run a checkout's `dist/images/daemonset.sh` with the Step 8 flags; returns the output dir.

    The venv's bin dir goes first on PATH because daemonset.sh calls `jinjanate`.
    """
    script = Path(ovnk_src) / "dist" / "images" / "daemonset.sh"
    if not script.is_file():
        raise InputError(
            f"{ovnk_src} has no dist/images/daemonset.sh: upstream removed it and dist/templates in "
            "April 2026 (Helm charts only since); use a checkout from before (e.g. commit eaa8ee762) "
            "or pass already rendered manifests"
        )
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(Path(sys.prefix) / "bin"), os.environ.get("PATH", os.defpath)])
    if shutil.which("jinjanate", path=path) is None:
        raise DpulabError("daemonset.sh needs jinjanate, which is not installed: pip install 'jinjanator[yaml]'")
    argv = ["bash", str(script), *opts.daemonset_args(api_url, str(out_dir))]
    try:
        proc = subprocess.run(
            argv, cwd=script.parent, env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise DpulabError(f"daemonset.sh did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise DpulabError(f"daemonset.sh failed (exit {proc.returncode}): {last}")
    return out_dir


def _set_env(env: list[dict], name: str, *, value: str | None = None, value_from: dict | None = None) -> None:
    """Replace `name` in place, or add it after OVNKUBE_NODE_MODE (where the spec's snippet puts it)."""
    entry = {"name": name, "value": value} if value_from is None else {"name": name, "valueFrom": value_from}
    names = [e.get("name") for e in env]
    if name in names:
        env[names.index(name)] = entry
    else:
        at = names.index("OVNKUBE_NODE_MODE") + 1 if "OVNKUBE_NODE_MODE" in names else len(env)
        env.insert(at, entry)


def _drop_env(env: list[dict], name: str) -> None:
    env[:] = [e for e in env if e.get("name") != name]


def _rename_env(env: list[dict], old: str, new: str) -> None:
    """On the DPU, the node name comes as K8S_NODE_DPU (ovnkube.sh takes K8S_NODE from OVS)."""
    names = [e.get("name") for e in env]
    if old in names and new in names:
        _drop_env(env, old)
    elif old in names:
        env[names.index(old)] = {"name": new, "valueFrom": _node_name_ref()}


def _with_gateway_interface(opts_text: str, iface: str) -> str:
    """OVN_GATEWAY_OPTS with exactly one --gateway-interface, ours; other options kept.

    Split on blanks, as ovnkube.sh word-splits the variable (no shell quoting inside it).
    """
    kept, skip_next = [], False
    for w in opts_text.split():
        if skip_next:
            skip_next = False
        elif w == "--gateway-interface":
            skip_next = True
        elif not w.startswith("--gateway-interface="):
            kept.append(w)
    return " ".join([*kept, f"--gateway-interface={iface}"])


def _node_container(doc: dict, source: str) -> dict:
    name = NODE_CONTAINERS[source]
    for c in doc["spec"]["template"]["spec"]["containers"]:
        if c.get("name") == name:
            return c
    raise DpulabError(f"{source}: DaemonSet {doc['metadata']['name']} has no {name} container")


def _representor_env(env: list[dict], opts: OvnkOptions, *, dpu: bool) -> None:
    """veth: the spec's DPU_REPRESENTOR_MODE on the DPU side; simulate-dpu: upstream's flag on both sides."""
    _drop_env(env, "DPU_REPRESENTOR_MODE")
    _drop_env(env, "OVN_SIMULATE_DPU")
    if opts.representor_mode == "simulate-dpu":
        _set_env(env, "OVN_SIMULATE_DPU", value="true")
    elif dpu:
        _set_env(env, "DPU_REPRESENTOR_MODE", value="veth")


def _derive_dpu(doc: dict, opts: OvnkOptions, source: str) -> None:
    pod = doc["spec"]["template"]["spec"]
    for c in pod["containers"]:
        _rename_env(c.get("env", []), "K8S_NODE", "K8S_NODE_DPU")
    env = _node_container(doc, source).setdefault("env", [])
    _set_env(env, "OVNKUBE_NODE_MODE", value="dpu")
    _set_env(env, "K8S_NODE_DPU", value_from=_node_name_ref())
    _representor_env(env, opts, dpu=True)
    pod.setdefault("nodeSelector", {})[DPU_LABEL] = ""


def _derive_dpu_host(doc: dict, opts: OvnkOptions, source: str) -> None:
    pod = doc["spec"]["template"]["spec"]
    env = _node_container(doc, source).setdefault("env", [])
    _set_env(env, "OVNKUBE_NODE_MODE", value="dpu-host")
    _representor_env(env, opts, dpu=False)
    _set_env(env, "OVNKUBE_NODE_MGMT_PORT_NETDEV", value=opts.mgmt_port_netdev)
    current = next((e.get("value") or "" for e in env if e.get("name") == "OVN_GATEWAY_OPTS"), "")
    _set_env(env, "OVN_GATEWAY_OPTS", value=_with_gateway_interface(current, opts.gateway_interface))
    pod.setdefault("nodeSelector", {})[DPU_HOST_LABEL] = ""


_DERIVERS = {DPU_FILE: _derive_dpu, DPU_IC_FILE: _derive_dpu, DPU_HOST_FILE: _derive_dpu_host}


def derive_dpu_text(text: str, opts: OvnkOptions, source: str) -> str:
    """One rendered DPU-mode file in, its Step 16 form out (every DaemonSet in it edited)."""
    try:
        docs = load_docs(text)
    except yaml.YAMLError:
        raise InputError(f"{source}: not valid YAML") from None
    daemonsets = [d for d in docs if isinstance(d, dict) and d.get("kind") == "DaemonSet"]
    if not daemonsets:
        raise DpulabError(f"{source}: no DaemonSet in it")
    for ds in daemonsets:
        try:
            _DERIVERS[source](ds, opts, source)
        except (KeyError, TypeError, AttributeError) as e:
            raise DpulabError(f"{source}: not a DaemonSet as daemonset.sh renders it ({type(e).__name__}: {e})") from None
    header = f"# {source}: rendered by daemonset.sh, DPU mode set by dpulab (representor mode {opts.representor_mode})\n"
    return header + yaml.dump_all(docs, Dumper=BlockDumper, sort_keys=False, explicit_start=True, width=1 << 16)


def derive_dpu_manifests(rendered_dir: Path, out_dir: Path, opts: OvnkOptions) -> list[Path]:
    """Copy a daemonset.sh output dir to `out_dir`, the two DPU-mode DaemonSets derived
    (`dpu_mode_files`); returns files written."""
    rendered_dir, out_dir = Path(rendered_dir), Path(out_dir)
    if not rendered_dir.is_dir():
        raise InputError(f"rendered manifests directory {rendered_dir} does not exist")
    targets = dpu_mode_files(opts.enable_interconnect)
    missing = [f for f in targets if not (rendered_dir / f).is_file()]
    if missing:
        raise InputError(f"{rendered_dir} lacks {', '.join(missing)}: not a daemonset.sh output directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    in_place = rendered_dir.resolve() == out_dir.resolve()
    written = []
    for src in sorted(p for p in rendered_dir.iterdir() if p.is_file()):
        dst = out_dir / src.name
        if src.name in targets:
            dst.write_text(derive_dpu_text(src.read_text(), opts, src.name))
        elif not in_place:
            shutil.copyfile(src, dst)
        else:
            continue
        written.append(dst)
    return written


def k8s_version_of_image(image: str) -> str | None:
    version = node_image_version(image)
    return None if version is None else f"{version[0]}.{version[1]}"


def schema_version(k8s_version: str | None) -> tuple[str, str | None]:
    """The kubernetes-validate schema set for a cluster version, and a note when it is not exact."""
    from kubernetes_validate.utils import all_versions

    versions = all_versions()
    want = (k8s_version or "").removeprefix("v").split(".")[:2]
    for v in versions:
        if v.split(".")[:2] == want:
            return v, None
    return versions[-1], f"no schemas for Kubernetes {k8s_version}: validated against {versions[-1]}, the newest known"


@functools.lru_cache(maxsize=512)
def _check_doc(version: str, doc_json: str) -> tuple[str, str] | None:
    """("error" | "skipped", detail) for one document, None if valid; cached, as the same
    documents are checked again and again (each check loads megabytes of schema)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError

    doc = json.loads(doc_json)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except SchemaNotFoundError:
        return "skipped", f"not validated, no schema for {doc['apiVersion']} (a custom resource)"
    except kubernetes_validate.ValidationError as e:
        return "error", f"{'.'.join(str(p) for p in e.path) or '(top)'}: {e.message[:300]}"
    return None


def validate_dir(directory: Path, k8s_version: str | None, notes: list[str] | None = None) -> list[str]:
    """Schema errors of every document in `directory`'s YAML files (strict: unknown fields are errors).

    Kinds with no schema (custom resources such as ServiceMonitor) are skipped, each with
    a line added to `notes`; CustomResourceDefinitions themselves are validated.
    """
    notes = [] if notes is None else notes
    version, note = schema_version(k8s_version)
    if note:
        notes.append(note)
    errors = []
    files = sorted(p for p in Path(directory).iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    for path in files:
        try:
            docs = load_docs(path.read_text())
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            errors.append(f"{path.name}{f' line {mark.line + 1}' if mark else ''}: not valid YAML")
            continue
        for doc in docs:
            if not isinstance(doc, dict) or not {"kind", "apiVersion"} <= doc.keys():
                errors.append(f"{path.name}: a document without kind and apiVersion")
                continue
            found = _check_doc(version, json.dumps(doc, sort_keys=True, default=str))
            if found is not None:
                what = f"{path.name}: {doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}: {found[1]}"
                (errors if found[0] == "error" else notes).append(what)
    return errors
