"""OVN-Kubernetes on a lab's kind cluster in one go: the spec's Steps 6-16 after `up` made
the cluster (Steps 1-3) and wired it (4-5).

`dpulab up --engine kind --ovnk-src PATH` (or `--ovnk-rendered DIR`) calls `deploy_lab`
under the lab's lock, and `dpulab ovnk deploy` does the same on a lab that is up. The
lab's stored spec says everything else: `ovnk` (the Step 8 flags and the DPU-mode
settings), node names, the kubeconfig kind wrote, the node image (schema version) and
the container engine kind runs on (API URL discovery, image load).

Steps, in the spec's order:
  6-7  with `build_image`: upstream's image build with the engine in use, then into kind;
  8    the API URL as the spec finds it (kind's internal kubeconfig, the control plane's
       address on network `kind`), daemonset.sh renders, the DPU-mode DaemonSets are
       derived, every document is schema-checked;
  9-16 `deploy` against the cluster (server-side apply, waits with deadlines);
  then the nodes' OVN-K pods against their roles (`ovnk status`).
Before anything is sent, the lab's state records that OVN-Kubernetes is being deployed:
`verify` then expects what it adds to the nodes, even after a deploy that failed midway.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DpulabError, InputError
from ..kindconfig import lab_nodes
from .manifests import (
    NETPOL_CRD_FILES,
    derive_dpu_manifests,
    k8s_version_of_image,
    render_with_daemonset_sh,
    validate_dir,
)
from .options import OvnkOptions

if TYPE_CHECKING:
    from ..engines.kind import KindEngine
    from ..spec import LabSpec
    from ..state import LabState
    from .deploy import Change
    from .status import StatusRow

STATE_KEY = "ovnk"  # in the lab's state: what was deployed, when
RENDERED_DIR, MANIFESTS_DIR = "ovnk-rendered", "ovnk-manifests"  # in the lab's run directory


@dataclass(frozen=True)
class OvnkRun:
    """What one command is asked to do with OVN-Kubernetes (the lab's settings are LabSpec.ovnk).

    `cluster`: the Kubernetes API to deploy through; None is the official client on the
    lab's kubeconfig. Tests pass a recording stand-in here.
    """

    src: Path | None = None  # ovn-kubernetes checkout: daemonset.sh renders (Step 8), its Makefile builds (6)
    rendered: Path | None = None  # or a directory daemonset.sh already rendered
    build_image: bool = False  # Steps 6-7
    crds_dir: Path | None = None  # local ANP/BANP CRDs; None: download them (Step 9)
    api_url: str | None = None  # None: found as Step 8 does
    dpu_mode: bool = True  # Steps 15-16
    timeout: float = 600  # each wait
    cluster: Any = None

    def check(self, rendered_flag: str = "--ovnk-rendered") -> None:
        """Every input that can be checked before anything is made: one line for the first wrong one."""
        if (self.src is None) == (self.rendered is None):
            raise InputError(f"give exactly one of --ovnk-src or {rendered_flag}")
        if self.build_image and self.src is None:
            raise InputError("--build-image builds from an ovn-kubernetes checkout: give --ovnk-src")
        if self.rendered is not None and self.api_url is not None:
            raise InputError("--api-url is for rendering (--ovnk-src); a render already holds its API URL")
        if self.timeout <= 0:
            raise InputError(f"the OVN-Kubernetes timeout must be positive, not {self.timeout:g}")
        if self.src is not None:
            images = Path(self.src) / "dist" / "images"
            if not (images / "daemonset.sh").is_file():
                raise InputError(
                    f"{self.src} has no dist/images/daemonset.sh: upstream removed it and dist/templates in "
                    "April 2026 (Helm charts only since); use a checkout from before (e.g. commit eaa8ee762) "
                    "or --ovnk-rendered with manifests rendered by it"
                )
            if self.build_image and not (images / "Makefile").is_file():
                raise InputError(f"{self.src} is not an ovn-kubernetes checkout (no dist/images/Makefile)")
        if self.rendered is not None and not Path(self.rendered).is_dir():
            raise InputError(f"rendered manifests directory {self.rendered} does not exist")
        if self.crds_dir is not None:
            missing = [n for n in NETPOL_CRD_FILES if not (Path(self.crds_dir) / n).is_file()]
            if missing:
                raise InputError(f"CRD directory {self.crds_dir} lacks {', '.join(missing)}")


@dataclass
class OvnkResult:
    manifests: Path
    changes: list["Change"] = field(default_factory=list)
    rows: list["StatusRow"] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return sum(c.changed for c in self.changes)


Progress = Callable[[str, int], None]


def prepare_manifests(
    opts: OvnkOptions,
    out: Path,
    *,
    src: Path | None,
    rendered: Path | None,
    api_url: Callable[[], str],
    node_image: str,
    render_dir: Path | None = None,
) -> list[Path]:
    """Step 8: render (or take) the manifests, derive DPU mode into `out`, schema-check; files written.

    `api_url` is only called when rendering. `render_dir` keeps daemonset.sh's own output
    (default: `out` itself, derived in place)."""
    if (src is None) == (rendered is None):
        raise InputError("give exactly one of --ovnk-src or --rendered")
    out = Path(out)
    if src is not None:
        rendered = render_with_daemonset_sh(src, opts, api_url(), render_dir or out)
    written = derive_dpu_manifests(rendered, out, opts)
    errors = validate_dir(out, k8s_version_of_image(node_image))
    if errors:
        raise DpulabError(f"{len(errors)} schema error(s), first: {errors[0]}")
    return written


def api_url_of(engine: "KindEngine") -> str:
    """Step 8's API URL, asked of kind and of the engine the cluster runs on (as the spec does)."""
    from .deploy import api_url_from_kubeconfig

    lab = engine.topo.lab
    text = engine.kind("get", "kubeconfig", "--internal", "--name", lab).stdout

    def address(container: str) -> str:
        return engine.cli.run("inspect", "-f", "{{.NetworkSettings.Networks.kind.IPAddress}}", container).stdout

    return api_url_from_kubeconfig(text, address)


def _fresh_dir(d: Path) -> Path:
    """An empty directory of ours (a stale file of an earlier render must never be deployed)."""
    if d.is_symlink():
        raise DpulabError(f"{d} is a symbolic link, not a directory dpulab made; not following it")
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def record(state: "LabState | None", **fields: Any) -> None:
    if state is None:
        return
    state.data[STATE_KEY] = {**(state.data.get(STATE_KEY) or {}), **fields}
    state.save()


def deployed(state: "LabState | None") -> bool:
    """Has OVN-Kubernetes been (or begun to be) deployed on this lab?"""
    return bool(state is not None and (state.data.get(STATE_KEY) or {}).get("started"))


def deploy_lab(
    spec: "LabSpec",
    engine: "KindEngine",
    state: "LabState | None",
    run: OvnkRun,
    progress: Progress | None = None,
    on_change: Callable[["Change"], None] | None = None,
) -> OvnkResult:
    """Steps 6-16 on the lab's kind cluster (see the module's docstring); the caller holds the lab's lock."""
    from ..engines.kind import build_ovnk_image, kubeconfig_path
    from ..state import run_dir
    from .deploy import KubeCluster, deploy
    from .status import ovnk_status

    run.check()
    opts = spec.ovnk
    note = progress or (lambda step, n: None)
    if run.build_image:
        build_ovnk_image(Path(run.src), opts.image, engine.cli.binary)  # Step 6
        note("ovnk image build", 1)
        engine.load_image(opts.image)  # Step 7
        note("ovnk image load", 1)

    base = run_dir(spec.name)
    out = _fresh_dir(base / MANIFESTS_DIR)
    written = prepare_manifests(
        opts, out, src=run.src, rendered=run.rendered, node_image=spec.containers.kind.node_image,
        api_url=lambda: run.api_url or api_url_of(engine),
        render_dir=_fresh_dir(base / RENDERED_DIR) if run.src is not None else None,
    )  # fmt: skip
    note("ovnk manifests", len(written))

    cluster = run.cluster if run.cluster is not None else KubeCluster(Path(kubeconfig_path(spec)))
    nodes = lab_nodes(spec.name, spec.pairs)
    record(
        state, started=time.time(), deployed=None, interconnect=opts.enable_interconnect,
        representor_mode=opts.representor_mode, dpu_mode=run.dpu_mode, manifests=str(out),
    )  # fmt: skip
    changes = deploy(
        cluster, out, control_plane=nodes.control_plane, hosts=nodes.hosts, dpus=nodes.dpus,
        crds_dir=run.crds_dir, dpu_mode=run.dpu_mode, interconnect=opts.enable_interconnect,
        timeout=run.timeout, on_change=on_change,
    )  # fmt: skip
    record(state, deployed=time.time())
    note("ovnk deploy", sum(c.changed for c in changes))
    pods, node_list, events = cluster.status_inputs()
    rows = ovnk_status(pods, node_list, nodes.roles(), events)
    return OvnkResult(out, changes, rows)
