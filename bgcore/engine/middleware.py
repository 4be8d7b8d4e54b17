"""bgcore's own lifecycle middleware: what every job goes through, one concern each.

The order of :func:`default_middleware` is the order of ``before_job``
(outermost first); every ``after_*`` hook runs innermost first:

1. :class:`SiteContext`: enters the job's site (``bgcore.context.site_context``,
   the one place that does) and leaves it at the end.
2. :class:`JobLine`: one log line per job: site, job, method, queue, duration, outcome.
3. :class:`RunStart`: a scheduled run commits "this occurrence started" first.
4. :class:`JobLog`: the site's job-log row (every failure; successes when asked).
5. :class:`Method`: checks that the method belongs to an app installed on the site, imports it.
6. :class:`Transaction`: commits the site's transaction after success, rolls it back
   otherwise, and retries transient database errors in place.
7. :class:`Timeout` (work-horses only): ``JobTimeoutException`` inside the job at its
   deadline, enforced even when the job catches it.

After :class:`JobLine` comes :class:`bgcore.metrics.middleware.JobMetrics`, which counts
every run for ``/metrics`` and the dashboard (batched: about one write a second per horse).

Extra middleware (counters of your own) is listed in the bench config key
``worker_middleware`` as dotted paths of :class:`~bgcore.engine.lifecycle.Middleware`
subclasses (instantiated once per pool, before the horses fork). It runs just inside
:class:`JobLine`, so it sees every job, and its ``after_success`` comes after the commit.
"""

from __future__ import annotations

import importlib
import logging
import signal
from contextlib import AbstractContextManager
from types import FrameType
from typing import Any

from rq.timeouts import JobTimeoutException

from bgcore import keys
from bgcore.bench import Bench
from bgcore.context import site_context
from bgcore.db.joblog import entry_for, write
from bgcore.db.retry import MAX_RETRIES, backoff, is_transient
from bgcore.engine.lifecycle import JobRun, LostJob, Middleware, RetryDecision
from bgcore.errors import ConfigError
from bgcore.metrics.middleware import FLUSH_SECONDS, JobMetrics
from bgcore.methods import check_app_installed, resolve
from bgcore.scheduler.runs import log_lost_run, record_start, recorder

logger = logging.getLogger("bgcore.job")

# RQ's "current job" (rq.get_current_job()) is a ContextVar; jobs written for RQ may read it.
_rq_current_job: Any = getattr(importlib.import_module("rq.job"), "_current_job", None)


class SiteContext(Middleware):
    """Enter the job's site for the whole run; leave it (rolling back anything left open) at the end."""

    def before_job(self, run: JobRun) -> None:
        manager = site_context(run.bench, run.site, user=run.user, job_id=run.job_id)
        run.ctx = manager.__enter__()
        run.state["site_context"] = manager
        if _rq_current_job is not None and run.rq_job is not None:
            run.state["rq_current_job"] = _rq_current_job.set(run.rq_job)

    def after_job(self, run: JobRun) -> None:
        token = run.state.pop("rq_current_job", None)
        manager: AbstractContextManager[Any] | None = run.state.pop("site_context", None)
        try:
            if manager is not None:
                manager.__exit__(None, None, None)
        finally:
            run.ctx = None
            if token is not None and _rq_current_job is not None:
                _rq_current_job.reset(token)


class JobLine(Middleware):
    """One line per job, at INFO for successes and ERROR for failures, for grepping."""

    def after_job(self, run: JobRun) -> None:
        if run.error is None:
            logger.info("job site=%s job=%s method=%s queue=%s duration=%.3fs outcome=finished",
                        run.site, run.job_id, run.method, run.queue, run.duration)
        else:
            retry = f" retry_in={run.retry.delay:.1f}s attempt={run.tries + 1}" if run.retry else ""
            logger.error("job site=%s job=%s method=%s queue=%s duration=%.3fs outcome=%s%s error=%s",
                         run.site, run.job_id, run.method, run.queue, run.duration, run.status, retry,
                         f"{type(run.error).__name__}: {run.error}"[:300])


class RunStart(Middleware):
    """A scheduled run records its start in the site database before its work (bgcore.scheduler.runs)."""

    def before_job(self, run: JobRun) -> None:
        if run.event and run.ctx is not None:
            record_start(run.bench, run.ctx.config, run.job_id, run.event)


class JobLog(Middleware):
    """The site's job log: a row for every failure, and for a success when the job asks (``log``)."""

    def after_success(self, run: JobRun) -> None:
        if run.log:
            self._write(run)

    def after_failure(self, run: JobRun) -> None:
        self._write(run)

    def horse_lost(self, lost: LostJob) -> None:
        log_lost_run(lost.bench, lost.rq_job, lost.reason, lost.ended_at, status=lost.status, attempt=lost.attempt)

    def _write(self, run: JobRun) -> None:
        if run.ctx is None:
            return
        origin = getattr(run.rq_job, "origin", None) or (keys.queue_name(run.bench.bench_id, run.queue)
                                                          if run.queue else None)
        entry = entry_for(run.job_id, run.method, origin, run.bench.bench_id, started_at=run.started_at,
                          duration_ms=int(run.duration * 1000), error=run.error, event=run.event,
                          status=run.status, attempt=run.tries + 1)
        # Only a run's last attempt is its outcome, for the scheduler's run state too.
        final = run.retry is None
        write(run.bench, run.ctx.config, entry, also=recorder(run.ctx.config, run.job_id, run.event) if final else None)


