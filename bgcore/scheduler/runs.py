"""Durable run state of scheduled events: what the worker writes to the registry.

Redis holds the daemon's fast view of each event's last run; the site
database holds the durable one (``scheduled_event.last_execution``), so a
Redis flush or loss never makes the daemon repeat an occurrence that already
started. The worker records an occurrence's due time when the run *starts*
(its own short transaction, committed before the job's work), and its status,
error and next run when it *ends*, in the transaction that writes the job-log
row. A run whose work-horse was killed gets its failed job-log row here too
(:func:`log_lost_run`), from the worker's parent or from the daemon.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bgcore import keys
from bgcore.bench import Bench, SiteConfig
from bgcore.db.engines import database_for
from bgcore.db.joblog import JobLogEntry, write
from bgcore.errors import BgcoreError, DatabaseUnavailable
from bgcore.scheduler.due import next_run
from bgcore.scheduler.registry import record_run, scheduled_event

logger = logging.getLogger(__name__)

UTC = timezone.utc
# The local id of a scheduled run (see Occurrence.job_local_id): sched-<event id>-<due epoch seconds>.
_SCHEDULED = re.compile(r"sched-(?P<event>[0-9a-z]+)-(?P<due>\d+)")


def due_of(rq_job_id: str | None) -> datetime | None:
    """The due time of the occurrence an RQ job id names, or None for any other job."""
    if not rq_job_id:
        return None
    found = _SCHEDULED.fullmatch(keys.local_job_id(rq_job_id))
    return datetime.fromtimestamp(int(found["due"]), UTC) if found else None


def _next_after(connection: Connection, event_id: str, due: datetime, tz: str) -> datetime | None:
    cron = connection.execute(sa.select(scheduled_event.c.cron).where(scheduled_event.c.event_id == event_id)).scalar()
    if not cron:
        return None
    try:
        return next_run(str(cron), due, tz)
    except BgcoreError:  # a zone or cron the daemon refuses too; the run itself still counts
        return None


def _zone_of(config: SiteConfig) -> str:
    return str(config.setting("time_zone"))


def record_in(connection: Connection, config: SiteConfig, rq_job_id: str | None, event: str,
              status: str, error: str | None) -> None:
    """Write a run's state to ``event``'s registry row within ``connection``'s transaction."""
    due = due_of(rq_job_id)
    next_at = _next_after(connection, event, due, _zone_of(config)) if due is not None else None
    if not record_run(connection, event, status, due, error, next_at=next_at):
        logger.info("site=%s job=%s event=%s is no longer registered; run state not recorded",
                    config.name, rq_job_id, event)


def record_start(bench: Bench, config: SiteConfig, rq_job_id: str | None, event: str) -> None:
    """Commit "this occurrence started" before the job's work (a database problem is logged, not raised)."""
    if due_of(rq_job_id) is None:
        return  # a triggered run: it does not move the schedule
    try:
        with database_for(bench, config).transaction() as connection:
            record_in(connection, config, rq_job_id, event, "started", None)
    except DatabaseUnavailable as exc:
        logger.warning("run start not recorded site=%s job=%s: %s", config.name, rq_job_id, exc)
    except (BgcoreError, sa.exc.SQLAlchemyError) as exc:
        logger.error("run start not recorded site=%s job=%s: %s", config.name, rq_job_id, exc)


def recorder(config: SiteConfig, rq_job_id: str | None, event: str | None) -> Callable[[Connection, JobLogEntry], None] | None:
    """What to run in the job-log row's transaction so the registry row says how the run ended."""
    if not event:
        return None

    def record(connection: Connection, entry: JobLogEntry) -> None:
        record_in(connection, config, rq_job_id, event, entry.status, entry.exception)

    return record


def log_lost_run(bench: Bench, job: Any, message: str, ended: datetime, *, status: str = "failed",
                 attempt: int | None = None) -> bool:
    """Write the failed (or ``status="timeout"``) job-log row of bgcore job ``job`` whose process died before writing one.

    Also records the failure on the job's event, in the same transaction.
    Returns False when ``job`` is not a bgcore job or the row could not be written.
    """
    site = keys.site_of_job(job.id)
    payload = job.kwargs if isinstance(job.kwargs, dict) else {}
    if site is None or payload.get("site") != site:
        return False
    try:
        config = bench.site_config(site)
    except BgcoreError as exc:
        logger.error("job log for a lost run not written site=%s job=%s: %s", site, job.id, exc)
        return False
    started = job.started_at or ended
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    origin = job.origin or ""
    event = payload.get("event") or None
    entry = JobLogEntry(
        job_id=job.id, method=str(payload.get("method", "")),
        queue=keys.queue_of(bench.bench_id, origin) or origin or None, status=status,
        started_at=started, ended_at=ended, duration_ms=max(0, int((ended - started).total_seconds() * 1000)),
        exception=message, event=event, attempt=attempt,
    )
    final = status != "retried"  # only a job's last attempt is its outcome, for its event too
    return write(bench, config, entry, also=recorder(config, job.id, event) if final else None)
