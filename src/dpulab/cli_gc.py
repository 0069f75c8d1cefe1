"""`dpulab gc`: remove what labs whose state is gone left behind, by mark only."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from .cli_common import JsonOpt, lab_name, out


def _lab_names(values: Optional[list[str]]) -> Optional[list[str]]:
    return [lab_name(v) for v in values] if values else values


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; change nothing."),
    labs: Optional[list[str]] = typer.Option(None, "--lab", help="Only this lab's leftovers (repeatable).", callback=_lab_names),
    as_json: bool = JsonOpt,
) -> None:
    """Remove leftovers of labs whose state file is gone, by mark only.

    Namespaces, placeholders, daemons, interfaces and run directories go only if they carry
    that lab's mark. Anything same-named that is not ours is listed and left alone; labs in
    use are skipped."""
    from .gc import LEFT_ALONE, SKIPPED, gc as collect
    from .lab import require_root

    require_root("gc")
    findings = collect(dry_run, labs or None)
    if as_json:
        out.print_json(json.dumps({"dry_run": dry_run, "findings": [f.as_dict() for f in findings]}))
        return
    if not findings:
        out.print("nothing to collect: every dpulab object belongs to a lab with a state file")
        return
    t = Table(title="dpulab gc" + (" (dry run)" if dry_run else ""), title_justify="left")
    for col in ("lab", "kind", "object", "action", "detail"):
        t.add_column(col)
    for f in findings:
        style = "yellow" if f.action in (LEFT_ALONE, SKIPPED) else ""
        t.add_row(f.lab, f.kind, f.name, f"[{style}]{f.action}[/]" if style else f.action, f.detail)
    out.print(t)


def register(app: typer.Typer) -> None:
    app.command("gc")(gc)
