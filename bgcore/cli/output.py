"""Rendering CLI results: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from datetime import datetime
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
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(cell) for cell in row))
    console = Console()
    if not console.is_terminal:  # piped output: never wrap a cell in the middle of a word
        console = Console(width=250)
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)
