"""Job metrics of a bench: counted by the workers' lifecycle middleware, kept in Redis, read here.

* :func:`throughput` — runs finished and failed per minute and queue, for the last hour or two
  (the dashboard's chart).
* :func:`render` — the ``/metrics`` body in the Prometheus text format, and its content type
  (the dashboard mounts it; ``bgcore metrics`` serves it alone).

How the numbers are made: :mod:`bgcore.metrics.middleware` (counting, batched writes),
:mod:`bgcore.metrics.store` (the Redis layout), :mod:`bgcore.metrics.collector` (Prometheus),
:mod:`bgcore.metrics.server` (``bgcore metrics``). See the README's Metrics section.

This module stays light: the workers import the middleware, never ``prometheus_client``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from bgcore.clock import Clock, utcnow
from bgcore.metrics.store import DURATION_BUCKETS, MAX_MINUTES, OUTCOMES, read_throughput

if TYPE_CHECKING:
    from bgcore.bench import Bench

__all__ = ["DURATION_BUCKETS", "MAX_MINUTES", "OUTCOMES", "render", "throughput"]


def throughput(bench: Bench, minutes: int = 60, *, now: datetime | None = None) -> dict[str, list[tuple[int, int, int]]]:
    """``queue -> [(minute_start_epoch_seconds, finished, failed), ...]`` for every queue of the bench.

    The last ``minutes`` minutes (1 to :data:`MAX_MINUTES`) up to and including the one holding
    ``now`` (default: the clock), oldest first, zero-filled. "Failed" counts every run that did
    not finish: failed, timed out, retried later, or lost with its horse. One round trip.
    """
    moment = now or utcnow()
    return read_throughput(bench.redis(), bench.bench_id, list(bench.queues), minutes=minutes,
                           now=moment.timestamp())


def render(bench: Bench, *, clock: Clock = utcnow) -> tuple[bytes, str]:
    """The bench's metrics in the Prometheus text format, and the HTTP content type to serve them with.

    Always the classic text format, never OpenMetrics: there, the counter ``bgcore_jobs_total``
    would be the family ``bgcore_jobs``, the name of the jobs gauge.
    """
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    from bgcore.metrics.collector import registry

    return generate_latest(registry(bench, clock=clock)), CONTENT_TYPE_LATEST
