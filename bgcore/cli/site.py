"""Site commands (owned by the database layer): new-site, migrate, jobs failed."""

from __future__ import annotations

import sys

import click

from bgcore.cli import CliState, pass_state
from bgcore.cli.output import FORMAT_OPTION, emit, site_zone
from bgcore.db import joblog
from bgcore.db.provision import create_site
from bgcore.migrate import migrate_bench


@click.command("new-site")
@click.argument("name")
@click.option("--db-url", default=None, metavar="URL",
              help="The site's database (PostgreSQL or MariaDB URL). Default: a SQLite file in the site directory.")
@click.option("--install-app", "apps", multiple=True, metavar="APP", help="An app to install (repeatable).")
@pass_state
def new_site(state: CliState, name: str, db_url: str | None, apps: tuple[str, ...]) -> None:
    """Create site NAME: its directory, site_config.json and database schema."""
    report = create_site(state.bench, name, db_url=db_url, install_apps=apps)
    click.echo(f"created site {name}")
    click.echo(report.summary())


@click.command("migrate")
@click.option("--site", "sites", multiple=True, help="Only this site (repeatable). Default: every site.")
@pass_state
def migrate(state: CliState, sites: tuple[str, ...]) -> None:
    """Bring each site's database up to date (safe to run again)."""
    reports = migrate_bench(state.bench, list(sites) or None)
    for report in reports:
        click.secho(report.summary(), fg=None if report.ok else "red", err=not report.ok)
    failed = [r.site for r in reports if not r.ok]
    if failed:
        click.secho(f"migrate failed for {len(failed)} site(s): {', '.join(failed)}", fg="red", err=True)
        sys.exit(1)


@click.group("jobs")
def jobs() -> None:
    """Per-site job records."""


@jobs.command("failed")
@click.option("--site", required=True, help="The site whose failed jobs are listed (only its own).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many, newest first.")
@FORMAT_OPTION
@pass_state
def failed(state: CliState, site: str, limit: int, fmt: str) -> None:
    """List SITE's failed jobs from its own job log (times in the site's time_zone)."""
    entries = joblog.failures(state.bench, state.bench.site_config(site), limit=limit)
    columns = ["ended_at", "job_id", "method", "queue", "status", "duration_ms", "exception"]
    rows = [[getattr(e, c) for c in columns] for e in entries]
    emit(fmt, f"Failed jobs of {site} ({len(rows)})", columns, rows, data=[dict(e.__dict__) for e in entries],
         tz=site_zone(state.bench, site))


COMMANDS: list[click.Command] = [new_site, migrate, jobs]
