"""``bgcore.enqueue``: put a call of a method, in the current site, on a queue.

The signature follows the reference system::

    enqueue(method, queue="default", timeout=None, is_async=True, now=False,
            job_name=None, enqueue_after_commit=False, at_front=False, **kwargs)

plus keyword-only ``job_id=``/``deduplicate=`` and ``job_kwargs=``, an escape
hatch for method arguments whose names collide with these options.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from typing import Any

from rq.exceptions import DuplicateJobError
from rq.job import Job, JobStatus

from bgcore import keys
from bgcore.context import SiteContext, current
from bgcore.errors import DuplicateJob, InvalidArgument
from bgcore.methods import check_app_installed, method_path, resolve
from bgcore.queues import check_queue
from bgcore.rqbridge import rq_queue
from bgcore.serialize import check_json

logger = logging.getLogger(__name__)

EXECUTE_JOB = "bgcore.worker.execute_job"

# Removes a finished/failed job with this id so the id can be used again; leaves
# a queued/started/scheduled/deferred one alone and answers 0. RQ's own unique
# enqueue (a Lua script too) is then the atomic gate between racing enqueuers.
_FREE_FINISHED_ID = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 1 end
if status == 'queued' or status == 'started' or status == 'scheduled' or status == 'deferred' then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"""


def enqueue(
    method: Callable[..., Any] | str,
    queue: str = "default",
    timeout: int | None = None,
    is_async: bool = True,
    now: bool = False,
    job_name: str | None = None,
    enqueue_after_commit: bool = False,
    at_front: bool = False,
    *,
    job_id: str | None = None,
    deduplicate: bool = False,
    job_kwargs: dict[str, Any] | None = None,
    _log_event: str | None = None,
    _pipeline: Any = None,
    **kwargs: Any,
) -> Any:
    """Run ``method(**kwargs)`` in the current site, in a worker of ``queue``.

    Returns the RQ :class:`~rq.job.Job`; with ``now=True`` or ``is_async=False``
    the method runs inline in the caller's site and its result is returned.
    ``timeout`` falls back to the queue's. With ``deduplicate=True`` and a
    ``job_id``, a job with that id that is still queued or running makes this
    call raise :class:`DuplicateJob` (atomically: two racing callers cannot both
    enqueue it).

    For the scheduler only: ``_log_event`` marks the job as a run of that
    scheduled event (payload ``"log": true, "event": ...``, so the worker writes
    a job-log row for it); ``_pipeline`` adds the job to a Redis pipeline or
    transaction that the caller executes (not with ``deduplicate`` or
    ``enqueue_after_commit``).
    """
    ctx = current()
    if job_kwargs:
        kwargs = {**kwargs, **job_kwargs}
    path = method_path(method)
    check_app_installed(path, ctx.site, ctx.config.installed_apps)
    spec = check_queue(ctx.queues, queue)
    check_json(kwargs, path)
    if now or not is_async:
        return resolve(path)(**kwargs)
    _check_call(ctx, path, kwargs)
    if deduplicate and not job_id:
        raise InvalidArgument("deduplicate needs a job id (job_id= in Python, --job-id on the command line)")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0):
        raise InvalidArgument(f"timeout must be a positive number of seconds, found {timeout!r}")
    # An explicit id is unique among the site's queued and running jobs, with or without
    # deduplicate: reusing it must never overwrite a job that has not run yet. A caller
    # that passes _pipeline (the scheduler) guards the id itself inside that transaction.
    unique = deduplicate or (job_id is not None and _pipeline is None)
    local_id = keys.check_local_id(job_id) if job_id else uuid.uuid4().hex
    rq_id = keys.job_id(ctx.site, local_id)
    payload: dict[str, Any] = {"site": ctx.site, "method": path, "kwargs": kwargs, "user": ctx.user, "job_name": job_name}
    if _log_event:
        payload.update(log=True, event=_log_event)
    rq_q = rq_queue(ctx.bench, spec.name)
    if unique:
        free = ctx.bench.redis().eval(_FREE_FINISHED_ID, 1, Job.key_for(rq_id))
        if not free:
            raise _duplicate(ctx.site, local_id)
    if enqueue_after_commit:
        # The id is known now; the job reaches Redis only when the site's transaction commits.
        job = rq_q.create_job(EXECUTE_JOB, kwargs=payload, timeout=timeout or spec.timeout, job_id=rq_id,
                              description=job_name or path, status=JobStatus.QUEUED)
        ctx.db.after_commit(lambda: _push(rq_q, job, ctx.site, at_front, unique))
        logger.debug("held until commit site=%s job=%s method=%s", ctx.site, rq_id, path)
        return job
    try:
        job = rq_q.enqueue_call(
            EXECUTE_JOB,
            kwargs=payload,
            timeout=timeout or spec.timeout,
            job_id=rq_id,
            at_front=at_front,
            description=job_name or path,
            unique=unique,
            pipeline=_pipeline,
        )
    except DuplicateJobError:
        raise _duplicate(ctx.site, local_id) from None
    logger.debug("enqueued site=%s job=%s method=%s queue=%s", ctx.site, rq_id, path, spec.name)
    return job


def _push(rq_q: Any, job: Job, site: str, at_front: bool, deduplicate: bool) -> None:
    """Enqueue a job held until commit (the deduplication check happens now)."""
    if deduplicate and not rq_q.connection.eval(_FREE_FINISHED_ID, 1, job.key):
        raise _duplicate(site, keys.local_job_id(job.id))
    try:
        rq_q.enqueue_job(job, at_front=at_front, unique=deduplicate)
    except DuplicateJobError:
        raise _duplicate(site, keys.local_job_id(job.id)) from None
    logger.debug("enqueued after commit site=%s job=%s", site, job.id)


def _duplicate(site: str, local_id: str) -> DuplicateJob:
    return DuplicateJob(f"site {site!r}: job {local_id!r} is already queued or running; not enqueued again")


def _check_call(ctx: SiteContext, path: str, kwargs: dict[str, Any]) -> None:
    """Fail at enqueue time, not in the worker, when ``path`` does not import or refuses ``kwargs``."""
    known: dict[str, inspect.Signature | None] = ctx.bench.__dict__.setdefault("_known_methods", {})
    if path not in known:
        try:
            known[path] = inspect.signature(resolve(path))
        except (TypeError, ValueError):  # a builtin without a signature: the worker will tell
            known[path] = None
    signature = known[path]
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            takes = ", ".join(signature.parameters)
            raise InvalidArgument(f"{path}({takes}) cannot take these arguments: {exc}") from None
