"""Who leads a bench's scheduler, its last tick and lag, and the daemons standing by."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bgcore.bench import Bench
from bgcore.errors import ConfigError
from bgcore.scheduler import presence
from bgcore.host import host_of_holder
from bgcore.scheduler.lease import DEFAULT_LEASE_SECONDS, current_holder


@dataclass(frozen=True)
class SchedulerView:
    """The lease holder (``host:pid:uuid``), its host, its last tick and how long ago that was.

    ``lag_seconds`` is the age of the leader's last tick at ``now`` (None before its
    first tick or without a leader): a leader that ticks on time shows at most its
    tick interval; more means ticks run late. ``problems`` holds a broken
    ``scheduler_lease_seconds`` (the default lease is used to judge liveness).
    """

    leader: str | None
    leader_host: str | None
    last_tick: datetime | None
    lag_seconds: float | None
    standbys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def scheduler_view(bench: Bench, now: datetime) -> SchedulerView:
    """The scheduler as the lease and the daemons' presence entries show it (two round trips)."""
    redis = bench.redis()
    problems = []
    try:
        lease = bench.settings.get("scheduler_lease_seconds")
    except ConfigError as exc:
        problems.append(str(exc))
        lease = DEFAULT_LEASE_SECONDS
    leader = current_holder(redis, bench.bench_id)
    daemons = presence.alive(redis, bench.bench_id, now=now, lease_seconds=lease)
    last_tick = next((d.last_tick for d in daemons if d.holder == leader), None)
    return SchedulerView(
        leader=leader, leader_host=host_of_holder(leader) if leader else None, last_tick=last_tick,
        lag_seconds=max(0.0, (now - last_tick).total_seconds()) if last_tick else None,
        # An entry still saying "leader" under another holder's lease is a leader that died (or
        # lost the lease and has not said so yet): it does not stand by.
        standbys=[d.holder for d in daemons if d.holder != leader and d.role != "leader"], problems=problems)
