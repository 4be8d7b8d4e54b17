"""``bgcore doctor``: the health of a bench at a glance.

Is Redis reachable, how many workers of this bench are alive per queue, how
deep each queue is, how many jobs failed, and which sites have a problem: a
broken config, a database that is unreachable or not migrated, or hooks that
changed since the last ``bgcore migrate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from redis import RedisError
from rq import Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry

from bgcore import keys
from bgcore.bench import Bench
from bgcore.connection import redis_url
from bgcore.errors import BgcoreError
from bgcore.rqbridge import rq_queue


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
        connection = bench.redis()
        connection.ping()
        workers_per_queue = _workers_per_queue(bench)
        for name in bench.queues:
            queue = rq_queue(bench, name)
            report.queues.append(QueueHealth(
                name=name,
                workers=workers_per_queue.get(queue.name, 0),
                queued=queue.count,
                started=StartedJobRegistry(queue=queue).count,
                failed=FailedJobRegistry(queue=queue).count,
            ))
    except RedisError as exc:
        report.redis_ok = False
        report.redis_error = str(exc)
    report.problems.extend(_site_problems(bench))
    return report


def _workers_per_queue(bench: Bench) -> dict[str, int]:
    """Live workers of this bench only, counted per RQ queue name."""
    prefix = keys.queue_prefix(bench.bench_id)
    counts: dict[str, int] = {}
    for worker in Worker.all(connection=bench.redis()):
        for name in worker.queue_names():
            if name.startswith(prefix):
                counts[name] = counts.get(name, 0) + 1
    return counts


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
            problems.append(f"site {site}: {exc}")
    paths, prints = current_fingerprints({app for apps in installed.values() for app in apps})
    problems.extend(stale.message() for stale in find_stale(paths, prints, stored, installed))
    return problems
