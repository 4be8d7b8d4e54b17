"""Site commands: init, new-site, install-app, uninstall-app, drop-site, migrate, jobs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from bgcore.bench import ALL_SITES
from bgcore.cli import CliState, pass_state
from bgcore import keys
from bgcore.cli.output import FORMAT_OPTION, WIDE_OPTION, emit, local_time, site_zone
from bgcore.clock import utcnow
from bgcore.config import COMMON_CONFIG
from bgcore.db import joblog
from bgcore.errors import InvalidArgument
from bgcore.job_records import STATUSES, list_jobs, show_job
from bgcore.retention import clear_failed, parse_duration
from bgcore.site_admin import drop_site, init_bench, install_app, uninstall_app
from bgcore.jobs import DOC_METHOD, job_names
from bgcore.db.provision import create_site
from bgcore.jobs import delete_failed, requeue_failed
from bgcore.migrate import MigrateReport, grouped_failures, migrate_bench


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create a bench in DIRECTORY: sites/, sites/common_site_config.json and an apps/ folder."""
    path = init_bench(directory)
    click.echo(f"created bench {path} (sites/, sites/{COMMON_CONFIG}, apps/); next: "
               f"bgcore --bench {path} new-site NAME")


@click.command("new-site")
@click.argument("name")
@click.option("--db-url", default=None, metavar="URL",
              help="The site's database (PostgreSQL or MariaDB URL). Default: a SQLite file in the site directory.")
@click.option("--create-db", is_flag=True, help="Create the --db-url database on its server if it is missing.")
@click.option("--db-root-url", default=None, metavar="URL",
              help="With --create-db: a URL with the right to create databases (default: --db-url's user).")
@click.option("--install-app", "apps", multiple=True, metavar="APP", help="An app to install (repeatable).")
@pass_state
def new_site(state: CliState, name: str, db_url: str | None, create_db: bool, db_root_url: str | None,
             apps: tuple[str, ...]) -> None:
    """Create site NAME: its directory, site_config.json and database schema."""
    if (create_db or db_root_url) and db_url is None:
        raise click.UsageError("--create-db and --db-root-url need --db-url (SQLite files are created anyway)")
    report = create_site(state.bench, name, db_url=db_url, install_apps=apps, create_db=create_db,
                         db_root_url=db_root_url)
    click.echo(f"created site {name}")
    click.echo(report.summary())


@click.command("install-app")
@click.argument("app")
@click.option("--site", required=True, help="The site to install APP on, or 'all'.")
@pass_state
def install_app_cmd(state: CliState, app: str, site: str) -> None:
    """Install APP on SITE (it must import and have a hooks.py), then migrate the site."""
    for name in state.bench.sites_named(site):
        click.echo(install_app(state.bench, name, app).summary())


@click.command("uninstall-app")
@click.argument("app")
@click.option("--site", required=True, help="The site to remove APP from, or 'all'.")
@pass_state
def uninstall_app_cmd(state: CliState, app: str, site: str) -> None:
    """Remove APP from SITE's installed_apps, then migrate the site (its events leave the registry)."""
    for name in state.bench.sites_named(site):
        click.echo(uninstall_app(state.bench, name, app).summary())


@click.command("drop-site")
@click.argument("name")
@click.option("--drop-db", is_flag=True, help="Also drop its PostgreSQL/MariaDB database.")
@click.option("--db-root-url", default=None, metavar="URL", help="With --drop-db: a URL allowed to drop it.")
@click.option("--yes", is_flag=True, help="Confirm: the site's jobs, state and directory are removed for good.")
@pass_state
def drop_site_cmd(state: CliState, name: str, drop_db: bool, db_root_url: str | None, yes: bool) -> None:
    """Remove site NAME: queued and scheduled jobs, Redis keys, scheduler state, directory (and database)."""
    if name == ALL_SITES:
        raise click.UsageError("drop-site removes one site at a time; name it")
    if not yes:
        raise click.UsageError(f"drop-site removes site {name!r} for good; add --yes to confirm")
    report = drop_site(state.bench, name, drop_db=drop_db, db_root_url=db_root_url)
    dropped = ", its database" if report.database_dropped else ""
    click.echo(f"dropped site {name}: {report.queued_jobs} queued job(s), {report.redis_keys} Redis key(s), "
               f"its directory{dropped}")


@click.command("migrate")
@click.option("--site", "sites", multiple=True, help="Only this site (repeatable), or 'all'. Default: every site.")
@FORMAT_OPTION
@pass_state
def migrate(state: CliState, sites: tuple[str, ...], fmt: str) -> None:
    """Bring each site's database up to date (safe to run again)."""
    chosen = None if not sites or ALL_SITES in sites else list(sites)
    reports = migrate_bench(state.bench, chosen)
    failed = [r.site for r in reports if not r.ok]
    if fmt == "json":
        emit(fmt, "", [], [], data=[_report_data(r) for r in reports])
    else:
        for report in reports:
            if report.ok:
                click.echo(report.summary())
        for names, error in grouped_failures(reports):
            where = names[0] if len(names) == 1 else f"{len(names)} sites ({', '.join(names)})"
            click.secho(f"{where}: FAILED: {error}", fg="red", err=True)
        if failed:
            click.secho(f"migrate failed for {len(failed)} site(s): {', '.join(failed)}", fg="red", err=True)
    if failed:
        sys.exit(1)


def _report_data(report: MigrateReport) -> dict[str, Any]:
    """One site's migrate report for ``--format json``."""
    return {"site": report.site, "ok": report.ok, "error": report.error, "created_tables": report.created_tables,
            "added_columns": report.added_columns, "widened_columns": report.widened_columns,
            "steps": report.steps, "registry_changed": report.registry_changed}


