"""One site's jobs as operators look at them: ``bgcore jobs list`` and ``bgcore jobs show``.

A job is found in Redis while RQ keeps it (queued, running, finished for
500 s, failed for ``failure_ttl``) and in the site's ``job_log`` (every
failure, and every scheduled run); a record merges both, Redis first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from rq.job import Job

from bgcore import keys
from bgcore.bench import Bench
from bgcore.db.engines import database_for
from bgcore.db.schema import job_log
from bgcore.errors import InvalidArgument
from bgcore.jobs import doc_label
from bgcore.rqbridge import SERIALIZER, broker

UTC = timezone.utc
STATUSES = ("queued", "started", "finished", "failed", "timeout")


@dataclass(frozen=True)
class JobRecord:
    """What is known of one job of a site."""

    job_id: str  # as enqueue printed it (no site prefix)
    job: str  # its name, ``Doctype name.method``, or its method
    status: str
    queue: str | None
    method: str | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_ms: int | None = None
    worker: str | None = None
    kwargs: Any = None
    exception: str | None = None
    traceback: str | None = None
    result: Any = None  # what the method returned, while RQ keeps a finished job's result


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _from_job(bench: Bench, job: Job) -> JobRecord:
    payload = job.kwargs if isinstance(job.kwargs, dict) else {}
    method = payload.get("method") if isinstance(payload.get("method"), str) else None
    inner = payload.get("kwargs") if isinstance(payload.get("kwargs"), dict) else None
    started, ended = _aware(job.started_at), _aware(job.ended_at)
    status = str(job.get_status(refresh=False).value) if job.get_status(refresh=False) else "unknown"
    error, value = None, None
    if status in ("failed", "finished"):
        result = job.latest_result()
        error = str(result.exc_string) if result is not None and result.exc_string else None
        value = result.return_value if result is not None and status == "finished" else None
    return JobRecord(
        job_id=keys.local_job_id(job.id),
        job=payload.get("job_name") or doc_label(method, inner) or method or job.description or job.id,
        status=status, queue=keys.queue_of(bench.bench_id, job.origin), method=method,
        enqueued_at=_aware(job.enqueued_at), started_at=started, ended_at=ended,
        duration_ms=int((ended - started).total_seconds() * 1000) if started and ended else None,
        worker=job.worker_name, kwargs=inner,
        exception=error.strip().splitlines()[-1] if error else None, traceback=error, result=value)


def _from_row(row: Any) -> JobRecord:
    return JobRecord(job_id=keys.local_job_id(row.job_id), job=row.method, status=row.status, queue=row.queue,
                     method=row.method, started_at=row.started_at, ended_at=row.ended_at,
                     duration_ms=row.duration_ms, exception=row.exception, traceback=row.traceback)


def _merge(redis_side: JobRecord, logged: JobRecord | None) -> JobRecord:
    if logged is None:
        return redis_side
    return replace(redis_side, status=logged.status if redis_side.status == "failed" else redis_side.status,
                   traceback=logged.traceback or redis_side.traceback,
                   exception=logged.exception or redis_side.exception)


def _site_ids(bench: Bench, site: str) -> list[str]:
    """RQ ids of ``site``'s jobs Redis knows: queued, started, finished, failed."""
    redis = bench.redis()
    prefix = keys.site_job_prefix(site)
    found: list[str] = []
    for queue in bench.queues:
        found.extend(broker(bench).queued_ids(queue, site))
        rq_name = keys.queue_name(bench.bench_id, queue)
        for registry in (keys.started_registry(rq_name), keys.finished_registry(rq_name)):
            for entry in redis.zrange(registry, 0, -1):
                text = entry.decode() if isinstance(entry, bytes) else str(entry)
                rq_id = text.split(":", 1)[0]
                if rq_id.startswith(prefix):
                    found.append(rq_id)
    found.extend(broker(bench).failed_ids(None, site))  # the site's failed index, not every site's failures
    return list(dict.fromkeys(found))


def _log_rows(bench: Bench, site: str, where: Any, limit: int) -> list[JobRecord]:
    query = sa.select(job_log).where(where).order_by(job_log.c.ended_at.desc(), job_log.c.id.desc()).limit(limit)
    database = database_for(bench, bench.site_config(site))
    with database.transaction() as connection:
        try:
            return [_from_row(row) for row in connection.execute(query)]
        except sa.exc.DBAPIError as exc:
            raise database.unavailable(exc) from exc


def list_jobs(bench: Bench, site: str, statuses: tuple[str, ...] = (), limit: int = 50) -> list[JobRecord]:
    """``site``'s jobs, newest first: what Redis still holds and what its job log recorded (successes too)."""
    for status in statuses:
        if status not in STATUSES:
            raise InvalidArgument(f"unknown job status {status!r}; use one of: {', '.join(STATUSES)}")
    bench.site_config(site)
    jobs = [j for j in Job.fetch_many(_site_ids(bench, site), connection=bench.redis(), serializer=SERIALIZER) if j]
    live = {r.job_id: r for r in (_from_job(bench, j) for j in jobs)}
    where = job_log.c.status.in_(statuses) if statuses else sa.true()
    logged = _log_rows(bench, site, where, limit)
    by_id: dict[str, JobRecord] = {}
    for record in logged:
        by_id.setdefault(record.job_id, record)
    for job_id, record in live.items():
        by_id[job_id] = _merge(record, by_id.get(job_id))
    found = [r for r in by_id.values() if not statuses or r.status in statuses]
    moment = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda r: r.ended_at or r.started_at or r.enqueued_at or moment, reverse=True)
    return found[:limit]


def show_job(bench: Bench, site: str, job_id: str) -> JobRecord | None:
    """One job of ``site`` by the id ``enqueue`` printed (or the full RQ id), or None if nothing knows it."""
    bench.site_config(site)
    local = keys.local_job_id(job_id) if job_id.startswith(keys.site_job_prefix(site)) else job_id
    rq_id = keys.job_id(site, keys.check_local_id(local))
    [job] = Job.fetch_many([rq_id], connection=bench.redis(), serializer=SERIALIZER)
    logged = _log_rows(bench, site, job_log.c.job_id == rq_id, 1)
    if job is None:
        return logged[0] if logged else None
    return _merge(_from_job(bench, job), logged[0] if logged else None)
