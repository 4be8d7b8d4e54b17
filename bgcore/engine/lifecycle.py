"""A job's life, written down in one place: :func:`perform` and its hook points.

Everything bgcore does around a job's method (enter the site, record a
scheduled run's start, check and import the method, the database transaction,
the job log, the timeout) is a :class:`Middleware` that implements some of
these hook points, in the style of dramatiq's middleware:

``before_job(run)``
    Once, before the first attempt, outermost middleware first. A middleware
    whose ``before_job`` returned gets every later hook of the run.
``after_success(run)``
    Once, after the attempt that returned, innermost first. Raising here
    (a failed commit, a swallowed timeout) turns the attempt into a failure.
``after_retry_decision(run, decision)``
    After each failed attempt, with the :class:`RetryDecision` the middleware
    chain made (``None``: no retry). Retry policies answer ``decide_retry``.
``after_failure(run)``
    Once, when the run failed for good, innermost first.
``after_job(run)``
    Once, at the very end, innermost first, whatever happened.
``horse_lost(lost)``
    In the pool's parent process, when the work-horse running a job died
    (killed, out of memory, over its hard deadline, cold shutdown). The horse
    could not run any hook itself, so this is where its job's outcome is
    written (job log, run state).
``horse_idle(bench)``
    In a work-horse, when it found no job and is about to wait for one (again every
    couple of seconds while it stays idle).
``horse_stopping(bench)``
    In a work-horse, once, as it leaves: stopped, drained (burst) or recycled. Not
    when it is killed. Middleware that batches writes (metrics) sends them here.

A hook never sees another site's state: each run enters its own site context,
and that context is left in ``after_job``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rq.timeouts import JobTimeoutException

if TYPE_CHECKING:
    from bgcore.bench import Bench
    from bgcore.context import SiteContext
    from bgcore.retry import Retry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryDecision:
    """Run the job again after ``delay`` seconds (``reason`` is logged).

    ``requeue=False``: at once in this process (the run goes on, e.g. after a deadlock);
    ``requeue=True``: this run fails, and the job goes back to its queue as a delayed job
    (its retry policy), counting one attempt.
    """

    delay: float
    reason: str
    requeue: bool = False


@dataclass
class JobRun:
    """One run of one job: what it is, where it runs, and how it went."""

    bench: Bench
    job_id: str | None
    site: str
    method: str
    kwargs: dict[str, Any]
    user: str | None = None
    job_name: str | None = None
    log: bool = False
    event: str | None = None
    queue: str | None = None
    timeout: float | None = None
    rq_job: Any = None
    retry_policy: Retry | None = None
    tries: int = 0  # earlier runs of this job (RQ's number_of_retries): this run is attempt tries + 1
    retry: RetryDecision | None = None  # set when this run failed and the job is requeued for another
    attempt: int = 1  # in-place attempts within this run
    ctx: SiteContext | None = None
    function: Callable[..., Any] | None = None
    result: Any = None
    error: BaseException | None = None
    timed_out: bool = False
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    started_mono: float = field(default_factory=time.monotonic)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``'finished'``, ``'timeout'``, ``'failed'``, or ``'retried'`` (failed, another attempt follows)."""
        if self.error is None:
            return "finished"
        if self.retry is not None:
            return "retried"
        return "timeout" if isinstance(self.error, JobTimeoutException) else "failed"

    @property
    def duration(self) -> float:
        return time.monotonic() - self.started_mono


@dataclass(frozen=True)
class LostJob:
    """A job whose work-horse died before it could record the job's end (seen by the pool parent)."""

    bench: Bench
    rq_job: Any
    status: str  # 'failed', 'timeout', or 'retried' (the job was put back for another attempt)
    reason: str
    ended_at: datetime
    attempt: int = 1


