"""What the scheduler is doing, for people: per-site switch status and per-event runs.

Read-only views for ``bgcore scheduler status`` and ``bgcore scheduler
events``, plus :func:`trigger_event` for ``bgcore trigger-scheduler-event``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from rq.job import Job
from sqlalchemy.exc import SQLAlchemyError

from bgcore import keys
from bgcore.bench import Bench, SiteConfig
from bgcore.context import site_context
from bgcore.enqueue import enqueue
from bgcore.errors import BgcoreError, InvalidArgument
from bgcore.scheduler.due import next_run, zone
from bgcore.scheduler.lease import current_holder
from bgcore.scheduler.loader import read_registry, tick_interval
from bgcore.scheduler.switches import blocking_switch

UTC = timezone.utc


@dataclass(frozen=True)
class SiteStatus:
    """Whether the scheduler runs a site's events; if not, the switch that stops it or the error.

    ``error`` is why the daemon refuses the site (bad ``scheduler_tick_interval``
    or ``time_zone``, not migrated, database down): found in the site's config
    here, else as the daemon published it on its last load of the site.
    """

    site: str
    active: bool
    stopped_by: str | None
    daemon_running: bool
    leader: str | None
    error: str | None = None


@dataclass(frozen=True)
class EventStatus:
    """One registered event of a site with its last and next run."""

    event_id: str
    app: str
    method: str
    frequency: str
    cron: str | None
    queue: str
    last_run: datetime | None
    next_run: datetime | None
    last_status: str | None
    last_error: str | None = None
    stopped: bool = False
    cron_override: str | None = None


def sites_of(bench: Bench, site: str) -> list[str]:
    """``--site`` as a list: every site for ``all``, else the one named (checked); see :meth:`Bench.sites_named`."""
    return bench.sites_named(site)


def config_error(config: SiteConfig) -> str | None:
    """What in the site's config makes the daemon refuse the site, or None."""
    try:
        tick_interval(config)
        config.setting("time_zone")
    except BgcoreError as exc:
        return str(exc) if config.name in str(exc) else f"site {config.name!r}: {exc}"
    return None


def site_status(bench: Bench, sites: list[str]) -> list[SiteStatus]:
    """The switch status (or load error) of each site and who leads the bench's scheduler.

    A site whose config cannot be read is reported with that error; it never hides the others.
    """
    redis = bench.redis()
    leader = current_holder(redis, bench.bench_id)
    published = redis.hmget(keys.scheduler_site_errors(bench.bench_id), sites) if sites else []
    found = []
    for site, loaded in zip(sites, published):
        try:
            config = bench.site_config(site)
            switch = blocking_switch(config)  # a switch that is neither on nor off is that site's error
        except BgcoreError as exc:  # a broken site is one row; the other sites are still shown
            found.append(SiteStatus(site=site, active=False, stopped_by=None, daemon_running=leader is not None,
                                    leader=leader, error=str(exc)))
            continue
        error = None if switch else (config_error(config) or _text(loaded))
        found.append(SiteStatus(site=site, active=switch is None and error is None,
                                stopped_by=switch.value if switch else None,
                                daemon_running=leader is not None, leader=leader, error=error))
    return found


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def last_logged(bench: Bench, config: SiteConfig) -> dict[str, tuple[str, str | None]]:
    """Event id -> (status, exception) of its newest row in the site's job log."""
    from bgcore.db.engines import database_for
    from bgcore.db.schema import job_log

    newest = sa.select(sa.func.max(job_log.c.id)).where(job_log.c.event.is_not(None)).group_by(job_log.c.event)
    query = sa.select(job_log.c.event, job_log.c.status, job_log.c.exception).where(job_log.c.id.in_(newest))
    database = database_for(bench, config)
    try:
        with database.connect() as connection:
            return {row.event: (row.status, row.exception) for row in connection.execute(query)}
    except SQLAlchemyError as exc:
        raise database.unavailable(exc) from exc


