"""The per-site job log: a row for every failed job (and for successes that ask for one).

Rows are written in their own transaction after the job's own transaction has
been committed or rolled back, so a failure is recorded even though the job's
writes are not. Writing the log never hides the job's error: if the site's
database cannot take the row, that is logged and the job's outcome stands.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import sqlalchemy as sa
from rq.timeouts import JobTimeoutException

from bgcore import keys
from bgcore.bench import Bench, SiteConfig
from bgcore.db.engines import database_for
from bgcore.db.schema import job_log
from bgcore.errors import BgcoreError, DatabaseUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

logger = logging.getLogger(__name__)

# Extra work done in the job-log row's transaction (the scheduler records the run on its event).
Also = Callable[["Connection", "JobLogEntry"], None]

FAILED_STATUSES = ("failed", "timeout")


@dataclass(frozen=True)
class JobLogEntry:
    """One row of a site's job log."""

    job_id: str
    method: str
    queue: str | None
    status: str
    started_at: datetime
    ended_at: datetime
    duration_ms: int
    exception: str | None = None
    traceback: str | None = None
    event: str | None = None
    attempt: int | None = None


def status_of(exc: BaseException | None) -> str:
    """``'finished'``, ``'timeout'`` (RQ's job timeout) or ``'failed'``."""
    if exc is None:
        return "finished"
    return "timeout" if isinstance(exc, JobTimeoutException) else "failed"


def entry_for(job_id: str | None, method: str, rq_queue: str | None, bench_id: str, *, started_at: datetime,
              duration_ms: int, error: BaseException | None, event: str | None, status: str | None = None,
              attempt: int | None = None) -> JobLogEntry:
    """The job-log row of a run that started at ``started_at``, took ``duration_ms`` and raised ``error`` (or not).

    ``status`` defaults to what ``error`` says (:func:`status_of`); a failed run that is
    retried says ``'retried'``.
    """
    return JobLogEntry(
        job_id=job_id or "",
        method=method,
        queue=keys.queue_of(bench_id, rq_queue) or rq_queue,
        status=status or status_of(error),
        started_at=started_at,
        ended_at=datetime.now(timezone.utc),
        duration_ms=duration_ms,
        exception=None if error is None else f"{type(error).__name__}: {error}"[:10000],
        traceback=None if error is None else "".join(traceback.format_exception(error))[-60000:],
        event=event,
        attempt=attempt,
    )


def write(bench: Bench, config: SiteConfig, entry: JobLogEntry, *, also: Also | None = None) -> bool:
    """Insert ``entry`` into the site's job log; ``False`` (and a log line) if it could not.

    ``also(connection, entry)``, if given, runs in the same transaction.
    """
    try:
        with database_for(bench, config).transaction() as connection:
            connection.execute(sa.insert(job_log).values(**entry.__dict__))
            if also is not None:
                also(connection, entry)
        return True
    except DatabaseUnavailable as exc:
        logger.warning("job log not written site=%s job=%s: %s", config.name, entry.job_id, exc)
    except (BgcoreError, sa.exc.SQLAlchemyError) as exc:
        logger.error("job log not written site=%s job=%s: %s", config.name, entry.job_id, exc)
    return False


def failures(bench: Bench, config: SiteConfig, *, limit: int = 50) -> list[JobLogEntry]:
    """The site's most recent failed (or timed-out) jobs, newest first (``bgcore jobs failed``, the dashboard)."""
    return recent(bench, config, limit=limit, statuses=FAILED_STATUSES)


def recent(bench: Bench, config: SiteConfig, *, limit: int = 50,
           statuses: tuple[str, ...] | None = None) -> list[JobLogEntry]:
    """The site's newest job-log rows (of ``statuses`` only, if given), newest first."""
    columns = [job_log.c[name] for name in JobLogEntry.__dataclass_fields__]
    where = job_log.c.status.in_(statuses) if statuses else sa.true()
    query = sa.select(*columns).where(where).order_by(job_log.c.ended_at.desc(), job_log.c.id.desc()).limit(limit)
    with database_for(bench, config).transaction() as connection:
        try:
            rows = connection.execute(query).all()
        except sa.exc.DBAPIError as exc:
            raise database_for(bench, config).unavailable(exc) from exc
    return [JobLogEntry(**row._mapping) for row in rows]