class Middleware:
    """Base of every lifecycle middleware: each hook does nothing unless overridden."""

    def before_job(self, run: JobRun) -> None:
        """Before the first attempt (outermost first)."""

    def after_success(self, run: JobRun) -> None:
        """After the attempt that returned (innermost first); raising fails the attempt."""

    def decide_retry(self, run: JobRun) -> RetryDecision | None:
        """Whether to run a failed attempt again; the first middleware that answers decides."""
        return None

    def after_retry_decision(self, run: JobRun, decision: RetryDecision | None) -> None:
        """After each failed attempt, with the decision taken."""

    def after_failure(self, run: JobRun) -> None:
        """When the run failed for good (innermost first)."""

    def after_job(self, run: JobRun) -> None:
        """At the end of every run (innermost first)."""

    def horse_lost(self, lost: LostJob) -> None:
        """In the pool parent: the horse running ``lost.rq_job`` died."""

    def horse_idle(self, bench: Bench) -> None:
        """In a work-horse: no job to take; it is about to wait for one."""

    def horse_stopping(self, bench: Bench) -> None:
        """In a work-horse: it is leaving (stopped, drained or recycled; not killed)."""


def perform(run: JobRun, middleware: Sequence[Middleware], *, sleep: Callable[[float], Any] = time.sleep) -> JobRun:
    """Run ``run`` through ``middleware``; never raises: the outcome is ``run.error`` / ``run.result``."""
    entered: list[Middleware] = []
    try:
        for m in middleware:
            m.before_job(run)
            entered.append(m)
        _attempts(run, entered, sleep)
    except BaseException as exc:  # noqa: BLE001 - the outcome of the job, recorded below
        run.error = _as_timeout(run, exc)
        for m in reversed(entered):
            _quietly(m.after_failure, run)
    finally:
        for m in reversed(entered):
            _quietly(m.after_job, run)
    return run


def _attempts(run: JobRun, entered: Sequence[Middleware], sleep: Callable[[float], Any]) -> None:
    assert run.function is not None, "no middleware resolved the job's method"
    while True:
        try:
            run.result = run.function(**copy.deepcopy(run.kwargs)) if run.kwargs else run.function()
            for m in reversed(entered):
                m.after_success(run)
            run.error = None
            return
        except BaseException as exc:
            run.error = _as_timeout(run, exc)
            decision = _decide(run, entered)
            if decision is not None and not decision.requeue and run.timed_out:
                decision = None  # the run's time is up: no attempt in place
            for m in entered:
                _quietly(m.after_retry_decision, run, decision)
            if decision is None or decision.requeue:
                run.retry = decision
                raise run.error
            run.attempt += 1
            sleep(decision.delay)


def storable(result: Any, limit: int | None = None) -> Any:
    """``result`` if it can be stored as JSON, else its ``repr`` (the job still succeeded).

    A result whose JSON is over ``limit`` bytes is stored as the start of that JSON,
    with a note saying how big it was.
    """
    try:
        text = json.dumps(result)
    except (TypeError, ValueError):
        result = repr(result)
        text = json.dumps(result)
    if limit is not None and len(text) > limit:
        return (f"{text[:limit]}... [result truncated: {len(text):,} bytes of JSON is over "
                f"max_result_bytes={limit:,}]")
    return result


def _decide(run: JobRun, entered: Sequence[Middleware]) -> RetryDecision | None:
    for m in entered:
        decision = m.decide_retry(run)
        if decision is not None:
            return decision
    return None


def _as_timeout(run: JobRun, exc: BaseException) -> BaseException:
    """Once a run is over its timeout, its failure is a timeout, whatever the job made of it."""
    if run.timed_out and not isinstance(exc, JobTimeoutException):
        timeout = JobTimeoutException(f"Job exceeded maximum timeout value ({run.timeout} seconds)")
        timeout.__cause__ = exc
        return timeout
    return exc


def _quietly(hook: Callable[..., Any], *args: Any) -> None:
    """Run a hook of the failure/cleanup path: its own error is logged, never replaces the job's."""
    try:
        hook(*args)
    except Exception:
        logger.exception("lifecycle hook %s failed", getattr(hook, "__qualname__", hook))
