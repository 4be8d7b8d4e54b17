"""Riding out a Redis outage: one log line when it starts, capped backoff, one line when it ends.

redis-py already retries a failed command a few times; this is the layer above
it, for outages of any length: the caller's operation is tried again until
Redis answers (or the caller gives up, e.g. a stopping horse that was only
waiting for work).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

from bgcore.connection import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_DELAY = 0.1
MAX_DELAY = 5.0
# ReadOnlyError: a client still connected to a master that a failover turned into a replica (a
# Sentinel-managed client reconnects to the new master; a plain URL waits until it is a master again).
OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)


class GaveUp(Exception):
    """Raised by :meth:`Outage.call` when ``give_up()`` said so during an outage."""


class Outage:
    """The outage state of one process's Redis connection (who is waiting, since when)."""

    def __init__(self, who: str, *, sleep: Callable[[float], object] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, max_delay: float = MAX_DELAY) -> None:
        self.who = who
        self.sleep = sleep
        self.clock = clock
        self.max_delay = max_delay
        self.since: float | None = None
        self.outages = 0  # how many outages began (a caller can tell that one happened since it last looked)
        self._delay = FIRST_DELAY

    def call(self, operation: Callable[[], T], *, while_waiting: Callable[[], object] | None = None,
             give_up: Callable[[], bool] | None = None) -> T:
        """``operation()``, tried again through any Redis outage; :class:`GaveUp` if ``give_up()`` turns true."""
        while True:
            try:
                result = operation()
            except OUTAGE_ERRORS as exc:
                self.failed(exc)
                if while_waiting is not None:
                    while_waiting()
                if give_up is not None and give_up():
                    raise GaveUp() from None
                self.sleep(self._delay)
                self._delay = min(self.max_delay, self._delay * 2)
                continue
            self.recovered()
            return result

    def failed(self, exc: BaseException) -> None:
        """Note a failed attempt (logs only the first of an outage)."""
        if self.since is None:
            self.since = self.clock()
            self.outages += 1
            logger.warning("%s: Redis is unreachable (%s: %s); retrying, backing off up to %gs", self.who,
                           type(exc).__name__, redact(str(exc).splitlines()[0]) if str(exc) else "", self.max_delay)

    def recovered(self) -> None:
        """Note a success (logs the end of an outage, if one was going on)."""
        if self.since is not None:
            logger.warning("%s: Redis is reachable again after %.1fs", self.who, self.clock() - self.since)
            self.since = None
            self._delay = FIRST_DELAY
