"""No overlapping runs: an event whose last run is still queued or running waits.

The last run of each event is known from the hash
``keys.scheduler_last_job(bench, site)`` (event id -> RQ job id), written in
the same transaction that enqueued it. A run counts as still going while its
RQ status is queued, started, deferred or scheduled -- unless it is
``started`` by a worker that is gone: then the run is failed here (through
the engine's guarded finish, into RQ's failed registry) so the event is not
blocked forever.

A worker is gone when its registration key has expired (RQ lets it lapse
about ``job_monitoring_interval + 60`` s after the last heartbeat), or at once
when it registered from this host and its pid no longer exists.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.worker import Worker

from bgcore import keys
from bgcore.bench import Bench
from bgcore.host import host_name
from bgcore.processes import pid_alive
from bgcore.rqbridge import SERIALIZER, broker
from bgcore.scheduler.runs import log_lost_run

logger = logging.getLogger(__name__)

PENDING = frozenset({"queued", "started", "deferred", "scheduled"})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def worker_alive(pid: str | None, hostname: str | None, *, this_host: str) -> bool:
    """Liveness from a worker's registration (``pid``/``hostname``; both None = key expired)."""
    if pid is None and hostname is None:
        return False
    if hostname == this_host and pid and pid.isdigit():
        return pid_alive(int(pid))
    return True


def blocked_events(bench: Bench, due: Mapping[str, Iterable[str]], *, now: datetime) -> set[tuple[str, str]]:
    """The ``(site, event_id)`` pairs among ``due`` whose last run is still queued or running.

    Costs three pipelined round trips for the whole batch, whatever its size;
    runs of dead workers found on the way are failed and do not block.
    """
    redis = bench.redis()
    pairs = [(site, event) for site, events in due.items() for event in events]
    if not pairs:
        return set()
    with redis.pipeline(transaction=False) as pipe:
        for site, events in due.items():
            pipe.hmget(keys.scheduler_last_job(bench.bench_id, site), list(events))
        job_ids = [_text(j) for answer in pipe.execute() for j in answer]
    last = [(pair, job_id) for pair, job_id in zip(pairs, job_ids) if job_id]
    if not last:
        return set()
    with redis.pipeline(transaction=False) as pipe:
        for _, job_id in last:
            pipe.hmget(Job.key_for(job_id), ["status", "worker_name"])
        states = [(_text(s), _text(w)) for s, w in pipe.execute()]
    started = [(pair, job_id, worker) for (pair, job_id), (status, worker) in zip(last, states)
               if status == "started" and worker]
    blocked = {pair for (pair, _), (status, _) in zip(last, states) if status in PENDING}
    if started:
        with redis.pipeline(transaction=False) as pipe:
            for _, _, worker in started:
                pipe.hmget(Worker.redis_worker_namespace_prefix + worker, ["pid", "hostname"])
            registrations = pipe.execute()
        this_host = host_name()
        for (pair, job_id, worker), (pid, host) in zip(started, registrations):
            if not worker_alive(_text(pid), _text(host), this_host=this_host):
                fail_abandoned(bench, job_id, worker, now=now)
                blocked.discard(pair)
    return blocked


def fail_abandoned(bench: Bench, job_id: str, worker: str, *, now: datetime) -> None:
    """Mark ``job_id`` (started by dead ``worker``) failed and drop it from the started registry."""
    redis = bench.redis()
    try:
        job = Job.fetch(job_id, connection=redis, serializer=SERIALIZER)
    except NoSuchJobError:
        return
    site = keys.site_of_job(job_id)
    message = f"abandoned: worker {worker} died while running this job (found by the scheduler)"
    queue = keys.queue_of(bench.bench_id, job.origin) or ""
    started = job.started_at.timestamp() if job.started_at else None
    if not broker(bench).finish(worker, job_id, queue, error=message, started=started):
        return  # it ended meanwhile
    logger.error("scheduled run abandoned by a dead worker site=%s job=%s worker=%s; "
                 "marked failed so its event runs again", site, job_id, worker)
    try:
        log_lost_run(bench, job, message, now)
    except Exception as exc:  # noqa: BLE001 - a broken payload or site must not stop the tick
        logger.error("job log for abandoned run not written site=%s job=%s: %s", site, job_id, exc)
