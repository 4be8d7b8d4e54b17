"""Site commands (owned by the database layer): new-site, migrate, jobs failed|requeue|delete."""

from __future__ import annotations

import sys
from typing import Any

import click

from bgcore.cli import CliState, pass_state
from bgcore.cli.output import FORMAT_OPTION, emit
from bgcore.db import joblog
from bgcore.db.provision import create_site
from bgcore.errors import InvalidArgument
from bgcore.jobs import delete_failed, requeue_failed
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
    """List SITE's failed jobs from its own job log."""
    entries = joblog.failures(state.bench, state.bench.site_config(site), limit=limit)
    columns = ["ended_at", "job_id", "method", "queue", "status", "duration_ms", "exception"]
    rows = [[getattr(e, c) for c in columns] for e in entries]
    data = [dict(e.__dict__, ended_at=str(e.ended_at), started_at=str(e.started_at)) for e in entries]
    emit(fmt, f"Failed jobs of {site} ({len(rows)})", columns, rows, data=data)


def _failed_filters(func: Any) -> Any:
    for option in reversed([
        click.option("--site", required=True, help="The site whose failed jobs are acted on (only its own)."),
        click.option("--job", "job_id", default=None, help="One job, by the id enqueue gave or printed."),
        click.option("--all", "all_jobs", is_flag=True, help="Every failed job of the site (narrow with --method/--queue)."),
        click.option("--method", default=None, help="With --all: only jobs of this dotted method."),
        click.option("--queue", default=None, help="With --all: only this queue."),
    ]):
        func = option(func)
    return func


def _check_filters(job_id: str | None, all_jobs: bool, method: str | None, queue: str | None) -> None:
    if bool(job_id) == all_jobs:
        raise click.UsageError("give either --job ID or --all")
    if job_id and (method or queue):
        raise click.UsageError("--method and --queue go with --all, not with --job")


@jobs.command("requeue")
@_failed_filters
@pass_state
def requeue(state: CliState, site: str, job_id: str | None, all_jobs: bool, method: str | None,
            queue: str | None) -> None:
    """Put SITE's failed jobs back on their queues (same ids and arguments; attempts start again)."""
    _check_filters(job_id, all_jobs, method, queue)
    report = requeue_failed(state.bench, site, job=job_id, method=method, queue=queue)
    if job_id and not report.jobs:
        raise InvalidArgument(f"site {site!r} has no failed job {job_id!r} (see 'bgcore jobs failed --site {site}')")
    click.echo(f"requeued {len(report.jobs)} failed job(s) of site {site}")


@jobs.command("delete")
@_failed_filters
@pass_state
def delete(state: CliState, site: str, job_id: str | None, all_jobs: bool, method: str | None,
           queue: str | None) -> None:
    """Delete SITE's failed jobs from Redis (their job-log rows stay)."""
    _check_filters(job_id, all_jobs, method, queue)
    report = delete_failed(state.bench, site, job=job_id, method=method, queue=queue)
    if job_id and not report.jobs:
        raise InvalidArgument(f"site {site!r} has no failed job {job_id!r} (see 'bgcore jobs failed --site {site}')")
    click.echo(f"deleted {len(report.jobs)} failed job(s) of site {site}")


COMMANDS: list[click.Command] = [new_site, migrate, jobs]
