"""Rendering CLI results: rich tables for people, JSON for scripts.

Times: every command shows a time in the zone of the site it belongs to
(:func:`site_zone`), tables to the second (the zone in the title), JSON as RFC 3339
with microseconds and the offset (``2026-12-01T08:00:17.112773+00:00``).
"""

from __future__ import annotations

import json
import os
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


WIDE_OPTION = click.option("--wide", is_flag=True, help="Show every column, long ids included.")


def emit(fmt: str, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], data: Any = None,
         *, tz: tzinfo | None = None, squeeze: Sequence[str] = ()) -> None:
    """Print ``rows`` as a table, or ``data`` (default: rows as objects) as JSON.

    With ``tz``, every datetime (in rows, or one level deep in ``data``) is shown
    in that zone; a table then names the zone in its title and shows times
    without the offset. Columns named in ``squeeze`` are cut with an ellipsis
    to fit the terminal, so each row stays one line; the others are never cut.
    Piped output is not fitted to a terminal (unless ``$COLUMNS`` says a width).
    """
    if fmt == "json":
        payload = data if data is not None else [dict(zip(columns, row)) for row in rows]
        if tz is not None:
            payload = _in_zone(payload, tz)
        click.echo(json.dumps(payload, indent=2, default=_json_value))
        return
    if tz is not None:
        title = f"{title}, times in {zone_name(tz)}"
    table = Table(title=title, title_justify="left")
    cells = [[_cell(local_time(cell, tz), with_offset=False) if tz else _cell(cell) for cell in row] for row in rows]
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:  # piped: never cut a cell, at most fold one
        console = Console(width=250)
        for column in columns:
            table.add_column(column, overflow="fold")
    else:  # a terminal: one line per row; squeezable columns give way
        natural = [max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)]
        widths = fit_widths(natural, [c in squeeze for c in columns], console.width)
        for column, width in zip(columns, widths):
            table.add_column(column, overflow="ellipsis", no_wrap=True, width=width)
    for row in cells:
        table.add_row(*row)
    console.print(table)


MIN_SQUEEZED = 8  # a squeezed column keeps at least this many characters


def fit_widths(natural: Sequence[int], squeezable: Sequence[bool], total: int) -> list[int]:
    """Column widths for a bordered table ``total`` characters wide.

    Columns that may not be squeezed keep their natural width; the space left
    goes to the squeezable ones in order, each keeping room for the rest
    (at least ``MIN_SQUEEZED`` each). Nothing is cut when everything fits.
    """
    borders = 3 * len(natural) + 1  # "│ " before each cell, " " after, and the closing "│"
    left = total - borders - sum(w for w, s in zip(natural, squeezable) if not s)
    pending = [i for i, s in enumerate(squeezable) if s]
    widths = list(natural)
    for n, index in enumerate(pending):
        rest = len(pending) - n - 1
        widths[index] = max(MIN_SQUEEZED, min(natural[index], left - MIN_SQUEEZED * rest))
        left -= widths[index]
    return widths


def zone_name(tz: tzinfo) -> str:
    """The IANA name of ``tz`` (``Europe/Berlin``), else how it prints (``UTC``)."""
    return str(getattr(tz, "key", None) or tz)


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


def _cell(value: Any, *, with_offset: bool = True) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        shown = value.isoformat(sep=" ", timespec="seconds")
        return shown if with_offset else shown[:19]
    return str(value)
