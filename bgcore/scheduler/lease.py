"""The scheduler lease: one Redis key electing the one active daemon of a bench.

A daemon holds the lease while ``GET lease == holder`` (``host:pid:uuid``). It
is taken with ``SET NX PX`` and renewed or released only by its holder, with a
compare-and-set Lua script, so a daemon that lost the lease (paused, cut off)
can never extend or delete its successor's.

Takeover bound: a standby tries every ``renew_every`` seconds, so after the
leader dies it becomes active within ``lease_seconds + renew_every``
(defaults 15 s + 5 s -> at most ~20 s). A leader that stops cleanly releases
the lease and the standby takes over within ``renew_every``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bgcore import keys
from bgcore.config_schema import COMMON_CONFIG, check_value
from bgcore.host import host_name

DEFAULT_LEASE_SECONDS = 15.0

# KEYS[1] = lease key, ARGV[1] = holder, ARGV[2] = lease length (ms)
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_holder() -> str:
    """A holder name unique to this process and this run: ``host:pid:uuid`` (host: :func:`bgcore.host.host_name`)."""
    return f"{host_name()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def lease_seconds(common_config: Mapping[str, Any]) -> float:
    """``scheduler_lease_seconds`` of a bench config (default 15), checked by the schema.

    Code with a :class:`~bgcore.bench.Bench` reads ``bench.settings.get("scheduler_lease_seconds")``.
    """
    value = common_config.get("scheduler_lease_seconds", DEFAULT_LEASE_SECONDS)
    seconds: float = check_value("scheduler_lease_seconds", value, COMMON_CONFIG)
    return seconds


@dataclass
class Lease:
    """The bench's scheduler lease as seen by one daemon (``holder``).

    ``valid(now)`` is the local view: True until ``lease_seconds`` minus a
    safety margin after the last successful acquire/renew, measured on the
    monotonic clock, so a leader stops ticking before another could take over.
    """

    redis: Any
    bench_id: str
    holder: str
    seconds: float = DEFAULT_LEASE_SECONDS
    _valid_until: float = 0.0

    @property
    def key(self) -> str:
        return keys.scheduler_lease(self.bench_id)

    @property
    def renew_every(self) -> float:
        """How often the holder renews (and a standby retries): a third of the lease."""
        return self.seconds / 3.0

    def _ms(self) -> int:
        return max(1, int(self.seconds * 1000))

    def _mark(self, started: float) -> None:
        # The lease started no later than ``started``; keep a 10 % margin for clock drift.
        self._valid_until = started + self.seconds * 0.9

    def try_acquire(self, monotonic: float | None = None) -> bool:
        """Take the lease if it is free (or renew it if we already hold it)."""
        started = time.monotonic() if monotonic is None else monotonic
        if self.redis.set(self.key, self.holder, nx=True, px=self._ms()):
            self._mark(started)
            return True
        return self.renew(started)

    def renew(self, monotonic: float | None = None) -> bool:
        """Extend the lease if we still hold it; False (and invalid) if we lost it."""
        started = time.monotonic() if monotonic is None else monotonic
        if self.redis.eval(_RENEW, 1, self.key, self.holder, self._ms()):
            self._mark(started)
            return True
        self._valid_until = 0.0
        return False

    def release(self) -> bool:
        """Give the lease up if we hold it (a clean stop hands over at once)."""
        self._valid_until = 0.0
        return bool(self.redis.eval(_RELEASE, 1, self.key, self.holder))

    def valid(self, monotonic: float | None = None) -> bool:
        """True while this daemon may act as leader."""
        return (time.monotonic() if monotonic is None else monotonic) < self._valid_until


def current_holder(redis: Any, bench_id: str) -> str | None:
    """The holder of the bench's lease (``host:pid:uuid``), or None when no daemon leads."""
    value = redis.get(keys.scheduler_lease(bench_id))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
