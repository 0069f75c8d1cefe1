"""What every CLI module shares: consoles and the common options."""

from __future__ import annotations

import typer
from rich.console import Console

out = Console(highlight=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

NameOpt = typer.Option("dpu", "--name", "-n", help="Lab name (kind cluster name).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
