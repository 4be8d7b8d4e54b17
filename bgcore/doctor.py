"""``bgcore doctor``: the health of a bench at a glance.

Is Redis reachable, how many workers of this bench are alive per queue, how
deep each queue is and how old its oldest job, how many jobs failed, which
scheduler daemon leads (its last tick) and which stand by, and which sites have
a problem: a broken config, a database that is unreachable or not migrated, or
hooks that changed since the last ``bgcore migrate``.

Unhealthy (each reason one line of ``problems``): any site problem, a queue
that holds jobs but has no live worker, no scheduler leader while a site's
scheduler is enabled, a queued job older than ``doctor_max_queue_age_seconds``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
import socket
from typing import Any

from redis import RedisError
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.utils import as_text

from bgcore import keys
from bgcore.bench import Bench
from bgcore.clock import utcnow
from bgcore.connection import explain, redact, target
from bgcore.errors import BgcoreError, ConfigError
from bgcore.queues import DEFAULT_TIMEOUTS
from bgcore.rqbridge import SERIALIZER, broker, rq_queue
from bgcore.scheduler import presence
from bgcore.scheduler.lease import current_holder, lease_seconds
from bgcore.scheduler.overlap import worker_alive
from bgcore.scheduler.switches import blocking_switch

DEFAULT_MAX_QUEUE_AGE_SECONDS = 600.0
HEADS_PER_SITE = 10  # ids read from the head of each site's list to find its oldest job (at_front pushes left)


@dataclass
class QueueHealth:
    name: str
    workers: int
    queued: int
    started: int
    failed: int
    oldest_enqueued_at: datetime | None = None


@dataclass
class SchedulerHealth:
    """Who leads the bench's scheduler, its last tick, and the daemons standing by."""

    leader: str | None
    last_tick: datetime | None
    standbys: list[str] = field(default_factory=list)
    enabled_sites: int = 0


@dataclass
class DoctorReport:
    redis_url: str  # as bgcore.connection.describe shows it: a URL without its password, or the Sentinel service
    redis_ok: bool
    redis_error: str = ""
    queues: list[QueueHealth] = field(default_factory=list)
    scheduler: SchedulerHealth | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.redis_ok and not self.problems

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["healthy"] = self.healthy
        return data


def diagnose(bench: Bench, now: datetime | None = None) -> DoctorReport:
    """Collect the bench's health at ``now`` (default: the clock); never raises for a problem it can report."""
    now = now or utcnow()
    try:
        found = target(bench)
    except BgcoreError as exc:
        return DoctorReport(redis_url="(none)", redis_ok=False, redis_error=redact(str(exc)),
                            problems=_site_problems(bench))
    report = DoctorReport(redis_url=found.describe(), redis_ok=True)
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
            depths = broker(bench).depths(name)
            report.queues.append(QueueHealth(
                name=name,
                workers=workers_per_queue.get(queue.name, 0),
                queued=sum(depths.values()),
                started=StartedJobRegistry(queue=queue).get_job_count(cleanup=False),
                failed=FailedJobRegistry(queue=queue).get_job_count(cleanup=False),
                oldest_enqueued_at=_oldest_enqueued(bench, name, list(depths)),
            ))
        report.scheduler = _scheduler_health(bench, now, report.problems)
    except RedisError as exc:
        report.redis_ok = False
        report.redis_error = explain(exc, found.describe(), tls=found.tls)
    if report.redis_ok:
        report.problems.extend(_queue_problems(bench, report.queues, now))
    report.problems.extend(_site_problems(bench))
    return report


def max_queue_age(bench: Bench) -> float:
    """``doctor_max_queue_age_seconds`` of the bench (default 600), checked to be a positive number."""
    value = bench.common_config.get("doctor_max_queue_age_seconds", DEFAULT_MAX_QUEUE_AGE_SECONDS)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"common_site_config.json: doctor_max_queue_age_seconds must be a positive number "
                          f"of seconds, found {value!r}")
    return float(value)


