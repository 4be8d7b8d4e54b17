"""The Prometheus view of a bench: a custom collector that reads the bench's Redis at scrape time.

Nothing is kept in the scraping process: every scrape reads the totals the workers
added up in Redis (:mod:`bgcore.metrics.store`) and the queue, worker and scheduler
state through the same functions ``bgcore doctor`` uses, in a fixed number of round
trips (about ten, whatever the number of jobs or sites). Only the names of the bench's
own keys are read, so two benches on one Redis never see each other's numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from rq.utils import as_text

from bgcore import keys
from bgcore.bench import Bench
from bgcore.clock import Clock, utcnow
from bgcore.doctor import _workers_per_queue
from bgcore.errors import ConfigError
from bgcore.metrics.store import queue_stats
from bgcore.rqbridge import broker
from bgcore.scheduler import presence
from bgcore.scheduler.lease import current_holder, lease_seconds

SITE_LABELS_KEY = "metrics_site_labels"
JOB_STATES = ("queued", "running", "scheduled", "failed")


def site_labels_enabled(bench: Bench) -> bool:
    """The bench config's ``metrics_site_labels`` (default false), checked to be true or false."""
    value = bench.common_config.get(SITE_LABELS_KEY, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{bench.sites_path / 'common_site_config.json'}: {SITE_LABELS_KEY} must be true or "
                          f"false, found {value!r}")
    return value


class BenchCollector(Collector):
    """Collects the bench's metrics from Redis each time it is asked (``collect``)."""

    def __init__(self, bench: Bench, *, clock: Clock = utcnow) -> None:
        self.bench = bench
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        bench, redis = self.bench, self.bench.redis()
        queues = list(bench.queues)
        per_site = site_labels_enabled(bench)
        now = self.clock()
        depths = {q: broker(bench).depths(q) for q in queues}  # one script call per queue
        counts = _registry_counts(redis, bench.bench_id, queues, with_failed_ids=per_site)
        yield _jobs(queues, depths, counts)
        yield from _totals(redis, bench.bench_id, queues)
        workers = _workers_per_queue(bench)
        gauge = GaugeMetricFamily("bgcore_workers", "Live work-horses serving the queue (this bench).",
                                  labels=["queue"])
        for q in queues:
            gauge.add_metric([q], workers.get(keys.queue_name(bench.bench_id, q), 0))
        yield gauge
        yield from _scheduler(bench, redis, now)
        if per_site:
            yield _sites(bench, depths, counts["failed_ids"])


def _registry_counts(redis: Any, bench_id: str, queues: list[str], *, with_failed_ids: bool) -> dict[str, Any]:
    """Running, failed and scheduled counts per queue (and the failed ids, for per-site counts): one round trip."""
    with redis.pipeline(transaction=False) as pipe:
        for q in queues:
            rq_name = keys.queue_name(bench_id, q)
            pipe.zcard(keys.started_registry(rq_name))
            pipe.zcard(keys.failed_registry(rq_name))
            pipe.zcard(keys.queue_scheduled(bench_id, q))
            if with_failed_ids:
                pipe.zrange(keys.failed_registry(rq_name), 0, -1)
        found = pipe.execute()
    step = 4 if with_failed_ids else 3
    rows = [found[i:i + step] for i in range(0, len(found), step)]
    return {
        "running": {q: int(r[0]) for q, r in zip(queues, rows)},
        "failed": {q: int(r[1]) for q, r in zip(queues, rows)},
        "scheduled": {q: int(r[2]) for q, r in zip(queues, rows)},
        "failed_ids": [as_text(i) for r in rows for i in (r[3] if with_failed_ids else [])],
    }


def _jobs(queues: list[str], depths: dict[str, dict[str, int]], counts: dict[str, Any]) -> Metric:
    gauge = GaugeMetricFamily("bgcore_jobs", "Jobs of the queue by state (queued, running, scheduled, failed).",
                              labels=["queue", "state"])
    for q in queues:
        gauge.add_metric([q, "queued"], sum(depths[q].values()))
        for state in ("running", "scheduled", "failed"):
            gauge.add_metric([q, state], counts[state][q])
    return gauge


def _totals(redis: Any, bench_id: str, queues: list[str]) -> Iterator[Metric]:
    stats = queue_stats(redis, bench_id, queues)
    total = CounterMetricFamily("bgcore_jobs", "Job runs ended, by outcome (finished, failed, timeout, retried, "
                                "lost), since the bench's Redis was created.", labels=["queue", "outcome"])
    hist = HistogramMetricFamily("bgcore_job_duration_seconds", "Run time of jobs (taken to ended, site entry "
                                 "and commit included); jobs whose horse died are not in it.", labels=["queue"])
    for s in stats:
        for outcome, n in s.outcomes.items():
            total.add_metric([s.queue, outcome], n)
        hist.add_metric([s.queue], buckets=[("+Inf" if b == float("inf") else f"{b:g}", n) for b, n in s.buckets],
                        sum_value=s.duration_sum)
    yield total
    yield hist


def _scheduler(bench: Bench, redis: Any, now: datetime) -> Iterator[Metric]:
    leader = current_holder(redis, bench.bench_id)
    yield GaugeMetricFamily("bgcore_scheduler_leader", "1 while a scheduler daemon holds the bench's lease, else 0.",
                            value=1 if leader else 0)
    daemons = presence.alive(redis, bench.bench_id, now=now, lease_seconds=lease_seconds(bench.common_config))
    last_tick = next((d.last_tick for d in daemons if d.holder == leader), None)
    last = GaugeMetricFamily("bgcore_scheduler_last_tick_timestamp_seconds",
                             "When the leading scheduler last ticked (epoch seconds; absent before its first tick).")
    lag = GaugeMetricFamily("bgcore_scheduler_tick_lag_seconds",
                            "Seconds since the leading scheduler's last tick, as of this scrape (absent when no "
                            "daemon leads or it has not ticked); above the tick interval, ticks are late.")
    if last_tick is not None:
        last.add_metric([], last_tick.timestamp())
        lag.add_metric([], max(0.0, (now - last_tick).total_seconds()))
    yield last
    yield lag


def _sites(bench: Bench, depths: dict[str, dict[str, int]], failed_ids: list[str]) -> Metric:
    """Per-site queued and failed jobs (all queues together): 2 series per site of the bench."""
    queued: Counter[str] = Counter()
    for by_site in depths.values():
        queued.update(by_site)
    failed = Counter(site for site in (keys.site_of_job(i) for i in failed_ids) if site is not None)
    gauge = GaugeMetricFamily("bgcore_site_jobs", "Jobs of the site (every queue) by state: queued, failed. Only "
                              "with metrics_site_labels; 2 series per site.", labels=["site", "state"])
    for site in sorted(set(bench.site_names()) | set(queued) | set(failed)):
        gauge.add_metric([site, "queued"], queued.get(site, 0))
        gauge.add_metric([site, "failed"], failed.get(site, 0))
    return gauge


def registry(bench: Bench, *, clock: Clock = utcnow) -> CollectorRegistry:
    """A registry holding only the bench's collector (no process metrics of the scraping process)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(BenchCollector(bench, clock=clock))
    return found
