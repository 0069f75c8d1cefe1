"""What every CLI module shares: consoles and the common options."""

from __future__ import annotations

import re
import shutil
import sys

import typer
from rich.console import Console

from .spec import LAB_NAME_PATTERN

# A pipe gets 120 columns (or $COLUMNS) rather than rich's 80, so tables stay readable in logs.
out = Console(highlight=False, width=None if sys.stdout.isatty() else shutil.get_terminal_size((120, 24)).columns)
err = Console(stderr=True, highlight=False, soft_wrap=True)



def lab_name(value: str) -> str:
    """--name is checked before anything uses it: it becomes paths and namespace names."""
    if not re.fullmatch(LAB_NAME_PATTERN, value):
        raise typer.BadParameter(f"{value!r} is not a lab name (lowercase letters, digits and '-', starting with a letter, at most 20)")
    return value


NameOpt = typer.Option("dpu", "--name", "-n", help="Lab name (kind cluster name).", callback=lab_name)
JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")
