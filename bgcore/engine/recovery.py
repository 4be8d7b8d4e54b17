"""Jobs whose worker is gone: the one module that finds them and settles them.

Every job a horse takes sits on that horse's processing list until its end is
recorded (docs/engine.md), and every horse of a bench is listed in the bench's
worker set with an RQ worker record that its pool renews every
``worker_heartbeat_seconds`` and that lapses after two missed renewals.

* :func:`settle_lost_jobs` — a horse is known to be gone (its pool parent saw it
  die, or :func:`recover_dead_workers` found it): the job it was running fails
  with the reason (or, if its retry policy allows, goes back as a delayed job,
  using an attempt), and gets its job-log row through the ``horse_lost`` hooks;
  a job it had only taken goes back to its queue.
* :func:`recover_dead_workers` — finds horses of the bench whose record lapsed,
  or whose process is gone on this host, and settles their jobs. Every pool runs
  it when it starts and at each heartbeat, so a dead worker's job is found
  within ``3 x worker_heartbeat_seconds`` (at once on the same host). The
  finish is guarded (only a job still ``started`` by that worker is ended), so
  many pools running it at once settle each job once.

Each horse it forgets is remembered for an hour in :mod:`bgcore.engine.gone`,
so ``bgcore doctor`` can list a dead host's workers as gone. ``bgcore doctor`` only reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from functools import partial
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.utils import as_text

from bgcore import keys
from bgcore.bench import Bench
from bgcore.errors import BgcoreError
from bgcore.engine import gone
from bgcore.engine.broker import Broker
from bgcore.engine.lifecycle import LostJob, Middleware, _quietly
from bgcore.host import host_name
from bgcore.retry import Retry, job_policy
from bgcore.rqbridge import SERIALIZER

logger = logging.getLogger(__name__)

Reason = Callable[[Job], tuple[str, str]]  # job -> (status 'failed' | 'timeout', reason)


def settle_lost_jobs(bench: Bench, broker: Broker, worker: str, *, running: str | None, assume_running: bool,
                     reason: Reason, retry_defaults: Mapping[str, Retry | None],
                     middleware: Sequence[Middleware]) -> list[str]:
    """Settle the jobs on dead horse ``worker``'s processing list; return the ids it failed or retried.

    ``running`` is the job the horse was running, when known; with ``assume_running``
    (another host's horse: nobody knows) every job on the list counts as running.
    """
    settled = []
    for job_id in broker.processing(worker):
        try:
            job = Job.fetch(job_id, connection=broker.redis, serializer=SERIALIZER)
        except NoSuchJobError:
            broker.redis.lrem(keys.worker_processing(bench.bench_id, worker), 0, job_id)
            continue
        queue = keys.queue_of(bench.bench_id, job.origin) or ""
        if not assume_running and job_id != running:
            if broker.requeue(worker, job_id, queue):
                logger.info("job site=%s job=%s taken but not started by horse %s: back in queue %s",
                            keys.site_of_job(job_id), job_id, worker, queue)
            continue
        status, why = reason(job)
        started = job.started_at.timestamp() if job.started_at else None
        tries = int(job.number_of_retries or 0)
        policy = job_policy(job.kwargs, retry_defaults.get(queue))
        retry_at = None
        if policy is not None and tries < policy.max:  # a job lost with its horse uses an attempt
            retry_at = broker.clock() + policy.delay(tries + 1)
            status = "retried"
        if broker.finish(worker, job_id, queue, error=why, started=started, retry_at=retry_at,
                         ttl=int(job.failure_ttl) if job.failure_ttl is not None else None):
            logger.error("job site=%s job=%s outcome=%s: %s", keys.site_of_job(job_id), job_id, status, why)
            lost = LostJob(bench, job, status, why, datetime.now(timezone.utc), attempt=tries + 1)
            for m in middleware:
                _quietly(m.horse_lost, lost)
            settled.append(job_id)
    return settled


def dead_workers(redis: Any, bench_id: str, *, this_host: str | None = None) -> list[str]:
    """Horses of the bench whose worker record lapsed, or whose process is gone on this host."""
    from bgcore.scheduler.overlap import worker_alive

    host = this_host or host_name()
    names = sorted(as_text(n) for n in redis.smembers(keys.bench_workers(bench_id)))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(keys.rq_worker(name), ["pid", "hostname"])
        records = pipe.execute()
    return [name for name, (pid, hostname) in zip(names, records)
            if not worker_alive(as_text(pid) if pid else None, as_text(hostname) if hostname else None, this_host=host)]


def recover_dead_workers(bench: Bench, broker: Broker, *, retry_defaults: Mapping[str, Retry | None],
                         middleware: Sequence[Middleware], this_host: str | None = None,
                         skip: Collection[str] = ()) -> list[str]:
    """Settle the jobs of every dead horse of the bench and forget those horses; return the jobs settled.

    ``skip``: horses the caller supervises itself (a pool knows better why its own horse died).
    """
    settled = []
    for name in dead_workers(broker.redis, bench.bench_id, this_host=this_host):
        if name in skip:
            continue
        jobs = settle_lost_jobs(bench, broker, name, running=None, assume_running=True,
                                reason=partial(_died, name), retry_defaults=retry_defaults, middleware=middleware)
        settled += jobs
        rq_queues, hostname = _record_of(broker.redis, name, _rq_queue_names(bench))
        gone.remember(broker.redis, bench.bench_id, name, hostname=hostname, found=broker.clock(),
                      queues=[q for q in (keys.queue_of(bench.bench_id, n) for n in rq_queues) if q],
                      jobs_settled=len(jobs))
        forget(broker.redis, name, bench.bench_id, rq_queues)
    return settled


def _died(worker: str, job: Job) -> tuple[str, str]:
    return "failed", (f"WorkerDied: worker {worker} died while running this job (its process is gone, or it "
                      "stopped renewing its registration)")


def _rq_queue_names(bench: Bench) -> list[str]:
    try:
        return [keys.queue_name(bench.bench_id, q) for q in bench.queues]
    except BgcoreError:  # 'workers' broken by a hand edit: the pool's heartbeat says so elsewhere
        return []


def _record_of(redis: Any, worker: str, rq_queue_names: Sequence[str]) -> tuple[list[str], str | None]:
    """The RQ queue names and the hostname of horse ``worker``.

    From its record; once that lapsed, the queues from the per-queue worker sets it joined when it
    registered (of ``rq_queue_names``), so that forgetting it leaves none of its memberships behind.
    """
    raw, hostname = redis.hmget(keys.rq_worker(worker), ["queues", "hostname"])
    if raw:
        return [q for q in as_text(raw).split(",") if q], (as_text(hostname) if hostname else None)
    with redis.pipeline(transaction=False) as pipe:
        for rq_name in rq_queue_names:
            pipe.sismember(keys.rq_queue_workers(rq_name), keys.rq_worker(worker))
        member = pipe.execute()
    return [rq_name for rq_name, yes in zip(rq_queue_names, member) if yes], None


def forget(redis: Any, worker: str, bench_id: str, rq_queue_names: Iterable[str]) -> None:
    """Remove horse ``worker``'s records: its RQ worker record, its processing list, its set memberships."""
    with redis.pipeline() as pipe:
        pipe.delete(keys.rq_worker(worker), keys.worker_processing(bench_id, worker))
        pipe.srem(keys.RQ_WORKERS, keys.rq_worker(worker))
        pipe.srem(keys.bench_workers(bench_id), worker)
        for rq_name in rq_queue_names:
            pipe.srem(keys.rq_queue_workers(rq_name), keys.rq_worker(worker))
        pipe.execute()

