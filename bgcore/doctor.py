"""``bgcore doctor``: the health of a bench at a glance.

Is Redis reachable, how many workers of this bench are alive per queue, how
deep each queue is, how many jobs failed, and which sites have a problem: a
broken config, a database that is unreachable or not migrated, or hooks that
changed since the last ``bgcore migrate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import socket
from typing import Any

from redis import RedisError
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from bgcore import keys
from bgcore.bench import Bench
from bgcore.connection import redis_url
from bgcore.errors import BgcoreError
from bgcore.queues import DEFAULT_TIMEOUTS
from bgcore.rqbridge import SERIALIZER, broker, rq_queue
from bgcore.scheduler.overlap import worker_alive


@dataclass
class QueueHealth:
    name: str
    workers: int
    queued: int
    started: int
    failed: int


@dataclass
class DoctorReport:
    redis_url: str
    redis_ok: bool
    redis_error: str = ""
    queues: list[QueueHealth] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.redis_ok and not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


def diagnose(bench: Bench) -> DoctorReport:
    """Collect the bench's health; never raises for a problem it can report."""
    try:
        url = redis_url(bench)
    except BgcoreError as exc:
        return DoctorReport(redis_url="(none)", redis_ok=False, redis_error=str(exc), problems=_site_problems(bench))
    report = DoctorReport(redis_url=url, redis_ok=True)
    try:
        queues = [rq_queue(bench, name) for name in bench.queues]
    except BgcoreError as exc:  # a broken 'workers' key: report it, look at the default queues
        report.problems.append(str(exc))
        queues = [Queue(keys.queue_name(bench.bench_id, name), connection=bench.redis(), serializer=SERIALIZER)
                  for name in DEFAULT_TIMEOUTS]
    try:
        connection = bench.redis()
        connection.ping()
        workers_per_queue = _workers_per_queue(bench)
        for queue in queues:
            name = keys.queue_of(bench.bench_id, queue.name) or queue.name
            report.queues.append(QueueHealth(
                name=name,
                workers=workers_per_queue.get(queue.name, 0),
                queued=broker(bench).depth(name),
                started=StartedJobRegistry(queue=queue).get_job_count(cleanup=False),
                failed=FailedJobRegistry(queue=queue).get_job_count(cleanup=False),
            ))
    except RedisError as exc:
        report.redis_ok = False
        report.redis_error = str(exc)
    report.problems.extend(_site_problems(bench))
    return report


def _workers_per_queue(bench: Bench) -> dict[str, int]:
    """Live workers (pool horses) of this bench only, counted per RQ queue name.

    A registration outlives a killed worker until its TTL expires; on this host
    the pids of the horse and of its pool parent tell at once whether it still serves.
    """
    prefix = keys.queue_prefix(bench.bench_id)
    this_host = socket.gethostname()
    redis = bench.redis()
    names = sorted(_text(n) for n in redis.smembers(keys.RQ_WORKERS))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(name, ["pid", "hostname", "pool_pid", "queues"])
        records = pipe.execute()
    counts: dict[str, int] = {}
    for pid, hostname, pool_pid, queues in ((_text(v) if v is not None else None for v in r) for r in records):
        if not worker_alive(pid, hostname, this_host=this_host):
            continue
        if pool_pid and not worker_alive(pool_pid, hostname, this_host=this_host):
            continue  # its pool parent is gone: the horse is only finishing its last job
        for name in (queues or "").split(","):
            if name.startswith(prefix):
                counts[name] = counts.get(name, 0) + 1
    return counts


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _site_problems(bench: Bench) -> list[str]:
    """One line per site problem, then one per app whose hooks are stale (one registry read per site)."""
    from bgcore.scheduler.loader import read_registry
    from bgcore.scheduler.watch import current_fingerprints, find_stale

    problems = []
    stored: dict[str, dict[str, str]] = {}
    installed: dict[str, tuple[str, ...]] = {}
    bench.activate_import_path()
    for site in bench.site_names():
        try:
            config = bench.site_config(site)
            apps = config.installed_apps
            stored[site] = read_registry(bench, config)[1]
            installed[site] = apps
        except BgcoreError as exc:
            message = str(exc)
            problems.append(message if site in message else f"site {site}: {message}")
    for name in bench.misnamed_sites():
        problems.append(f"sites/{name} has a site_config.json but {name!r} is not a valid site name, so it is "
                        "never served; rename it to a host-like name such as 'a.example.com'")
    paths, prints = current_fingerprints({app for apps in installed.values() for app in apps})
    problems.extend(stale.message() for stale in find_stale(paths, prints, stored, installed))
    return problems
