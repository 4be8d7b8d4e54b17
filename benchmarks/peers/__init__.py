"""Task modules of the peer systems that ``benchmarks.workers`` compares bgcore with.

Every module reads the benchmark's private Redis from ``$BENCH_REDIS`` when it
is imported (in the benchmark process that enqueues and in the workers it
starts). A peer's no-op task does one thing: ``INCR bench:done``, so the
benchmark can count completions of systems that keep no registry.
"""

from __future__ import annotations

import os

import redis

REDIS_ENV = "BENCH_REDIS"
DONE_KEY = "bench:done"

_clients: dict[int, redis.Redis] = {}


def redis_url() -> str:
    """The benchmark's Redis URL, from ``$BENCH_REDIS``."""
    url = os.environ.get(REDIS_ENV)
    if not url:
        raise RuntimeError(f"${REDIS_ENV} is not set: these task modules are run by `python -m benchmarks.workers`")
    return url


def client() -> redis.Redis:
    """A Redis client for this process (a forked child gets its own)."""
    pid = os.getpid()
    found = _clients.get(pid)
    if found is None:
        found = _clients[pid] = redis.Redis.from_url(redis_url())
    return found


def count_done() -> None:
    """What every peer's no-op task does: count itself done (one ``INCR``)."""
    client().incr(DONE_KEY)
