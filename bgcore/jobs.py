"""Looking at and removing a bench's queued jobs, per site."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rq.job import Job

from bgcore import keys
from bgcore.bench import Bench, validate_site_name
from bgcore.queues import check_queue
from bgcore.rqbridge import SERIALIZER, broker


@dataclass(frozen=True)
class PendingJob:
    """One queued job as listings show it."""

    queue: str
    site: str | None
    job_id: str
    job_name: str | None
    method: str | None
    enqueued_at: datetime | None
    status: str = "queued"  # or "scheduled": a delayed job (enqueue_in / enqueue_at, or a retry)
    due: datetime | None = None  # when a scheduled job runs (UTC)


@dataclass(frozen=True)
class PurgeReport:
    removed: int
    queues: list[str]


def pending_jobs(bench: Bench, site: str | None = None) -> list[PendingJob]:
    """Queued jobs of the bench (of ``site`` only, matched exactly), per queue in priority order.

    With ``site``, only that site's lists are read (no scan of other sites' jobs). The rows
    are the dashboard's (:func:`bgcore.views.joblist.job_rows`), without paging.
    """
    from bgcore.views.joblist import JobFilter, job_rows

    if site is not None:
        validate_site_name(site)
    found: list[PendingJob] = []
    for name in bench.queues:
        for status in ("queued", "scheduled"):
            found.extend(PendingJob(queue=name, site=row.site, job_id=row.job_id, job_name=row.job_name,
                                    method=row.method, enqueued_at=row.enqueued_at, status=status, due=row.due)
                         for row in job_rows(bench, JobFilter(status=status, site=site, queue=name)))
    return found


DOC_METHOD = "bgcore.documents.run_doc_method"


def doc_label(method: str | None, kwargs: dict[str, object] | None) -> str | None:
    """``Doctype name.method`` for a job of ``enqueue_doc`` (from its payload), else None."""
    if method == DOC_METHOD and kwargs and all(isinstance(kwargs.get(k), str) for k in ("doctype", "name", "method")):
        return f"{kwargs['doctype']} {kwargs['name']}.{kwargs['method']}"
    return None


def job_label(method: str | None, job_name: str | None, kwargs: dict[str, object] | None = None) -> str:
    """What listings call a job: its name, else ``Doctype name.method`` for a document job, else its method."""
    return job_name or doc_label(method, kwargs) or method or ""


def job_names(bench: Bench, rq_ids: list[str]) -> dict[str, str]:
    """RQ job id -> its description (what ``job_name`` set), for the jobs still in Redis (one round trip)."""
    with bench.redis().pipeline(transaction=False) as pipe:
        for rq_id in rq_ids:
            pipe.hget(keys.rq_job(rq_id), "description")
        found = pipe.execute()
    return {rq_id: _decoded(v) for rq_id, v in zip(rq_ids, found) if v}


def _decoded(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def queued_count(bench: Bench, queue: str, site: str | None = None) -> int:
    """How many jobs wait in ``queue`` (of ``site`` only, if given); exact, without reading the jobs."""
    return broker(bench).depth(check_queue(bench.queues, queue).name, validate_site_name(site) if site else None)


def _payload(job: Job) -> dict[str, object]:
    try:
        kwargs = job.kwargs
    except Exception:  # a job another program wrote with another serializer
        return {}
    return kwargs if isinstance(kwargs, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class FailedJobsReport:
    """What ``requeue_failed`` / ``delete_failed`` did: the local ids of the jobs they acted on."""

    site: str
    jobs: list[str]


def _failed_of(bench: Bench, site: str, job: str | None, method: str | None,
               queue: str | None) -> list[tuple[str, str]]:
    """``(queue, rq job id)`` of ``site``'s failed jobs matching the filters (one site only, exact)."""
    validate_site_name(site)
    names = [check_queue(bench.queues, queue).name] if queue else list(bench.queues)
    wanted = keys.job_id(site, keys.check_local_id(job)) if job else None
    found = []
    for name in names:
        ids = [i for i in broker(bench).failed_ids(name, site) if wanted is None or i == wanted]
        if method is not None:
            jobs = Job.fetch_many(ids, connection=bench.redis(), serializer=SERIALIZER)
            ids = [j.id for j in jobs if j is not None and _payload(j).get("method") == method]
        found += [(name, i) for i in ids]
    return found


def requeue_failed(bench: Bench, site: str, *, job: str | None = None, method: str | None = None,
                   queue: str | None = None) -> FailedJobsReport:
    """Put ``site``'s failed jobs (one ``job``, or all, by ``method``/``queue``) back on their queues.

    They keep their ids, arguments and user; their attempts count from one again. A
    job that failed because the site's config was broken runs once the config is fixed.
    """
    done = [keys.local_job_id(i) for name, i in _failed_of(bench, site, job, method, queue)
            if broker(bench).settle_failed(i, name, delete=False)]
    return FailedJobsReport(site, done)


def delete_failed(bench: Bench, site: str, *, job: str | None = None, method: str | None = None,
                  queue: str | None = None) -> FailedJobsReport:
    """Delete ``site``'s failed jobs (one ``job``, or all, by ``method``/``queue``) and their results."""
    done = [keys.local_job_id(i) for name, i in _failed_of(bench, site, job, method, queue)
            if broker(bench).settle_failed(i, name, delete=True)]
    return FailedJobsReport(site, done)


def purge_jobs(bench: Bench, site: str, queue: str | None = None) -> PurgeReport:
    """Remove ``site``'s queued jobs (exact site match) from ``queue`` or every queue.

    Each queue's list of the site goes in one atomic step; a job a worker took
    before that step is left alone (it is running, not queued).
    """
    validate_site_name(site)
    names = [check_queue(bench.queues, queue).name] if queue else list(bench.queues)
    removed = sum(len(broker(bench).purge(name, site)) for name in names)
    return PurgeReport(removed=removed, queues=names)
