"""Rendering CLI results: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Output as a readable table or as JSON.",
)


def emit(fmt: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], data: Any = None) -> None:
    """Print ``rows`` as a table, or ``data`` (default: rows as objects) as JSON."""
    if fmt == "json":
        payload = data if data is not None else [dict(zip(columns, row)) for row in rows]
        click.echo(json.dumps(payload, indent=2, default=str))
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console(soft_wrap=True).print(table)
