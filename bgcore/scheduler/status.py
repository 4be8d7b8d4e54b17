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
from bgcore.errors import InvalidArgument
from bgcore.scheduler.due import next_run
from bgcore.scheduler.lease import current_holder
from bgcore.scheduler.loader import DEFAULT_TIME_ZONE, read_registry, tick_interval
from bgcore.scheduler.switches import blocking_switch

UTC = timezone.utc


@dataclass(frozen=True)
class SiteStatus:
    """Whether the scheduler runs a site's events, and if not, which switch stops it."""

    site: str
    active: bool
    stopped_by: str | None
    daemon_running: bool
    leader: str | None


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


def sites_of(bench: Bench, site: str) -> list[str]:
    """``--site`` as a list: every site for ``all``, else the one named (checked)."""
    if site == "all":
        return bench.site_names()
    bench.site_config(site)
    return [site]


def site_status(bench: Bench, sites: list[str]) -> list[SiteStatus]:
    """The switch status of each site and who leads the bench's scheduler."""
    leader = current_holder(bench.redis(), bench.bench_id)
    found = []
    for site in sites:
        switch = blocking_switch(bench.site_config(site))
        found.append(SiteStatus(site=site, active=switch is None, stopped_by=switch.value if switch else None,
                                daemon_running=leader is not None, leader=leader))
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
    running, else that of the event's newest job-log row.
    """
    config = bench.site_config(site)
    events, _ = read_registry(bench, config)
    logged = last_logged(bench, config)
    tz = str(config.get("time_zone") or DEFAULT_TIME_ZONE)
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
        if event.cron:
            upcoming = next_run(event.cron, base, tz)
        else:
            upcoming = base + timedelta(seconds=interval)
        log_status, log_error = logged.get(event.event_id, (None, None))
        live = status if status in ("queued", "started", "deferred", "scheduled") else None
        rows.append(EventStatus(
            event_id=event.event_id, app=event.app, method=event.method, frequency=event.frequency,
            cron=event.cron, queue=event.queue, last_run=last, next_run=max(upcoming, now),
            last_status=live or log_status or status or event.last_status,
            last_error=None if live else (log_error or event.last_error),
        ))
    return rows


def trigger_event(bench: Bench, site: str, method: str, now: datetime) -> Any:
    """Enqueue one run of the registered event ``method`` (or event id) of ``site`` now.

    The run is logged like a scheduled one; it does not move the event's schedule.
    """
    events, _ = read_registry(bench, bench.site_config(site))
    matches = [e for e in events if method in (e.method, e.event_id)]
    if not matches:
        known = sorted({e.method for e in events})
        hint = difflib.get_close_matches(method, known, n=1)
        did_you_mean = f"; did you mean {hint[0]}?" if hint else ""
        raise InvalidArgument(
            f"site {site!r} has no scheduled event {method!r}{did_you_mean} (registered: {', '.join(known) or 'none'}; "
            f"after editing hooks.py run 'bgcore migrate --site {site}')"
        )
    event = matches[0]
    with site_context(bench, site):
        return enqueue(event.method, queue=event.queue, timeout=event.timeout, job_name=event.method,
                       job_id=f"trigger-{event.event_id}-{int(now.timestamp() * 1000)}", _log_event=event.event_id)
