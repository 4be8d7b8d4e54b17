"""Looking at and removing a bench's queued jobs, per site."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rq.job import Job

from bgcore import keys
from bgcore.bench import Bench, validate_site_name
from bgcore.queues import check_queue
from bgcore.rqbridge import SERIALIZER, rq_queue


@dataclass(frozen=True)
class PendingJob:
    """One queued job as listings show it."""

    queue: str
    site: str | None
    job_id: str
    job_name: str | None
    method: str | None
    enqueued_at: datetime | None


@dataclass(frozen=True)
class PurgeReport:
    removed: int
    queues: list[str]


def pending_jobs(bench: Bench, site: str | None = None) -> list[PendingJob]:
    """Queued jobs of the bench (of ``site`` only, matched exactly), per queue in priority order."""
    prefix = keys.site_job_prefix(validate_site_name(site)) if site else None
    found: list[PendingJob] = []
    for name in bench.queues:
        queue = rq_queue(bench, name)
        ids = [i for i in queue.get_job_ids() if prefix is None or i.startswith(prefix)]
        for job in Job.fetch_many(ids, connection=bench.redis(), serializer=SERIALIZER):
            if job is None:
                continue
            payload = _payload(job)
            found.append(PendingJob(
                queue=name,
                site=keys.site_of_job(job.id),
                job_id=keys.local_job_id(job.id),
                job_name=_text(payload.get("job_name")),
                method=_text(payload.get("method")),
                enqueued_at=job.enqueued_at,
            ))
    return found


def _payload(job: Job) -> dict[str, object]:
    try:
        kwargs = job.kwargs
    except Exception:  # a job another program wrote with another serializer
        return {}
    return kwargs if isinstance(kwargs, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def purge_jobs(bench: Bench, site: str, queue: str | None = None) -> PurgeReport:
    """Remove ``site``'s queued jobs (exact site match) from ``queue`` or every queue.

    A job a worker takes between listing and removal is left alone: its record
    is deleted only when this call removed it from the queue itself.
    """
    prefix = keys.site_job_prefix(validate_site_name(site))
    names = [check_queue(bench.queues, queue).name] if queue else list(bench.queues)
    connection = bench.redis()
    removed = 0
    for name in names:
        rq_q = rq_queue(bench, name)
        for job_id in rq_q.get_job_ids():
            if job_id.startswith(prefix) and connection.lrem(rq_q.key, 0, job_id):
                connection.delete(Job.key_for(job_id))
                removed += 1
    return PurgeReport(removed=removed, queues=names)
