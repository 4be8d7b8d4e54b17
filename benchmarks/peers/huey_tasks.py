"""Huey: a ``RedisHuey`` without result storage, and the no-op task.

Run by ``huey_consumer benchmarks.peers.huey_tasks.huey -k process -w P``.
"""

from __future__ import annotations

from huey import RedisHuey

from benchmarks.peers import count_done, redis_url

huey = RedisHuey("bench", url=redis_url(), results=False)


@huey.task()  # type: ignore[untyped-decorator]
def noop() -> None:
    """The no-op task (plus the completion count)."""
    count_done()
