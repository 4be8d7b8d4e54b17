"""RQ objects for a bench, sharing one JSON serializer, and the bench's :class:`Broker`.

Both are cached on the bench object, so the enqueue hot path builds nothing.
RQ ``Queue`` objects only build jobs (``create_job``) and name registries; the
queued jobs themselves live in bgcore's per-site lists (docs/engine.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rq import Queue
from rq.serializers import JSONSerializer

from bgcore import keys

if TYPE_CHECKING:
    from bgcore.bench import Bench
    from bgcore.engine.broker import Broker

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


def broker(bench: Bench) -> Broker:
    """The bench's take/finish protocol over its Redis (one per Bench object; see bgcore.engine.broker)."""
    found: Broker | None = bench.__dict__.get("_broker")
    if found is None:
        from bgcore.connection import wait_replicas
        from bgcore.engine.broker import Broker

        found = bench.__dict__["_broker"] = Broker(bench.redis(), bench.bench_id, wait_replicas=wait_replicas(bench))
    return found
