"""Which scheduler daemons of a bench are alive: their role and last tick, for ``bgcore doctor``.

Each daemon writes one field of the hash ``keys.scheduler_daemons`` (its
holder name -> ``{"role": "leader"|"standby", "seen": epoch, "last_tick":
epoch|null}``) every time it renews or tries the lease, and removes it when it
stops. An entry not refreshed for :func:`stale_after` seconds belongs to a
daemon that died; readers ignore it and the next writer deletes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bgcore import keys

UTC = timezone.utc


@dataclass(frozen=True)
class DaemonPresence:
    """One live scheduler daemon as it last described itself."""

    holder: str
    role: str
    seen: datetime
    last_tick: datetime | None


def stale_after(lease_seconds: float) -> float:
    """Seconds after which an unrefreshed entry is taken as dead: two renewal periods past the lease."""
    return lease_seconds + 2 * lease_seconds / 3.0


def publish(redis: Any, bench_id: str, holder: str, *, role: str, now: datetime, last_tick: datetime | None,
            lease_seconds: float) -> None:
    """Record that ``holder`` is alive in ``role`` at ``now``; drop entries of daemons that died."""
    key = keys.scheduler_daemons(bench_id)
    entry = {"role": role, "seen": now.timestamp(), "last_tick": last_tick.timestamp() if last_tick else None}
    dead = [p.holder for p in _entries(redis, bench_id) if p.holder != holder
            and (now - p.seen).total_seconds() > stale_after(lease_seconds)]
    with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, holder, json.dumps(entry))
        if dead:
            pipe.hdel(key, *dead)
        pipe.execute()


def withdraw(redis: Any, bench_id: str, holder: str) -> None:
    """Remove ``holder``'s entry (a daemon stopping cleanly)."""
    redis.hdel(keys.scheduler_daemons(bench_id), holder)


def alive(redis: Any, bench_id: str, *, now: datetime, lease_seconds: float) -> list[DaemonPresence]:
    """The daemons that refreshed their entry within :func:`stale_after`, leader first."""
    found = [p for p in _entries(redis, bench_id) if (now - p.seen).total_seconds() <= stale_after(lease_seconds)]
    return sorted(found, key=lambda p: (p.role != "leader", p.holder))


def _entries(redis: Any, bench_id: str) -> list[DaemonPresence]:
    found = []
    for holder, raw in redis.hgetall(keys.scheduler_daemons(bench_id)).items():
        try:
            data = json.loads(raw)
            tick = data.get("last_tick")
            found.append(DaemonPresence(
                holder=holder.decode() if isinstance(holder, bytes) else str(holder), role=str(data["role"]),
                seen=datetime.fromtimestamp(float(data["seen"]), UTC),
                last_tick=datetime.fromtimestamp(float(tick), UTC) if tick is not None else None))
        except (ValueError, KeyError, TypeError):  # not written by this version: ignore it
            continue
    return found
