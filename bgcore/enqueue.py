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
import math
import uuid
from datetime import datetime, timedelta, timezone
from collections.abc import Callable
from typing import Any

from rq.job import Job, JobStatus
from rq.utils import now as utc_now

from bgcore import keys
from bgcore.context import SiteContext, current
from bgcore.errors import DuplicateJob, InvalidArgument
from bgcore.methods import argument_problem, check_app_installed, method_path, resolve
from bgcore.queues import check_queue
from bgcore.engine.settings import EngineSettings
from bgcore.retry import Retry
from bgcore.rqbridge import broker, rq_queue
from bgcore.serialize import check_json

logger = logging.getLogger(__name__)

EXECUTE_JOB = "bgcore.worker.execute_job"


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
    retry: int | Retry | None = None,
    _log_event: str | None = None,
    _pipeline: Any = None,
    _due: float | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``method(**kwargs)`` in the current site, in a worker of ``queue``.

    Returns the RQ :class:`~rq.job.Job`; with ``now=True`` or ``is_async=False``
    the method runs inline in the caller's site and its result is returned.
    ``timeout`` falls back to the queue's. With ``deduplicate=True`` and a
    ``job_id``, a job with that id that is still queued or running makes this
    call raise :class:`DuplicateJob` (atomically: two racing callers cannot both
    enqueue it). ``retry`` (a number of retries or a :class:`~bgcore.retry.Retry`)
    runs a failed job again; without it, the queue's ``retry`` default applies.
    :func:`enqueue_in` and :func:`enqueue_at` delay a job.

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
    policy = Retry.parse(retry, f"enqueue of {path}")
    if policy is not None:
        payload["retry"] = policy.as_payload()
    if _log_event:
        payload.update(log=True, event=_log_event)
    job = rq_queue(ctx.bench, spec.name).create_job(
        EXECUTE_JOB, kwargs=payload, timeout=timeout or spec.timeout, job_id=rq_id,
        description=job_name or path, status=JobStatus.QUEUED,
    )
    size = len(job.data)  # serialised once here; the push reuses it
    limit = EngineSettings.of(ctx.bench).max_payload_bytes
    if size > limit:
        raise InvalidArgument(
            f"site {ctx.site!r}: the call of {path} is {size:,} bytes of JSON, over max_payload_bytes={limit:,} "
            "(sites/common_site_config.json); pass a document name or a file path instead of the data itself"
        )
    if enqueue_after_commit:
        # The id is known now; the job reaches Redis only when the site's transaction commits.
        ctx.db.after_commit(lambda: _push(ctx, job, spec.name, at_front, unique, _due))
        logger.debug("held until commit site=%s job=%s method=%s", ctx.site, rq_id, path)
        return job
    if _pipeline is not None:
        job.enqueued_at = utc_now()
        broker(ctx.bench).push(job, ctx.site, spec.name, at_front=at_front, due=_due, pipeline=_pipeline)
        return job
    _push(ctx, job, spec.name, at_front, unique, _due)
    logger.debug("enqueued site=%s job=%s method=%s queue=%s", ctx.site, rq_id, path, spec.name)
    return job


def _push(ctx: SiteContext, job: Job, queue: str, at_front: bool, unique: bool, due: float | None) -> None:
    """Put ``job`` on ``ctx``'s site list of ``queue`` (or, with ``due``, among its delayed jobs).

    With ``unique``, refuse an id still queued, scheduled or running.
    """
    job.enqueued_at = utc_now()
    if not broker(ctx.bench).push(job, ctx.site, queue, at_front=at_front, unique=unique, due=due):
        raise _duplicate(ctx.site, keys.local_job_id(job.id))


def enqueue_at(when: datetime, method: Callable[..., Any] | str, **options: Any) -> Any:
    """:func:`enqueue`, to run at ``when`` (an aware ``datetime``); takes every option of ``enqueue``.

    A due job is moved to its queue by the first worker that looks after its time
    (atomically: it runs once), within about a second when a worker is idle.
    """
    ctx = current()
    if not isinstance(when, datetime):
        raise InvalidArgument(f"enqueue_at needs a datetime, found {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        zone = ctx.config.get("time_zone") or "UTC"  # raw: this only words an error message
        raise InvalidArgument(
            f"enqueue_at: {when.isoformat()} has no time zone; pass an aware datetime, e.g. "
            f"datetime(..., tzinfo=ZoneInfo({zone!r})) for the site's time_zone ({ctx.site})"
        )
    if options.get("now") or options.get("is_async") is False:
        raise InvalidArgument("enqueue_at cannot run a job now (now=True / is_async=False); use enqueue")
    return enqueue(method, _due=when.timestamp(), **options)


def enqueue_in(delay: float | timedelta, method: Callable[..., Any] | str, **options: Any) -> Any:
    """:func:`enqueue`, to run ``delay`` seconds (or a ``timedelta``) from now; see :func:`enqueue_at`."""
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"enqueue_in needs a delay of seconds >= 0 (or a timedelta), found {delay!r}")
    return enqueue_at(datetime.now(timezone.utc) + timedelta(seconds=seconds), method, **options)


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
        except TypeError as exc:  # say why, an unexpected keyword first (argument_problem)
            takes = ", ".join(signature.parameters)
            why = argument_problem(signature, kwargs) or str(exc)
            raise InvalidArgument(f"{path}({takes}) cannot take these arguments: {why}") from None
