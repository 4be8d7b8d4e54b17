"""``bgcore config check`` and ``bgcore config show``: the bench's config against the one schema."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict

import click

from bgcore.cli import BgcoreGroup, CliState, pass_state
from bgcore.cli.output import FORMAT_OPTION, emit
from bgcore.config_report import check_bench, effective


@click.group(cls=BgcoreGroup)
def config() -> None:
    """Check the bench's config files, or show a site's effective config."""


@config.command()
@FORMAT_OPTION
@pass_state
def check(state: CliState, fmt: str) -> None:
    """Check every config file of the bench; one line per problem; exit 1 on errors (warnings alone: 0)."""
    quiet = logging.getLogger("bgcore.config_schema")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its typo warnings are printed below, once, with the rest
    try:
        problems, files = check_bench(state.bench)
    finally:
        quiet.setLevel(level)
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    if fmt == "json":
        click.echo(json.dumps({"ok": errors == 0, "errors": errors, "warnings": warnings, "files": files,
                               "problems": [asdict(p) for p in problems]}, indent=2))
    else:
        for problem in problems:
            click.echo(f"{problem.level}: {problem.message}")
        click.echo(f"{len(files)} file(s) checked: {errors} error(s), {warnings} warning(s)")
    if errors:
        sys.exit(1)


@config.command()
@click.option("--site", help="The site whose effective config to show (default: the bench's keys).")
@FORMAT_OPTION
@pass_state
def show(state: CliState, site: str | None, fmt: str) -> None:
    """Each key's effective value and where it came from (default, common_site_config.json, site_config.json).

    Passwords are masked.
    """
    found = effective(state.bench, site)
    title = f"Config of site {site}" if site else f"Config of bench {state.bench.path}"
    rows = [(e.key, _cell(e.value), e.source, e.error or "") for e in found]
    emit(fmt, title, ["key", "value", "source", "error"], rows, data=[asdict(e) for e in found],
         squeeze=["value", "error"])


def _cell(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


COMMANDS = [config]
