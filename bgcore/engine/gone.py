"""Workers that died and were forgotten: a short memory of them, so ``bgcore doctor`` can say so.

When :func:`bgcore.engine.recovery.recover_dead_workers` settles the jobs of a
dead horse (its registration lapsed, or its pid is gone on this host) it
removes every record of that horse. Without a trace, a host that died would
simply vanish from ``bgcore doctor``. So recovery also writes one field of the
hash ``keys.bench_workers_gone`` per horse it forgot (its host, its queues,
when it was found dead, how many jobs it settled), and doctor lists those as
``gone`` for :data:`KEEP_SECONDS`; older entries are dropped by the next write.
A horse that exits on purpose (recycled, stopped) or that its own pool saw die
is not written here: its pool forgets it and, for a crash, fails its job itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bgcore import keys
from bgcore.host import host_of_worker

KEEP_SECONDS = 3600.0


@dataclass(frozen=True)
class GoneWorker:
    """A horse recovery found dead and forgot, at ``found`` (epoch seconds)."""

    name: str
    host: str
    queues: tuple[str, ...]  # bench queue names (empty when its record had already lapsed)
    found: float
    jobs_settled: int


def remember(redis: Any, bench_id: str, name: str, *, hostname: str | None, queues: Sequence[str], found: float,
             jobs_settled: int) -> None:
    """Record that horse ``name`` was found dead at ``found``; drop entries older than :data:`KEEP_SECONDS`."""
    key = keys.bench_workers_gone(bench_id)
    entry = {"host": hostname or host_of_worker(name), "queues": list(queues), "found": found,
             "jobs_settled": jobs_settled}
    old = [g.name for g in _entries(redis, bench_id) if found - g.found > KEEP_SECONDS]
    with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, name, json.dumps(entry))
        if old:
            pipe.hdel(key, *old)
        pipe.execute()


def recent(redis: Any, bench_id: str, *, now: float) -> list[GoneWorker]:
    """The horses forgot within :data:`KEEP_SECONDS` before ``now``, by host and name."""
    found = [g for g in _entries(redis, bench_id) if now - g.found <= KEEP_SECONDS]
    return sorted(found, key=lambda g: (g.host, g.name))


def _entries(redis: Any, bench_id: str) -> list[GoneWorker]:
    found = []
    for raw_name, raw in redis.hgetall(keys.bench_workers_gone(bench_id)).items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        try:
            data = json.loads(raw)
            found.append(GoneWorker(name=name, host=str(data["host"]), queues=tuple(str(q) for q in data["queues"]),
                                    found=float(data["found"]), jobs_settled=int(data["jobs_settled"])))
        except (ValueError, KeyError, TypeError):  # not written by this version: ignore it
            continue
    return found
