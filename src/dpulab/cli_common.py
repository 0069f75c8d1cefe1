"""What every CLI module shares: consoles and the common options."""

from __future__ import annotations

import shutil
import sys

import typer
from rich.console import Console

# A pipe gets 120 columns (or $COLUMNS) rather than rich's 80, so tables stay readable in logs.
out = Console(highlight=False, width=None if sys.stdout.isatty() else shutil.get_terminal_size((120, 24)).columns)
err = Console(stderr=True, highlight=False, soft_wrap=True)

NameOpt = typer.Option("dpu", "--name", "-n", help="Lab name (kind cluster name).")
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
