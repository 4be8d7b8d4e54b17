"""Rendering CLI results: rich tables for people, JSON for scripts.

Times: every command shows a time in the zone of the site it belongs to
(:func:`site_zone`), tables to the second with the offset, JSON as RFC 3339
with microseconds and the offset (``2026-12-01T08:00:17.112773+00:00``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from bgcore.bench import Bench
from bgcore.errors import BgcoreError

FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Output as a readable table or as JSON.",
)


def emit(fmt: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], data: Any = None,
         *, tz: tzinfo | None = None) -> None:
    """Print ``rows`` as a table, or ``data`` (default: rows as objects) as JSON.

    With ``tz``, every datetime (in rows, or one level deep in ``data``) is shown in that zone.
    """
    if fmt == "json":
        payload = data if data is not None else [dict(zip(columns, row)) for row in rows]
        if tz is not None:
            payload = _in_zone(payload, tz)
        click.echo(json.dumps(payload, indent=2, default=_json_value))
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(local_time(cell, tz) if tz else cell) for cell in row))
    console = Console()
    if not console.is_terminal:  # piped output: never wrap a cell in the middle of a word
        console = Console(width=250)
    console.print(table)


def site_zone(bench: Bench, site: str | None) -> tzinfo:
    """The zone times of ``site`` are shown in: its ``time_zone``; UTC if it has none or it is unreadable."""
    from bgcore.scheduler.due import zone
    from bgcore.scheduler.registry import site_time_zone

    if site is None:
        return timezone.utc
    try:
        return zone(site_time_zone(bench, site))
    except BgcoreError:  # a broken or deleted site: its leftovers are still shown, in UTC
        return timezone.utc


def local_time(value: Any, tz: tzinfo | None) -> Any:
    """``value`` converted to ``tz`` if it is an aware datetime (naive ones are taken as UTC)."""
    if not isinstance(value, datetime) or tz is None:
        return value
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return aware.astimezone(tz)


def rfc3339(value: datetime) -> str:
    """``value`` as RFC 3339 with microseconds and offset (naive values are taken as UTC)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    return aware.isoformat(timespec="microseconds")


def _in_zone(payload: Any, tz: tzinfo) -> Any:
    if isinstance(payload, list):
        return [_in_zone(item, tz) for item in payload]
    if isinstance(payload, dict):
        return {key: local_time(value, tz) for key, value in payload.items()}
    return local_time(payload, tz)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)
