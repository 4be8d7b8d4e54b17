"""``bgcore doctor``: the health of a bench at a glance.

Is Redis reachable, how many workers of this bench are alive per queue, how
deep each queue is and how old its oldest job, how many jobs failed, which
scheduler daemon leads (its last tick) and which stand by, the workers and
daemons of each host (a dead host's workers marked gone), and which sites have
a problem: a broken config, a database that is unreachable or not migrated, or
hooks that changed since the last ``bgcore migrate``.

Unhealthy (each reason one line of ``problems``): any site problem, a queue
that holds jobs but has no live worker, no scheduler leader while a site's
scheduler is enabled, a queued job older than ``doctor_max_queue_age_seconds``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from redis import RedisError
from rq.utils import as_text

from bgcore import keys
from bgcore.bench import Bench
from bgcore.clock import utcnow
from bgcore.connection import explain, redact, target
from bgcore.errors import BgcoreError, ConfigError
from bgcore.engine import gone
from bgcore.host import host_name, host_of_holder, host_of_worker
from bgcore.queues import DEFAULT_TIMEOUTS
from bgcore.scheduler.overlap import worker_alive
from bgcore.scheduler.switches import blocking_switch
from bgcore.views.queues import queue_counts
from bgcore.views.scheduler import scheduler_view
from bgcore.views.workers import live_workers, per_queue

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
class WorkerHealth:
    """One horse of the bench as doctor sees it: ``live``, or ``gone`` and why."""

    name: str
    host: str
    state: str  # "live" | "gone"
    queues: list[str]
    pid: int | None = None
    why: str = ""


@dataclass
class HostHealth:
    """The bench's workers and scheduler daemons on one host (by its recorded name, see ``bgcore.host``)."""

    host: str
    state: str  # "up": a live worker or daemon; "gone": only dead workers; "partly gone": some of each
    live: int
    gone: int
    queues: list[str]
    scheduler: list[str]  # "leader" / "standby" for each scheduler daemon on the host
    workers: list[WorkerHealth] = field(default_factory=list)


@dataclass
class DoctorReport:
    redis_url: str  # as bgcore.connection.describe shows it: a URL without its password, or the Sentinel service
    redis_ok: bool
    redis_error: str = ""
    queues: list[QueueHealth] = field(default_factory=list)
    scheduler: SchedulerHealth | None = None
    problems: list[str] = field(default_factory=list)
    hosts: list[HostHealth] = field(default_factory=list)

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
        names = list(bench.queues)
    except BgcoreError as exc:  # a broken 'workers' key: report it, look at the default queues
        report.problems.append(str(exc))
        names = list(DEFAULT_TIMEOUTS)
    try:
        bench.redis().ping()
        serving = per_queue(live_workers(bench, now))
        for counts in queue_counts(bench, names):
            report.queues.append(QueueHealth(
                name=counts.name, workers=serving.get(counts.name, 0), queued=counts.queued,
                started=counts.running, failed=counts.failed,
                oldest_enqueued_at=_oldest_enqueued(bench, counts.name, list(counts.per_site)),
            ))
        report.scheduler = _scheduler_health(bench, now, report.problems)
        report.hosts = _hosts(bench, now, report.scheduler)
    except RedisError as exc:
        report.redis_ok = False
        report.redis_error = explain(exc, found.describe(), tls=found.tls)
    if report.redis_ok:
        report.problems.extend(_queue_problems(bench, report.queues, now))
    report.problems.extend(_site_problems(bench))
    return report


def max_queue_age(bench: Bench) -> float:
    """``doctor_max_queue_age_seconds`` of the bench (default 600), checked to be a positive number."""
    value: float = bench.settings.get("doctor_max_queue_age_seconds")
    return value


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
    """The lease holder, its last tick, the standbys (:func:`bgcore.views.scheduler.scheduler_view`);
    a problem when no one leads an enabled site."""
    found = scheduler_view(bench, now)
    problems.extend(found.problems)
    enabled = _enabled_sites(bench)
    if found.leader is None and enabled:
        shown = ", ".join(enabled[:5]) + (f" and {len(enabled) - 5} more" if len(enabled) > 5 else "")
        problems.append(f"no scheduler leads this bench (nobody holds the lease) although {len(enabled)} site(s) "
                        f"have the scheduler enabled ({shown}); run 'bgcore schedule' or 'bgcore start'")
    return SchedulerHealth(leader=found.leader, last_tick=found.last_tick, standbys=found.standbys,
                           enabled_sites=len(enabled))


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


def _hosts(bench: Bench, now: datetime, scheduler: SchedulerHealth) -> list[HostHealth]:
    """The bench's horses and scheduler daemons grouped by host, each horse live or gone.

    A horse is gone once its registration lapsed (its pool stopped renewing it: the
    host or the worker died), at once on this host when its pid or its pool's is gone,
    and for an hour after recovery settled its jobs and forgot it (``bgcore.engine.gone``).
    A remote horse killed a moment ago still counts as live until its registration lapses.
    """
    this_host = host_name()
    redis = bench.redis()
    names = sorted(as_text(n) for n in redis.smembers(keys.bench_workers(bench.bench_id)))
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(keys.rq_worker(name), ["pid", "hostname", "pool_pid", "queues"])
        records = pipe.execute()
    workers = []
    for name, record in zip(names, records):
        pid, hostname, pool_pid, rq_queues = (as_text(v) if v is not None else None for v in record)
        queues = [q for q in (keys.queue_of(bench.bench_id, n) for n in (rq_queues or "").split(",") if n) if q]
        why = ""
        if pid is None and hostname is None:
            why = "its registration lapsed (not renewed by its pool); recovery settles its jobs"
        elif not worker_alive(pid, hostname, this_host=this_host):
            why = "its process is gone"
        elif pool_pid and not worker_alive(pool_pid, hostname, this_host=this_host):
            why = "its pool parent is gone"
        workers.append(WorkerHealth(name=name, host=hostname or host_of_worker(name), state="gone" if why else "live",
                                    queues=queues, pid=int(pid) if pid and pid.isdigit() else None, why=why))
    registered = set(names)
    for dead in gone.recent(redis, bench.bench_id, now=now.timestamp()):
        if dead.name not in registered:
            found = datetime.fromtimestamp(dead.found, now.tzinfo)
            workers.append(WorkerHealth(
                name=dead.name, host=dead.host, state="gone", queues=list(dead.queues),
                why=f"died; recovery settled its {dead.jobs_settled} job(s) and forgot it at "
                    f"{found.isoformat(timespec='seconds')}"))
    daemons = [(scheduler.leader, "leader")] if scheduler.leader else []
    daemons += [(holder, "standby") for holder in scheduler.standbys]
    roles: dict[str, list[str]] = {}
    for holder, role in daemons:
        roles.setdefault(host_of_holder(holder), []).append(role)
    hosts = []
    for host in sorted({w.host for w in workers} | set(roles)):
        mine = [w for w in workers if w.host == host]
        live = sum(1 for w in mine if w.state == "live")
        dead_count = len(mine) - live
        serving = bool(live or roles.get(host))
        state = ("partly gone" if dead_count else "up") if serving else "gone"
        hosts.append(HostHealth(host=host, state=state, live=live, gone=dead_count,
                                queues=sorted({q for w in mine if w.state == "live" for q in w.queues}),
                                scheduler=roles.get(host, []), workers=mine))
    return hosts


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