def _queue_problems(bench: Bench, queues: list[QueueHealth], now: datetime) -> list[str]:
    """A queue with jobs and no live worker; a queue whose oldest job waited too long."""
    problems = []
    try:
        limit: float | None = max_queue_age(bench)
    except ConfigError as exc:
        problems.append(str(exc))
        limit = None
    for queue in queues:
        if queue.queued and not queue.workers:
            problems.append(f"queue {queue.name!r} holds {queue.queued} job(s) but no live worker serves it; "
                            f"start one ('bgcore worker --queue {queue.name}', or 'bgcore start')")
        if limit is not None and queue.oldest_enqueued_at is not None:
            age = (now - queue.oldest_enqueued_at).total_seconds()
            if age > limit:
                problems.append(
                    f"queue {queue.name!r}: its oldest job has waited {age:.0f}s, more than "
                    f"doctor_max_queue_age_seconds={limit:g}; add workers for it or find what blocks them")
    return problems


def _oldest_enqueued(bench: Bench, queue: str, sites: list[str]) -> datetime | None:
    """The earliest ``enqueued_at`` among the first jobs of each site's list of ``queue`` (two round trips)."""
    if not sites:
        return None
    redis = bench.redis()
    with redis.pipeline(transaction=False) as pipe:
        for site in sites:
            pipe.lrange(keys.site_queue(bench.bench_id, queue, site), 0, HEADS_PER_SITE - 1)
        ids = [as_text(i) for head in pipe.execute() for i in head]
    with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(keys.rq_job(job_id), "enqueued_at")
        stamps = [_parse_time(v) for v in pipe.execute()]
    found = [t for t in stamps if t is not None]
    return min(found) if found else None


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(as_text(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _scheduler_health(bench: Bench, now: datetime, problems: list[str]) -> SchedulerHealth:
    """The lease holder, its last tick, the standbys; a problem when no one leads an enabled site."""
    redis = bench.redis()
    try:
        lease = lease_seconds(bench.common_config)
    except ConfigError as exc:
        problems.append(str(exc))
        lease = 15.0
    leader = current_holder(redis, bench.bench_id)
    daemons = presence.alive(redis, bench.bench_id, now=now, lease_seconds=lease)
    last_tick = next((d.last_tick for d in daemons if d.holder == leader), None)
    standbys = [d.holder for d in daemons if d.holder != leader]
    enabled = _enabled_sites(bench)
    if leader is None and enabled:
        shown = ", ".join(enabled[:5]) + (f" and {len(enabled) - 5} more" if len(enabled) > 5 else "")
        problems.append(f"no scheduler leads this bench (nobody holds the lease) although {len(enabled)} site(s) "
                        f"have the scheduler enabled ({shown}); run 'bgcore schedule' or 'bgcore start'")
    return SchedulerHealth(leader=leader, last_tick=last_tick, standbys=standbys, enabled_sites=len(enabled))


def _enabled_sites(bench: Bench) -> list[str]:
    """Sites whose config loads and whose scheduler no switch stops (broken ones are site problems)."""
    enabled = []
    for site in bench.site_names():
        try:
            if blocking_switch(bench.site_config(site)) is None:
                enabled.append(site)
        except BgcoreError:
            continue
    return enabled


def _workers_per_queue(bench: Bench) -> dict[str, int]:
    """Live workers (pool horses) of this bench only, counted per RQ queue name.

    A registration outlives a killed worker until its TTL expires; on this host
    the pids of the horse and of its pool parent tell at once whether it still serves.
    """
    prefix = keys.queue_prefix(bench.bench_id)
    this_host = socket.gethostname()
    redis = bench.redis()
    names = sorted(as_text(n) for n in redis.smembers(keys.RQ_WORKERS))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(name, ["pid", "hostname", "pool_pid", "queues"])
        records = pipe.execute()
    counts: dict[str, int] = {}
    for pid, hostname, pool_pid, queues in ((as_text(v) if v is not None else None for v in r) for r in records):
        if not worker_alive(pid, hostname, this_host=this_host):
            continue
        if pool_pid and not worker_alive(pool_pid, hostname, this_host=this_host):
            continue  # its pool parent is gone: the horse is only finishing its last job
        for name in (queues or "").split(","):
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
            message = str(exc)
            problems.append(message if site in message else f"site {site}: {message}")
    for name in bench.misnamed_sites():
        problems.append(f"sites/{name} has a site_config.json but {name!r} is not a valid site name, so it is "
                        "never served; rename it to a host-like name such as 'a.example.com'")
    paths, prints = current_fingerprints({app for apps in installed.values() for app in apps})
    problems.extend(stale.message() for stale in find_stale(paths, prints, stored, installed))
    return problems
