"""Bench commands: start, doctor, sites."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import click

from bgcore import connection, embedded_redis
from bgcore.bench import Bench
from bgcore.cli import CliState, configure_logging, log_options, main, pass_state
from bgcore.cli.output import FORMAT_OPTION, emit
from bgcore.doctor import HostHealth, SchedulerHealth, diagnose
from bgcore.errors import BgcoreError
from bgcore.start import DASHBOARD_HOST, dashboard_port, run_bench


@click.command()
@click.option("--no-scheduler", is_flag=True, help="Run only Redis and the workers.")
@click.option("--no-dashboard", is_flag=True, help="Do not run the web dashboard.")
@log_options
@pass_state
def start(state: CliState, no_scheduler: bool, no_dashboard: bool, log_level: str | None,
          log_file: str | None) -> None:
    """Run the bench: private Redis (if needed), workers, the scheduler and the dashboard. Ctrl-C stops it."""
    configure_logging(log_level, log_file, verbose=state.verbose)
    for key, value in (("BGCORE_LOG_LEVEL", log_level), ("BGCORE_LOG_FILE", log_file)):
        if value:  # the workers and the scheduler it starts log the same way
            os.environ[key] = os.path.abspath(value) if key == "BGCORE_LOG_FILE" else value
    with_scheduler = not no_scheduler and "schedule" in main.commands
    port = None if no_dashboard else dashboard_port(state.bench)
    stop = threading.Event()
    banner = threading.Thread(target=_banner_when_ready, args=(state.bench, stop, port), daemon=True)
    banner.start()
    try:
        run_bench(state.bench, with_scheduler=with_scheduler, dashboard=port)
    finally:
        stop.set()


def _banner_when_ready(bench: Bench, stop: threading.Event, port: int | None = None) -> None:
    """Print the start banner once the bench's Redis is known (a private one takes a moment to start)."""
    where = connection.describe(bench) if connection.configured(bench) else None
    while not where and not stop.is_set():
        where = embedded_redis.started_url(bench)  # its own, not one a process manager runs
        if not where:
            stop.wait(0.1)
    if where and not stop.is_set():
        click.echo(start_banner(bench, where, port))


def start_banner(bench: Bench, redis_url: str, dashboard_port: int | None = None) -> str:
    """What ``bgcore start`` says once: where its Redis is (``redis_url`` as :func:`connection.describe`
    shows it: no password), the bench id, and what to try next."""
    exe = Path(sys.executable).parent / "bgcore"
    venv = Path(sys.prefix)
    activate = venv / "bin" / "activate"
    how = (f"or first: source {activate}" if activate.exists() else "or put it on PATH")
    return "\n".join([
        f"bgcore start: bench {bench.path} (id {bench.bench_id}), Redis at {connection.redact(redis_url)}",
        *([f"Dashboard: http://{DASHBOARD_HOST}:{dashboard_port}/"] if dashboard_port is not None else []),
        f"In another terminal ({exe}, {how}):",
        f"  {exe} --bench {bench.path} doctor",
        f"  {exe} --bench {bench.path} show-pending-jobs",
        f"  {exe} --bench {bench.path} scheduler events --site all",
        f"  {exe} --bench {bench.path} enqueue METHOD --site SITE",
        "Ctrl-C stops the bench (running jobs finish first).",
    ])


@click.command()
@FORMAT_OPTION
@pass_state
def doctor(state: CliState, fmt: str) -> None:
    """Check Redis, workers and the oldest job per queue, workers by host, the scheduler's leader and standbys, and sites.

    Exits 1, one line per reason, when unhealthy.
    """
    report = diagnose(state.bench)
    if fmt == "json":
        emit(fmt, "", [], [], data=report.as_dict())
    else:
        click.echo(f"bench: {state.bench.path} (id {state.bench.bench_id})")
        click.echo(f"redis: {report.redis_url} -> {'OK' if report.redis_ok else 'UNREACHABLE: ' + report.redis_error}")
        if report.redis_ok:
            rows = [(q.name, q.workers, q.queued, q.started, q.failed, q.oldest_enqueued_at) for q in report.queues]
            emit(fmt, "Queues", ["queue", "workers", "queued", "running", "failed", "oldest_job"], rows)
            _print_hosts(fmt, report.hosts)
        if report.scheduler is not None:
            for line in _scheduler_lines(report.scheduler):
                click.echo(line)
        for problem in report.problems:
            click.secho(f"problem: {problem}", fg="yellow")
    if not report.healthy:
        raise SystemExit(1)


def _print_hosts(fmt: str, hosts: list[HostHealth]) -> None:
    """Doctor's hosts table (live and gone workers, queues, scheduler roles), then one line per gone worker."""
    if not hosts:
        return
    rows = [(h.host, h.state, h.live, h.gone, ",".join(h.queues), ", ".join(h.scheduler)) for h in hosts]
    emit(fmt, "Hosts", ["host", "state", "workers", "gone", "queues", "scheduler"], rows)
    for host in hosts:
        for worker in host.workers:
            if worker.state == "gone":
                click.echo(f"gone: worker {worker.name} on {host.host}: {worker.why}")


def _scheduler_lines(found: SchedulerHealth) -> list[str]:
    """The scheduler part of doctor's text report: leader and last tick, then the standbys."""
    tick = found.last_tick.isoformat(sep=" ", timespec="seconds") if found.last_tick else "not yet"
    lead = f"leader {found.leader}, last tick {tick}" if found.leader else "no leader"
    standbys = ", ".join(found.standbys) or "none"
    return [f"scheduler: {lead}", f"scheduler standbys: {standbys}"]


@click.command()
@FORMAT_OPTION
@pass_state
def sites(state: CliState, fmt: str) -> None:
    """List the sites of the bench and whether their config loads."""
    rows: list[tuple[str, list[str], str]] = []
    for name in state.bench.site_names():
        try:
            config = state.bench.site_config(name)
            rows.append((name, list(config.installed_apps), "ok"))
        except BgcoreError as exc:  # one broken site is shown, never stops the listing
            rows.append((name, [], f"ERROR: {exc}"))
    columns = ["site", "installed_apps", "config"]
    emit(fmt, f"Sites ({len(rows)})", columns, [(n, ", ".join(apps), c) for n, apps, c in rows],
         data=[dict(zip(columns, row)) for row in rows])


COMMANDS = [start, doctor, sites]
