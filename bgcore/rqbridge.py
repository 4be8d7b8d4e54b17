"""RQ objects for a bench: queues and workers that share one JSON serializer.

Queues are cached on the bench object, so the enqueue hot path builds nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rq import Queue
from rq.serializers import JSONSerializer

from bgcore import keys

if TYPE_CHECKING:
    from bgcore.bench import Bench

SERIALIZER = JSONSerializer


def rq_queue(bench: Bench, name: str) -> Queue:
    """The RQ queue of bench queue ``name`` (the caller has checked the name)."""
    cache: dict[str, Queue] = bench.__dict__.setdefault("_rq_queues", {})
    queue = cache.get(name)
    if queue is None:
        spec = bench.queues[name]
        queue = Queue(
            keys.queue_name(bench.bench_id, name),
            connection=bench.redis(),
            serializer=SERIALIZER,
            default_timeout=spec.timeout,
        )
        cache[name] = queue
    return queue


def all_rq_queues(bench: Bench) -> list[Queue]:
    """Every queue of the bench, in priority order."""
    return [rq_queue(bench, name) for name in bench.queues]