class Method(Middleware):
    """The method must belong to an app installed on the job's site; import it."""

    def before_job(self, run: JobRun) -> None:
        assert run.ctx is not None, "Method runs inside SiteContext"
        check_app_installed(run.method, run.site, run.ctx.config.installed_apps)
        run.function = resolve(run.method)
        logger.debug("running site=%s job=%s method=%s", run.site, run.job_id, run.method)


class Transaction(Middleware):
    """The job's site transaction: commit after success, roll back after a failed attempt; retry transient errors."""

    def __init__(self, max_retries: int = MAX_RETRIES) -> None:
        self.max_retries = max_retries

    def after_success(self, run: JobRun) -> None:
        session = run.ctx.state.get("db") if run.ctx is not None else None
        if session is not None:
            session.commit()

    def decide_retry(self, run: JobRun) -> RetryDecision | None:
        if run.error is None or run.attempt > self.max_retries or not is_transient(run.error):
            return None
        return RetryDecision(backoff(run.attempt), str(run.error).splitlines()[0] if str(run.error) else "")

    def after_retry_decision(self, run: JobRun, decision: RetryDecision | None) -> None:
        self._rollback(run)
        if decision is not None:
            logger.warning("retrying site=%s job=%s attempt=%d/%d in %.2fs after transient database error: %s",
                           run.site, run.job_id, run.attempt, self.max_retries, decision.delay, decision.reason)

    def after_failure(self, run: JobRun) -> None:
        self._rollback(run)

    @staticmethod
    def _rollback(run: JobRun) -> None:
        session = run.ctx.state.get("db") if run.ctx is not None else None
        if session is None:
            return
        try:
            session.rollback()
        except Exception as exc:  # never hide the job's own error behind the rollback's
            logger.error("rollback failed site=%s job=%s: %s", run.site, run.job_id, exc)


class JobRetry(Middleware):
    """A failed job goes back to its queue, as a delayed job, while its retry policy allows.

    The policy is the job's own (``enqueue(retry=...)``) or its queue's (``workers.<q>.retry``).
    In-place retries of transient database errors (:class:`Transaction`) come first.
    """

    def decide_retry(self, run: JobRun) -> RetryDecision | None:
        policy = run.retry_policy
        if policy is None or run.tries >= policy.max:
            return None
        return RetryDecision(policy.delay(run.tries + 1), f"attempt {run.tries + 1} of {policy.max + 1} failed",
                             requeue=True)


class Timeout(Middleware):
    """``JobTimeoutException`` inside the job when its timeout passes (SIGALRM; work-horses only).

    A job that catches the exception and returns is still recorded as timed out;
    one that keeps running, blocks the signal or is stuck in C code is killed by
    the pool parent shortly after its deadline.
    """

    def __init__(self) -> None:
        self._run: JobRun | None = None  # the run whose alarm is armed

    def before_job(self, run: JobRun) -> None:
        if not run.timeout or run.timeout <= 0:
            return
        # One handler for every job of the horse, installed once (again only if a job replaced it).
        if signal.getsignal(signal.SIGALRM) != self._expired:
            signal.signal(signal.SIGALRM, self._expired)
        # A previous job of this long-lived horse may have blocked SIGALRM and returned: the mask
        # outlives the job, and this job's timeout would never fire inside it (only the parent's kill).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        self._run = run
        signal.setitimer(signal.ITIMER_REAL, run.timeout)

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        run = self._run
        if run is None:  # disarmed meanwhile
            return
        run.timed_out = True
        raise JobTimeoutException(f"Job exceeded maximum timeout value ({run.timeout:g} seconds)")

    def after_success(self, run: JobRun) -> None:
        self._disarm(run)
        if run.timed_out:
            raise JobTimeoutException(f"Job exceeded maximum timeout value ({run.timeout:g} seconds); "
                                      "the job caught the timeout and went on, so its result is discarded")

    def after_failure(self, run: JobRun) -> None:
        self._disarm(run)

    def after_job(self, run: JobRun) -> None:
        self._disarm(run)

    def _disarm(self, run: JobRun) -> None:
        if self._run is run:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._run = None


def configured_middleware(bench: Bench) -> list[Middleware]:
    """Instances of the classes named in the bench config's ``worker_middleware`` (dotted paths)."""
    names = bench.settings.get("worker_middleware")  # dotted paths (checked by the schema)
    where = bench.sites_path / "common_site_config.json"
    bench.activate_import_path()  # the classes usually live in an app
    found = []
    for name in names:
        module, _, attr = name.rpartition(".")
        try:
            cls = getattr(__import__(module, fromlist=[attr]), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{where}: worker_middleware {name!r} cannot be imported ({exc})") from None
        if not (isinstance(cls, type) and issubclass(cls, Middleware)):
            raise ConfigError(f"{where}: worker_middleware {name!r} is not a bgcore.engine.Middleware subclass")
        found.append(cls())
    return found


def default_middleware(bench: Bench, *, timeouts: bool) -> list[Middleware]:
    """bgcore's middleware with the bench's own after :class:`JobLine`, and (``timeouts``) the in-job timeout."""
    # Outside a pool's horses (``timeouts=False``: execute_job) nothing says "idle" or "stopping": write at once.
    metrics = JobMetrics(flush_every=FLUSH_SECONDS if timeouts else 0.0)
    chain: list[Middleware] = [SiteContext(), JobLine(), metrics, *configured_middleware(bench), RunStart(),
                               JobLog(), Method(), Transaction(), JobRetry()]
    if timeouts:
        chain.append(Timeout())
    return chain