def event_status(bench: Bench, site: str, now: datetime) -> list[EventStatus]:
    """Every registered event of ``site``: last run, next run, last status and error.

    The last run comes from Redis (what the daemon enqueued), else the
    registry; the status is the live RQ status while a run is queued or
    running, else that of the event's newest job-log row. Times are in the
    site's ``time_zone`` (aware, so they print with their offset).
    """
    config = bench.site_config(site)
    events, _ = read_registry(bench, config)
    logged = last_logged(bench, config)
    tz = str(config.setting("time_zone"))
    local = zone(tz)
    interval = tick_interval(config)
    redis = bench.redis()
    last_runs = redis.hgetall(keys.scheduler_last_run(bench.bench_id, site))
    last_jobs = {k.decode(): v.decode() for k, v in redis.hgetall(keys.scheduler_last_job(bench.bench_id, site)).items()}
    ids = [job_id for job_id in (last_jobs.get(e.event_id) for e in events) if job_id]
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(Job.key_for(job_id), "status")
        by_job = {job_id: _text(s) for job_id, s in zip(ids, pipe.execute())}
    statuses = [by_job.get(last_jobs.get(e.event_id, "")) for e in events]
    rows = []
    for event, status in zip(events, statuses):
        stored = last_runs.get(event.event_id.encode())
        last = datetime.fromtimestamp(float(stored), UTC) if stored else event.last_execution
        if last is not None and last <= event.registered_at:
            last = None  # the seed the daemon wrote at registration: never ran yet
        base = last or event.registered_at
        if event.effective_cron:
            upcoming = next_run(event.effective_cron, base, tz)
        else:
            upcoming = base + timedelta(seconds=interval)
        log_status, log_error = logged.get(event.event_id, (None, None))
        live = status if status in ("queued", "started", "deferred", "scheduled") else None
        rows.append(EventStatus(
            event_id=event.event_id, app=event.app, method=event.method, frequency=event.frequency,
            cron=event.cron, queue=event.queue, last_run=last.astimezone(local) if last else None,
            next_run=None if event.stopped else max(upcoming, now).astimezone(local),
            last_status=live or log_status or status or event.last_status,
            last_error=None if live else (log_error or event.last_error),
            stopped=event.stopped, cron_override=event.cron_override,
        ))
    return rows


def _frequency(event: Any) -> str:
    """``hourly``, ``all`` ... or, for a cron event, ``cron '*/5 * * * *'``."""
    return f"{event.frequency} {event.cron!r}" if event.frequency.startswith("cron") else str(event.frequency)


def find_event(bench: Bench, site: str, method: str) -> Any:
    """The registered event ``method`` (a method path or an event id) of ``site``.

    :class:`InvalidArgument` when there is none (with a "did you mean") or when
    the method is registered under several events (listing their event ids).
    """
    events, _ = read_registry(bench, bench.site_config(site))
    matches = [e for e in events if e.event_id == method] or [e for e in events if e.method == method]
    if not matches:
        known = sorted({e.method for e in events})
        hint = difflib.get_close_matches(method, known, n=1)
        did_you_mean = f"; did you mean {hint[0]}?" if hint else ""
        raise InvalidArgument(
            f"site {site!r} has no scheduled event {method!r}{did_you_mean} (registered: {', '.join(known) or 'none'}; "
            f"after editing hooks.py run 'bgcore migrate --site {site}')"
        )
    if len(matches) > 1:
        listed = "; ".join(f"{e.event_id} ({_frequency(e)})" for e in matches)
        raise InvalidArgument(
            f"site {site!r}: {method} is registered under {len(matches)} events: {listed}; "
            "pass the event id of the one to run instead of the method"
        )
    return matches[0]


def has_event(bench: Bench, site: str, method: str) -> bool:
    """Whether ``site`` registers an event ``method`` (a method path or an event id), ambiguous or not."""
    events, _ = read_registry(bench, bench.site_config(site))
    return any(method in (e.event_id, e.method) for e in events)


def trigger_event(bench: Bench, site: str, method: str, now: datetime, *, job_name: str | None = None) -> Any:
    """Enqueue one run of the registered event ``method`` (a method path or an event id) of ``site`` now.

    A method registered under several events is ambiguous: :class:`InvalidArgument`
    lists their event ids and frequencies. The run is logged like a scheduled one
    and becomes the event's last job (so the daemon does not queue the event again
    while it is queued or running); it does not move the event's schedule.
    ``job_name`` defaults to the method.
    """
    event = find_event(bench, site, method)
    with site_context(bench, site):
        job = enqueue(event.method, queue=event.queue, timeout=event.timeout, job_name=job_name or event.method,
                      job_id=f"trigger-{event.event_id}-{int(now.timestamp() * 1000)}", _log_event=event.event_id)
    bench.redis().hset(keys.scheduler_last_job(bench.bench_id, site), event.event_id, job.id)
    return job


def run_event_now(bench: Bench, site: str, method: str) -> Any:
    """Run the registered event ``method`` of ``site`` here, in the site's transaction; return its result.

    Not a scheduled run: no job, no job-log row, the event's schedule does not move.
    """
    from bgcore import connect

    event = find_event(bench, site, method)
    with connect(site, bench):
        return enqueue(event.method, now=True)


def control_event(bench: Bench, site: str, method: str, *, stopped: bool | None = None,
                  cron: str | None = None, reset_cron: bool = False) -> Any:
    """Stop/start the event ``method`` (a method path or event id) of ``site``, or override/reset its cron.

    Stored in the site's registry (kept across migrate); the registry version is
    bumped after the commit, so a running daemon obeys without a restart.
    Returns the event as it was found.
    """
    from bgcore.db.engines import database_for
    from bgcore.scheduler.registry import bump_registry_version, set_event_control

    event = find_event(bench, site, method)
    database = database_for(bench, bench.site_config(site))
    with database.transaction() as connection:
        set_event_control(connection, event.event_id, stopped=stopped, cron_override=cron, reset_cron=reset_cron)
    bump_registry_version(bench, site)
    return event
