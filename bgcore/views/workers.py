"""The live workers (pool horses) of a bench, and what each busy one runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bgcore import keys
from bgcore.bench import Bench
from bgcore.jobs import job_label
from bgcore.host import host_name
from bgcore.scheduler.overlap import worker_alive
from bgcore.views.common import payload, rq_time, text


@dataclass(frozen=True)
class WorkerView:
    """One live horse: where it runs, its queues, and its current job (``job_id`` None when idle)."""

    name: str
    host: str
    pid: str
    queues: tuple[str, ...]
    job_id: str | None = None  # the local id, as enqueue printed it
    site: str | None = None
    job: str | None = None  # its name, ``Doctype name.method``, or its method
    started_at: datetime | None = None

    def run_seconds(self, now: datetime) -> float | None:
        return max(0.0, (now - self.started_at).total_seconds()) if self.started_at else None


def live_workers(bench: Bench, now: datetime | None = None) -> list[WorkerView]:
    """The bench's horses whose registration is alive, sorted by name; three pipelined round trips.

    A registration outlives a killed worker until its TTL expires; on this host
    the pids of the horse and of its pool parent tell at once whether it still serves.
    """
    redis = bench.redis()
    this_host = host_name()  # $BGCORE_HOSTNAME, else the machine's name
    names = sorted(text(n) or "" for n in redis.smembers(keys.bench_workers(bench.bench_id)))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(keys.rq_worker(name), ["pid", "hostname", "pool_pid", "queues"])
            pipe.lrange(keys.worker_processing(bench.bench_id, name), 0, 0)
        answers = pipe.execute()
    alive: list[tuple[str, str, str, tuple[str, ...], str | None]] = []
    for index, name in enumerate(names):
        pid, host, pool_pid, queues = (text(v) for v in answers[2 * index])
        if not worker_alive(pid, host, this_host=this_host):
            continue
        if pool_pid and not worker_alive(pool_pid, host, this_host=this_host):
            continue  # its pool parent is gone: the horse is only finishing its last job
        served = tuple(q for q in (keys.queue_of(bench.bench_id, n) for n in (queues or "").split(",")) if q)
        current = answers[2 * index + 1]
        alive.append((name, host or "", pid or "", served, text(current[0]) if current else None))
    busy = [job for *_, job in alive if job]
    with redis.pipeline(transaction=False) as pipe:
        for busy_id in busy:
            pipe.hmget(keys.rq_job(busy_id), ["data", "started_at", "status"])
        jobs = dict(zip(busy, pipe.execute()))
    found = []
    for name, host, pid, served, job_id in alive:
        data, started, status = jobs.get(job_id, (None, None, None)) if job_id else (None, None, None)
        if job_id is None or text(status) != "started":
            found.append(WorkerView(name=name, host=host, pid=pid, queues=served))
            continue
        call = payload(data)
        inner = call.get("kwargs")
        found.append(WorkerView(
            name=name, host=host, pid=pid, queues=served, job_id=keys.local_job_id(job_id),
            site=keys.site_of_job(job_id),
            job=job_label(_str(call.get("method")), _str(call.get("job_name")), inner if isinstance(inner, dict) else None),
            started_at=rq_time(started)))
    return found


def per_queue(workers: list[WorkerView]) -> dict[str, int]:
    """How many live workers serve each queue."""
    counts: dict[str, int] = {}
    for worker in workers:
        for name in worker.queues:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None

