"""`dpulab image build|load`: the spec's Steps 6-7 for a lab on the kind engine, on request."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import InputError
from .ovnk.options import DEFAULT_IMAGE

image_app = typer.Typer(help="The OVN-Kubernetes image of a kind lab (spec Steps 6-7).", no_args_is_help=True)
ImageOpt = typer.Option(DEFAULT_IMAGE, "--image", help="Image name and tag.")


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")


@image_app.command("build")
def build(
    src: Path = typer.Option(..., "--ovnk-src", help="ovn-kubernetes checkout (its dist/images/Makefile builds the image)."),
    image: str = ImageOpt,
    oci_bin: Optional[str] = typer.Option(None, "--oci-bin", help="docker | podman [detected; $DPULAB_CONTAINER_ENGINE]."),
) -> None:
    """Step 6: build the OVN-Kubernetes image from a checkout with the container engine in use."""
    from .engines import container_engine
    from .engines.kind import build_ovnk_image

    if oci_bin not in (None, "docker", "podman"):
        raise InputError(f"--oci-bin {oci_bin!r}: docker or podman")
    binary = oci_bin or container_engine()
    build_ovnk_image(src, image, binary)
    typer.echo(f"built {image} with {binary}")


@image_app.command("load")
def load(
    name: str = typer.Option("dpu", "--name", "-n", help="Lab (kind cluster) name."),
    image: str = ImageOpt,
) -> None:
    """Step 7: load the image into every node of the lab's kind cluster."""
    from .engines import get_engine
    from .state import LabState
    from .topology import Topology

    state = LabState.require(name)
    if state.spec.engine != "kind":
        raise InputError(f"lab {name!r} runs on engine {state.spec.engine}: images are loaded into kind clusters only")
    engine = get_engine("kind", Topology(state.spec))
    engine.load_image(image)  # type: ignore[attr-defined]
    typer.echo(f"loaded {image} into kind cluster {name}")