@click.group("jobs")
def jobs() -> None:
    """Per-site job records."""


@jobs.command("failed")
@click.option("--site", required=True, help="The site whose failed jobs are listed (only its own), or 'all'.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many, newest first.")
@WIDE_OPTION
@FORMAT_OPTION
@pass_state
def failed(state: CliState, site: str, limit: int, wide: bool, fmt: str) -> None:
    """List SITE's failed jobs from its own job log (times in the site's time_zone)."""
    names = state.bench.sites_named(site)
    found = [(name, entry) for name in names
             for entry in joblog.failures(state.bench, state.bench.site_config(name), limit=limit)]
    found.sort(key=lambda pair: pair[1].ended_at, reverse=True)
    found = found[:limit]
    zones = {name: site_zone(state.bench, name) for name in names}
    labels = job_names(state.bench, [e.job_id for _, e in found if e.method == DOC_METHOD])
    title = f"Failed jobs of {'every site' if site == ALL_SITES else site} ({len(found)})"
    if fmt == "json":
        emit(fmt, title, [], [], data=[
            {"site": n, **{k: local_time(v, zones[n]) for k, v in e.__dict__.items()},
             "job_id": keys.local_job_id(e.job_id), "job": labels.get(e.job_id) or e.method} for n, e in found])
        return
    columns = ["ended_at", "job", "status", "exception"]
    if wide:
        columns += ["job_id", "queue", "duration_ms", "method"]
    if site == ALL_SITES:
        columns.insert(1, "site")

    def cell(name: str, entry: joblog.JobLogEntry, column: str) -> object:
        if column == "site":
            return name
        if column == "job":
            return labels.get(entry.job_id) or entry.method
        if column == "job_id":
            return keys.local_job_id(entry.job_id)
        if column == "exception":
            return _last_line(entry.exception)
        if column == "ended_at" and site == ALL_SITES:
            return local_time(entry.ended_at, zones[name])
        return getattr(entry, column)

    rows = [[cell(n, e, c) for c in columns] for n, e in found]
    emit(fmt, title, columns, rows, tz=None if site == ALL_SITES else zones[site],
         squeeze=("job", "exception", "method"))


@jobs.command("list")
@click.option("--site", required=True, help="The site whose jobs are listed.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(list(STATUSES)),
              help="Only jobs in this status (repeatable). Default: every status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, help="At most this many, newest first.")
@WIDE_OPTION
@FORMAT_OPTION
@pass_state
def list_cmd(state: CliState, site: str, statuses: tuple[str, ...], limit: int, wide: bool, fmt: str) -> None:
    """List SITE's jobs, successful runs too: what Redis still holds and what its job log recorded."""
    found = list_jobs(state.bench, site, statuses, limit)
    tz = site_zone(state.bench, site)
    if fmt == "json":
        emit(fmt, "", [], [], data=[r.__dict__ for r in found], tz=tz)
        return
    columns = ["when", "job", "status", "duration_ms"] + (["job_id", "queue", "worker"] if wide else [])
    rows = [[r.ended_at or r.started_at or r.enqueued_at, r.job, r.status, r.duration_ms]
            + ([r.job_id, r.queue, r.worker] if wide else []) for r in found]
    emit(fmt, f"Jobs of {site} ({len(rows)})", columns, rows, tz=tz, squeeze=("job", "worker"))


@jobs.command("show")
@click.argument("job_id")
@click.option("--site", required=True, help="The site of the job.")
@FORMAT_OPTION
@pass_state
def show_cmd(state: CliState, job_id: str, site: str, fmt: str) -> None:
    """Show one job of SITE: status, timings, arguments, worker and traceback."""
    record = show_job(state.bench, site, job_id)
    if record is None:
        raise InvalidArgument(f"site {site!r} has no job {job_id!r} in Redis or in its job log "
                              f"('bgcore jobs list --site {site}' lists what there is)")
    tz = site_zone(state.bench, site)
    if fmt == "json":
        emit(fmt, "", [], [], data=record.__dict__, tz=tz)
        return
    for key, value in record.__dict__.items():
        if key in ("traceback",) or value is None:
            continue
        shown = local_time(value, tz)
        if key == "kwargs":
            shown = json.dumps(value, default=str)
        elif hasattr(shown, "isoformat"):
            shown = shown.isoformat(sep=" ", timespec="milliseconds")
        click.echo(f"{key:12} {shown}")
    if record.traceback:
        click.echo("traceback:")
        click.echo(record.traceback.rstrip())


@jobs.command("clear-failed")
@click.option("--site", required=True, help="The site whose failed jobs are removed, or 'all'.")
@click.option("--older-than", default=None, metavar="DURATION",
              help="Only failures older than this (90s, 15m, 12h, 7d, 2w). Default: all of them.")
@pass_state
def clear_failed_cmd(state: CliState, site: str, older_than: str | None) -> None:
    """Remove SITE's failed jobs: its job-log rows and their records in Redis."""
    age = None
    if older_than is not None:
        try:
            age = parse_duration(older_than)
        except ValueError:
            raise click.BadParameter(f"{older_than!r} is not a duration like 90s, 15m, 12h, 7d or 2w",
                                     param_hint="--older-than") from None
    for name in state.bench.sites_named(site):
        report = clear_failed(state.bench, name, utcnow(), age)
        click.echo(f"cleared {report.log_rows} job-log row(s) and {report.redis_jobs} failed job(s) in Redis "
                   f"of site {name}")


def _last_line(text: str | None) -> str | None:
    return text.strip().splitlines()[-1] if text and text.strip() else text


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


COMMANDS: list[click.Command] = [init, new_site, install_app_cmd, uninstall_app_cmd, drop_site_cmd, migrate, jobs]
