"""Shared workers: one pool of work-horses serves every site of a bench.

``bgcore worker [--queue a,b] [--burst] [--pool N]`` runs :class:`bgcore.engine.pool.Pool`:
N long-lived horses that take jobs fairly by site, each job entering its site
through ``bgcore.context.site_context`` (see bgcore.engine and docs/engine.md).

:func:`execute_job` is the function every bgcore job names in RQ's job hash.
The pool does not call it (it runs the same lifecycle directly), but it keeps
a bgcore job runnable by anything that executes RQ jobs, e.g. ``job.perform()``.
"""

from __future__ import annotations

import logging
from typing import Any

from rq import get_current_job

from bgcore.bench import Bench
from bgcore.engine.lifecycle import JobRun, perform, storable
from bgcore.engine.middleware import default_middleware
from bgcore.engine.pool import Pool
from bgcore.keys import queue_of
from bgcore.queues import parse_queue_list

logger = logging.getLogger(__name__)


def execute_job(
    site: str,
    method: str,
    kwargs: dict[str, Any],
    user: str | None = None,
    job_name: str | None = None,
    log: bool = False,
    event: str | None = None,
) -> Any:
    """Run ``method(**kwargs)`` inside ``site`` through the job lifecycle; raise what the job raised.

    The call runs in the site's transaction: committed when it returns, rolled
    back when it raises, retried on transient database errors. A failure (and,
    with ``log=True``, a success) is recorded in the site's job log.
    """
    bench = Bench.find()
    job = get_current_job()
    run = JobRun(bench=bench, job_id=job.id if job is not None else None, site=site, method=method,
                 kwargs=kwargs, user=user, job_name=job_name, log=log, event=event, rq_job=job,
                 queue=queue_of(bench.bench_id, job.origin) if job is not None else None)
    perform(run, default_middleware(bench, timeouts=False))
    if run.error is not None:
        raise run.error
    return storable(run.result)


def run_worker(bench: Bench, queues: str | None = None, *, burst: bool = False, quiet: bool = False,
               pool: int = 1, shutdown_grace: float | None = None) -> bool:
    """Run a pool of ``pool`` horses on ``queues`` (``"a,b"``, priority order; ``None`` = every queue).

    ``shutdown_grace`` overrides the bench's ``shutdown_grace_seconds`` for this pool.
    Returns when stopped (SIGTERM/SIGINT) or, with ``burst``, once the queues are empty:
    True if any job was run.
    """
    specs = parse_queue_list(bench.queues, queues)
    bench.activate_import_path()
    if quiet:
        logging.getLogger("bgcore").setLevel(logging.WARNING)
    return Pool(bench, specs, pool, burst=burst, shutdown_grace=shutdown_grace).run() > 0
