"""Shared workers: one RQ worker serves every site of a bench.

:func:`execute_job` is the one entry point every job runs through. It enters
the job's site (the site travels in the payload), checks that the method
belongs to an app installed on that site, and calls it in the site's
transaction (bgcore.db.retry). Failures are also written to the site's job log
(bgcore.db.joblog); timeouts and the failed-job registry are RQ's.
"""

from __future__ import annotations

import json
import logging
import os
from contextvars import ContextVar
from datetime import datetime, timezone
from functools import partial
from typing import Any

from rq import Worker, get_current_job
from rq.exceptions import AbandonedJobError

from bgcore.bench import Bench
from bgcore.connection import ping
from bgcore.context import site_context
from bgcore.db.joblog import recording
from bgcore.db.retry import run_in_transaction
from bgcore.methods import check_app_installed, resolve
from bgcore.queues import parse_queue_list
from bgcore.rqbridge import SERIALIZER, rq_queue
from bgcore.scheduler.runs import log_lost_run, record_start, recorder

logger = logging.getLogger(__name__)

# The bench this worker process serves; set once by run_worker, inherited by forked horses.
_serving: ContextVar[Bench | None] = ContextVar("bgcore_serving_bench", default=None)


def execute_job(
    site: str,
    method: str,
    kwargs: dict[str, Any],
    user: str | None = None,
    job_name: str | None = None,
    log: bool = False,
    event: str | None = None,
) -> Any:
    """Run ``method(**kwargs)`` inside ``site``; the function every bgcore job calls.

    The call runs in the site's transaction: committed when it returns, rolled
    back when it raises, retried on transient database errors. A failure (and,
    with ``log=True``, a success) is recorded in the site's job log.
    """
    bench = _serving.get() or Bench.find()
    job = get_current_job()
    job_id = job.id if job is not None else None
    with site_context(bench, site, user=user, job_id=job_id) as ctx:
        if event:
            record_start(bench, ctx.config, job_id, event)
        with recording(ctx, job, method, always=log, event=event, also=recorder(ctx.config, job_id, event)):
            check_app_installed(method, site, ctx.config.installed_apps)
            function = resolve(method)
            logger.info("running site=%s job=%s method=%s", site, job_id, method)
            result = run_in_transaction(ctx, function, kwargs)
    return _storable(result)


def _storable(result: Any) -> Any:
    """The result if RQ can store it as JSON, else its ``repr`` (the job still succeeded)."""
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        return repr(result)
    return result


def make_worker(bench: Bench, queues: str | None = None) -> Worker:
    """An RQ worker over ``queues`` (``"a,b"``, priority order; ``None`` = every queue)."""
    specs = parse_queue_list(bench.queues, queues)
    ping(bench)
    return Worker(
        [rq_queue(bench, spec.name) for spec in specs],
        connection=bench.redis(),
        serializer=SERIALIZER,
        work_horse_killed_handler=partial(_horse_killed, bench),
        exception_handlers=[partial(_abandoned, bench)],
    )


def _abandoned(bench: Bench, job: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ exception handler: a job RQ's cleanup finds abandoned (its whole worker died) gets its job-log row.

    Every other exception is the job's own and was logged by :func:`execute_job`
    already. Returns None, so RQ's other handlers still run.
    """
    if not (isinstance(exc_type, type) and issubclass(exc_type, AbandonedJobError)):
        return
    message = "AbandonedJobError: the worker running this job died before it finished (found by RQ's cleanup)"
    try:
        if log_lost_run(bench, job, message, datetime.now(timezone.utc)):
            logger.error("abandoned job site=%s job=%s; failure written to the job log", job.kwargs.get("site"), job.id)
    except Exception:  # RQ's cleanup must go on
        logger.exception("job log for abandoned job not written job=%s", getattr(job, "id", None))


def _horse_killed(bench: Bench, job: Any, retpid: int, ret_val: int, rusage: Any) -> None:
    """RQ's hook when a work-horse died without finishing (SIGKILL, OOM): write its job-log row.

    Runs in the worker's parent process, before RQ marks the job failed; the
    horse could not write the row itself. Never raises (RQ must still fail the job).
    """
    how = f"signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else f"exit status {ret_val}"
    message = (f"WorkHorseKilled: the process running this job died ({how}; e.g. killed or out of memory) "
               "before the job could finish")
    try:
        if log_lost_run(bench, job, message, datetime.now(timezone.utc)):
            logger.error("work-horse died site=%s job=%s (%s); failure written to the job log",
                         job.kwargs.get("site"), job.id, how)
    except Exception:  # RQ still has to fail the job
        logger.exception("job log for killed work-horse not written job=%s", getattr(job, "id", None))


def run_worker(bench: Bench, queues: str | None = None, *, burst: bool = False, quiet: bool = False) -> bool:
    """Work on ``queues`` until stopped (or, with ``burst``, until they are empty)."""
    worker = make_worker(bench, queues)
    bench.activate_import_path()
    if quiet:
        logging.getLogger("bgcore").setLevel(logging.WARNING)
    token = _serving.set(bench)
    try:
        return bool(worker.work(burst=burst, logging_level="WARNING" if quiet else "INFO"))
    finally:
        _serving.reset(token)
