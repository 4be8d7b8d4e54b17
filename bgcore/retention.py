"""Keeping failed jobs and job logs from growing for ever.

Two bench config keys (``common_site_config.json``):

- ``failure_ttl`` (seconds, default 7 days): how long a failed job stays in
  Redis (its hash, its result stream, its failed-registry entry);
- ``job_log_keep_days`` (default 30): how long a site's ``job_log`` keeps rows.

The scheduler leader prunes both in small batches (:func:`prune_failed_jobs`,
:func:`prune_job_log`), so no single step holds Redis or a database for long.
``bgcore jobs clear-failed`` removes a site's failures on demand
(:func:`clear_failed`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from bgcore import keys
from bgcore.bench import Bench
from bgcore.db.engines import database_for
from bgcore.db.joblog import FAILED_STATUSES
from bgcore.db.schema import job_log
from bgcore.rqbridge import broker

logger = logging.getLogger(__name__)

UTC = timezone.utc
DEFAULT_FAILURE_TTL = 7 * 24 * 3600
DEFAULT_JOB_LOG_KEEP_DAYS = 30
BATCH = 200  # rows or jobs per step


@dataclass(frozen=True)
class ClearReport:
    """What ``clear-failed`` removed: job-log rows and failed jobs in Redis."""

    site: str
    log_rows: int
    redis_jobs: int


def _positive(bench: Bench, key: str, default: float) -> float:
    value: float = bench.settings.get(key)  # checked by the schema (a positive number)
    return value


def failure_ttl(bench: Bench) -> float:
    """``failure_ttl`` of the bench in seconds (default 7 days); :class:`ConfigError` if not positive."""
    return _positive(bench, "failure_ttl", DEFAULT_FAILURE_TTL)


def job_log_keep_days(bench: Bench) -> float:
    """``job_log_keep_days`` of the bench (default 30); :class:`ConfigError` if not positive."""
    return _positive(bench, "job_log_keep_days", DEFAULT_JOB_LOG_KEEP_DAYS)


def _ended(value: Any) -> datetime | None:
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def _drop(pipe: Any, bench: Bench, registry: str, rq_id: str) -> None:
    pipe.delete(keys.rq_job(rq_id), keys.rq_results(rq_id))
    pipe.zrem(registry, rq_id)
    site = keys.site_of_job(rq_id)
    if site is not None:
        pipe.zrem(keys.site_failed(bench.bench_id, site), rq_id)


def prune_failed_jobs(bench: Bench, now: datetime, *, batch: int = BATCH) -> int:
    """Delete failed jobs that ended more than ``failure_ttl`` before ``now``; at most ``batch`` per queue.

    Registries are scored by expiry, so the oldest failures come first; a queue
    stops at its first failure that is still young. Returns how many went.
    """
    cutoff = now - timedelta(seconds=failure_ttl(bench))
    redis = bench.redis()
    removed = 0
    for queue in bench.queues:
        registry = keys.failed_registry(keys.queue_name(bench.bench_id, queue))
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in redis.zrange(registry, 0, batch - 1)]
        if not ids:
            continue
        with redis.pipeline(transaction=False) as pipe:
            for rq_id in ids:
                pipe.hget(keys.rq_job(rq_id), "ended_at")
            ended = [_ended(v) for v in pipe.execute()]
        old = []
        for rq_id, at in zip(ids, ended):
            if at is not None and at > cutoff:
                break
            old.append(rq_id)  # ended long ago, or its hash is already gone
        if old:
            with redis.pipeline(transaction=False) as pipe:
                for rq_id in old:
                    _drop(pipe, bench, registry, rq_id)
                pipe.execute()
            removed += len(old)
    if removed:
        logger.info("pruned %d failed job(s) older than failure_ttl from Redis", removed)
    return removed


def prune_job_log(bench: Bench, site: str, now: datetime, *, batch: int = BATCH) -> int:
    """Delete up to ``batch`` of ``site``'s job-log rows that ended more than ``job_log_keep_days`` ago."""
    cutoff = now - timedelta(days=job_log_keep_days(bench))
    return _delete_log_rows(bench, site, sa.and_(job_log.c.ended_at < cutoff), batch)


def _delete_log_rows(bench: Bench, site: str, where: Any, batch: int) -> int:
    database = database_for(bench, bench.site_config(site))
    with database.transaction() as connection:
        ids = [row.id for row in connection.execute(sa.select(job_log.c.id).where(where).limit(batch))]
        if ids:
            connection.execute(sa.delete(job_log).where(job_log.c.id.in_(ids)))
    return len(ids)


def clear_failed(bench: Bench, site: str, now: datetime, older_than: timedelta | None = None) -> ClearReport:
    """Remove ``site``'s failed jobs (older than ``older_than``, if given): job-log rows and Redis entries."""
    bench.site_config(site)
    where: sa.ColumnElement[bool] = job_log.c.status.in_(FAILED_STATUSES)
    if older_than is not None:
        where = sa.and_(where, job_log.c.ended_at < now - older_than)
    rows = 0
    while True:
        done = _delete_log_rows(bench, site, where, BATCH)
        rows += done
        if done < BATCH:
            break
    redis = bench.redis()
    jobs = 0
    for queue in bench.queues:
        registry = keys.failed_registry(keys.queue_name(bench.bench_id, queue))
        ids = broker(bench).failed_ids(queue, site)  # the site's failed index: no scan of other sites'
        if older_than is not None and ids:
            with redis.pipeline(transaction=False) as pipe:
                for rq_id in ids:
                    pipe.hget(keys.rq_job(rq_id), "ended_at")
                ended = [_ended(v) for v in pipe.execute()]
            ids = [i for i, at in zip(ids, ended) if at is None or at < now - older_than]
        with redis.pipeline(transaction=False) as pipe:
            for rq_id in ids:
                _drop(pipe, bench, registry, rq_id)
            pipe.execute()
        jobs += len(ids)
    return ClearReport(site=site, log_rows=rows, redis_jobs=jobs)


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` as a :class:`timedelta`; :class:`ValueError` otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    value = text.strip().lower()
    unit = value[-1:] if value[-1:] in units else "s"
    number = value[:-1] if value[-1:] in units else value
    seconds = float(number) * units[unit]
    if seconds <= 0:
        raise ValueError(text)
    return timedelta(seconds=seconds)
