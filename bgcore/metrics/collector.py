"""The Prometheus view of a bench: a custom collector that reads the bench's Redis at scrape time.

Nothing is kept in the scraping process: every scrape reads the totals the workers
added up in Redis (:mod:`bgcore.metrics.store`) and the queue, worker and scheduler
state through the read models the dashboard and the CLI use (:mod:`bgcore.views`),
in a fixed number of round trips (six; seven with ``metrics_site_labels``), whatever
the number of jobs or sites. Only the bench's own keys are read, so two benches on
one Redis never see each other's numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from bgcore.bench import Bench
from bgcore.clock import Clock, utcnow
from bgcore.metrics.store import queue_stats
from bgcore.views.queues import QueueCounts, queue_counts
from bgcore.views.scheduler import SchedulerView, scheduler_view
from bgcore.views.sites import failed_per_site
from bgcore.views.workers import live_workers, per_queue

SITE_LABELS_KEY = "metrics_site_labels"
JOB_STATES = ("queued", "running", "scheduled", "failed")


def site_labels_enabled(bench: Bench) -> bool:
    """The bench config's ``metrics_site_labels`` (default false), checked by the schema."""
    return bool(bench.settings.get(SITE_LABELS_KEY))


class BenchCollector(Collector):
    """Collects the bench's metrics from Redis each time it is asked (``collect``)."""

    def __init__(self, bench: Bench, *, clock: Clock = utcnow) -> None:
        self.bench = bench
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        bench = self.bench
        per_site = site_labels_enabled(bench)
        now = self.clock()
        counts = queue_counts(bench)  # one round trip
        yield _jobs(counts)
        yield from _totals(bench.redis(), bench.bench_id, [c.name for c in counts])
        workers = per_queue(live_workers(bench, now))
        gauge = GaugeMetricFamily("bgcore_workers", "Live work-horses serving the queue (this bench).",
                                  labels=["queue"])
        for c in counts:
            gauge.add_metric([c.name], workers.get(c.name, 0))
        yield gauge
        yield from _scheduler(scheduler_view(bench, now))
        if per_site:
            yield _sites(bench, counts)


def _jobs(counts: list[QueueCounts]) -> Metric:
    gauge = GaugeMetricFamily("bgcore_jobs", "Jobs of the queue by state (queued, running, scheduled, failed).",
                              labels=["queue", "state"])
    for c in counts:
        for state in JOB_STATES:
            gauge.add_metric([c.name, state], getattr(c, state))
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


def _scheduler(view: SchedulerView) -> Iterator[Metric]:
    yield GaugeMetricFamily("bgcore_scheduler_leader", "1 while a scheduler daemon holds the bench's lease, else 0.",
                            value=1 if view.leader else 0)
    last = GaugeMetricFamily("bgcore_scheduler_last_tick_timestamp_seconds",
                             "When the leading scheduler last ticked (epoch seconds; absent before its first tick).")
    lag = GaugeMetricFamily("bgcore_scheduler_tick_lag_seconds",
                            "Seconds since the leading scheduler's last tick, as of this scrape (absent when no "
                            "daemon leads or it has not ticked); above the tick interval, ticks are late.")
    if view.last_tick is not None and view.lag_seconds is not None:
        last.add_metric([], view.last_tick.timestamp())
        lag.add_metric([], view.lag_seconds)
    yield last
    yield lag


def _sites(bench: Bench, counts: list[QueueCounts]) -> Metric:
    """Per-site queued and failed jobs (all queues together): 2 series per site of the bench."""
    queued: Counter[str] = Counter()
    for c in counts:
        queued.update(c.per_site)
    names = sorted(set(bench.site_names()) | set(queued))
    failed = failed_per_site(bench, names)  # one script call over the sites' failed indexes
    gauge = GaugeMetricFamily("bgcore_site_jobs", "Jobs of the site (every queue) by state: queued, failed. Only "
                              "with metrics_site_labels; 2 series per site.", labels=["site", "state"])
    for site in names:
        gauge.add_metric([site, "queued"], queued.get(site, 0))
        gauge.add_metric([site, "failed"], failed.get(site, 0))
    return gauge


def registry(bench: Bench, *, clock: Clock = utcnow) -> CollectorRegistry:
    """A registry holding only the bench's collector (no process metrics of the scraping process)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(BenchCollector(bench, clock=clock))
    return found
