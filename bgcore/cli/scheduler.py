"""Scheduler commands: schedule, scheduler enable|disable|pause|resume|status|events,
set-maintenance-mode, trigger-scheduler-event."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import datetime, timezone
from typing import Any

import click

from bgcore.cli import CliState, pass_state
from bgcore.cli.output import FORMAT_OPTION, emit
from bgcore.errors import BgcoreError
from bgcore.scheduler.daemon import run_scheduler
from bgcore.scheduler.status import SiteStatus, event_status, site_status, sites_of, trigger_event
from bgcore.scheduler.switches import Switch, set_switch

SITE_OPTION = click.option("--site", required=True, help="A site name, or 'all' for every site of the bench.")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@click.command("schedule")
@pass_state
def schedule_cmd(state: CliState) -> None:
    """Run the scheduler daemon for every site of the bench (one leads; others stand by)."""
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    run_scheduler(state.bench, stop)


@click.group("scheduler")
def scheduler() -> None:
    """Per-site scheduler switches and what the scheduler does."""


def _switch(state: CliState, site: str, switch: Switch, on: bool, done: str) -> None:
    """Set ``switch`` on every site named; a broken site is reported and skipped, then exit 1 at the end."""
    failed = []
    for name in sites_of(state.bench, site):
        try:
            set_switch(state.bench, name, switch, on)
        except BgcoreError as exc:
            failed.append(name)
            click.secho(f"Error: {exc}", fg="red", err=True)
            continue
        click.echo(f"{done} for site {name}")
    if failed and site == "all":
        click.secho(f"Error: {switch.value} not changed for {len(failed)} site(s): {', '.join(failed)}; "
                    "fix them and run the command again", fg="red", err=True)
    if failed:
        sys.exit(1)


@scheduler.command("enable")
@SITE_OPTION
@pass_state
def enable(state: CliState, site: str) -> None:
    """Let the scheduler run SITE's events (clears scheduler_disabled)."""
    _switch(state, site, Switch.DISABLED, False, "scheduler enabled")


@scheduler.command("disable")
@SITE_OPTION
@pass_state
def disable(state: CliState, site: str) -> None:
    """Stop the scheduler for SITE (sets scheduler_disabled)."""
    _switch(state, site, Switch.DISABLED, True, "scheduler disabled")


@scheduler.command("pause")
@SITE_OPTION
@pass_state
def pause(state: CliState, site: str) -> None:
    """Hold SITE's events for now (sets pause_scheduler)."""
    _switch(state, site, Switch.PAUSED, True, "scheduler paused")


@scheduler.command("resume")
@SITE_OPTION
@pass_state
def resume(state: CliState, site: str) -> None:
    """Release a pause of SITE (clears pause_scheduler)."""
    _switch(state, site, Switch.PAUSED, False, "scheduler resumed")


@scheduler.command("status")
@SITE_OPTION
@FORMAT_OPTION
@pass_state
def status(state: CliState, site: str, fmt: str) -> None:
    """Whether the scheduler runs SITE's events, which switch (or error) stops it, and who leads."""
    found = site_status(state.bench, sites_of(state.bench, site))
    columns = ["site", "scheduler", "stopped_by", "daemon", "leader"]
    rows = [(s.site, _scheduler_state(s), s.stopped_by or "",
             "running" if s.daemon_running else "not running", s.leader or "") for s in found]
    emit(fmt, "Scheduler status", columns, rows, data=[s.__dict__ for s in found])


@scheduler.command("events")
@click.option("--site", required=True, help="The site whose scheduled events are listed.")
@FORMAT_OPTION
@pass_state
def events(state: CliState, site: str, fmt: str) -> None:
    """List SITE's scheduled events with their last run, next run and last status."""
    found = event_status(state.bench, site, _now())
    columns = ["method", "frequency", "cron", "queue", "last_run", "next_run", "last_status", "last_error", "event_id"]
    rows = [[getattr(e, c) for c in columns] for e in found]
    rows = [row[:7] + [_first_line(row[7])] + row[8:] for row in rows]
    emit(fmt, f"Scheduled events of {site} ({len(rows)})", columns, rows,
         data=[dict(e.__dict__) for e in found])


def _scheduler_state(found: SiteStatus) -> str:
    if found.error:
        return f"error: {found.error}"
    return "active" if found.active else "stopped"


def _first_line(text: object) -> object:
    return str(text).strip().splitlines()[-1][:80] if text else text


@click.command("set-maintenance-mode")
@click.argument("mode", type=click.Choice(["on", "off"]))
@SITE_OPTION
@pass_state
def set_maintenance_mode(state: CliState, mode: str, site: str) -> None:
    """Turn maintenance mode on or off for SITE (it stops the scheduler first of all switches)."""
    _switch(state, site, Switch.MAINTENANCE, mode == "on", f"maintenance mode {mode}")


@click.command("trigger-scheduler-event")
@click.argument("method")
@click.option("--site", required=True, help="The site to run the event in.")
@pass_state
def trigger_scheduler_event(state: CliState, method: str, site: str) -> None:
    """Enqueue one run of the scheduled event METHOD of SITE now (logged like a scheduled run).

    METHOD is a method path, or an event id (see 'bgcore scheduler events') when
    the method is registered under several frequencies.
    """
    job = trigger_event(state.bench, site, method, _now())
    click.echo(f"enqueued {job.id} for site {site}")


COMMANDS: list[click.Command] = [schedule_cmd, scheduler, set_maintenance_mode, trigger_scheduler_event]
