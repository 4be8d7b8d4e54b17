"""Dramatiq: a ``RedisBroker`` with the default middleware, and the no-op actor.

Run by ``dramatiq benchmarks.peers.dramatiq_tasks -p P -t 1``.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peers import count_done, redis_url

broker = RedisBroker(url=redis_url())  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    """The no-op actor (plus the completion count)."""
    count_done()
