"""Scheduler commands: schedule, scheduler enable|disable|pause|resume|status|events,
set-maintenance-mode, trigger-scheduler-event."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import click

from bgcore import keys
from bgcore.bench import ALL_SITES
from bgcore.cli import CliState, pass_state
from bgcore.clock import utcnow
from bgcore.cli.output import FORMAT_OPTION, WIDE_OPTION, emit, site_zone
from bgcore.connection import refuse_misconfigured
from bgcore.scheduler.daemon import run_scheduler
from bgcore.errors import BgcoreError, InvalidArgument
from bgcore.scheduler.status import (
    SiteStatus, control_event, event_status, has_event, run_event_now, site_status, sites_of, trigger_event)
from bgcore.scheduler.switches import Switch, blocking_switch, set_switch

SITE_OPTION = click.option("--site", required=True, help="A site name, or 'all' for every site of the bench.")


_now = utcnow


@click.command("schedule")
@pass_state
def schedule_cmd(state: CliState) -> None:
    """Run the scheduler daemon for every site of the bench (one leads; others stand by)."""
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    refuse_misconfigured(state.bench)  # a refused password is exit 1; a Redis that is down is waited for
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
@click.option("--site", required=True, help="The site whose scheduled events are listed, or 'all'.")
@WIDE_OPTION
@FORMAT_OPTION
@pass_state
def events(state: CliState, site: str, wide: bool, fmt: str) -> None:
    """List SITE's scheduled events with their next run and last status (--wide: everything)."""
    now = _now()
    found = [(name, e) for name in sites_of(state.bench, site) for e in event_status(state.bench, name, now)]
    title = f"Scheduled events of {'every site' if site == ALL_SITES else site} ({len(found)})"
    if fmt == "json":
        emit(fmt, title, [], [], data=[{"site": name, **e.__dict__} for name, e in found])
        return
    columns = ["method", "when", "next_run", "last_status"]
    if wide:
        columns += ["last_run", "queue", "last_error", "event_id"]
    if site == ALL_SITES:
        columns.insert(0, "site")

    def cell(name: str, event: Any, column: str) -> object:
        if column == "site":
            return name
        if column == "when":  # the cron expression is what matters for cron keys
            if event.cron_override:
                return f"{event.cron_override} (site)"
            return event.cron if event.frequency.startswith("cron") else event.frequency
        if column == "last_status" and event.stopped:
            return "stopped"
        if column == "last_error":
            return _first_line(event.last_error)
        return getattr(event, column)  # times are in the event's site's zone already

    rows = [[cell(name, e, c) for c in columns] for name, e in found]
    zone = None if site == ALL_SITES else site_zone(state.bench, site)
    emit(fmt, title, columns, rows, tz=zone, squeeze=("method", "last_error"))


@scheduler.group("event")
def event_group() -> None:
    """Per-site control of one scheduled event: stop, start, or override its cron expression."""


def _control(state: CliState, site: str, method: str, verb: str, **change: Any) -> None:
    for name in sites_of(state.bench, site):
        event = control_event(state.bench, name, method, **change)
        click.echo(f"event {event.method} ({event.event_id}) {verb} for site {name}")


@event_group.command("stop")
@click.argument("method")
@SITE_OPTION
@pass_state
def event_stop(state: CliState, method: str, site: str) -> None:
    """Stop METHOD's scheduled runs on SITE (kept across migrate; the daemon obeys without a restart)."""
    _control(state, site, method, "stopped", stopped=True)


@event_group.command("start")
@click.argument("method")
@SITE_OPTION
@pass_state
def event_start(state: CliState, method: str, site: str) -> None:
    """Start METHOD's scheduled runs on SITE again."""
    _control(state, site, method, "started", stopped=False)


@event_group.command("set")
@click.argument("method")
@click.option("--cron", default=None, metavar="EXPR", help="A cron expression or alias for this site only.")
@click.option("--reset", is_flag=True, help="Drop the site's override: follow hooks.py again.")
@SITE_OPTION
@pass_state
def event_set(state: CliState, method: str, cron: str | None, reset: bool, site: str) -> None:
    """Override how often METHOD runs on SITE (--cron "*/5 * * * *"), or --reset to the hooks' frequency."""
    if (cron is None) == (not reset):
        raise click.UsageError("give either --cron EXPR or --reset")
    verb = "follows hooks.py again" if reset else f"runs at {cron!r}"
    _control(state, site, method, verb, cron=cron, reset_cron=reset)


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
@click.option("--site", required=True, help="The site to run the event in, or 'all' for every site that has it.")
@click.option("--job-name", default=None, help="A name shown in listings. Default: the method.")
@click.option("--now", "inline", is_flag=True, help="Run the event's method here, in the site, and print its result.")
@click.option("--force", is_flag=True, help="Run even on a site whose scheduler a switch stops (maintenance, ...).")
@FORMAT_OPTION
@pass_state
def trigger_scheduler_event(state: CliState, method: str, site: str, job_name: str | None, inline: bool,
                            force: bool, fmt: str) -> None:
    """Enqueue one run of the scheduled event METHOD of SITE now (logged like a scheduled run).

    METHOD is a method path, or an event id (see 'bgcore scheduler events') when
    the method is registered under several frequencies. A site in maintenance,
    paused or with its scheduler disabled is skipped with a warning unless --force.
    """
    names = sites_of(state.bench, site)
    done: list[dict[str, Any]] = []
    refused: list[str] = []
    for name in names:
        if site == ALL_SITES and not has_event(state.bench, name, method):
            click.echo(f"note: site {name} has no scheduled event {method!r}; skipped", err=True)
            continue
        switch = blocking_switch(state.bench.site_config(name))
        if switch is not None:
            verdict = "running it anyway (--force)" if force else "not run; add --force to run it anyway"
            click.secho(f"warning: site {name!r} has {switch.value} on, so its scheduler does not run it; "
                        f"{verdict}", fg="yellow", err=True)
            if not force:
                refused.append(name)
                continue
        if inline:
            done.append({"site": name, "method": method, "result": run_event_now(state.bench, name, method)})
        else:
            job = trigger_event(state.bench, name, method, _now(), job_name=job_name)
            done.append({"site": name, "job_id": keys.local_job_id(job.id), "queue": keys.queue_of(state.bench.bench_id, job.origin),
                         "method": method})
    if site == ALL_SITES and not done and not refused:
        raise InvalidArgument(f"no site of the bench has a scheduled event {method!r}; "
                              "'bgcore scheduler events --site all' lists them")
    if fmt == "json":
        emit(fmt, "", [], [], data=done)
    else:
        for row in done:
            if inline:
                click.echo(f"ran {method} in site {row['site']}: {json.dumps(row['result'], default=str)}")
            else:
                click.echo(f"enqueued {row['job_id']} for site {row['site']}")
    if refused:
        sys.exit(1)


COMMANDS: list[click.Command] = [schedule_cmd, scheduler, set_maintenance_mode, trigger_scheduler_event]
