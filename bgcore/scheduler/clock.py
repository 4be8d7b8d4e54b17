"""A ``schedule.Scheduler`` timed by an injected monotonic clock, not the host's local wall clock.

The ``schedule`` package reads naive local ``datetime.now()``. On a host whose
zone is not UTC that time jumps back an hour at the autumn DST change (a job
due "at 03:00:30" then waits an hour) and forward in spring; an NTP step or a
manual clock change does the same. The daemon only uses ``every(N).seconds``,
where nothing but the length of the interval matters, so its jobs here
measure it on a clock that never jumps (``time.monotonic`` by default) and
is independent of ``TZ``. ``next_run`` and ``last_run`` stay naive datetimes,
as ``schedule`` expects, but they count from an arbitrary origin: they are
not wall-clock times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import schedule

Monotonic = Callable[[], float]
# The origin of the naive datetimes the jobs see; any fixed value works.
_ORIGIN = datetime(2000, 1, 1)


class MonotonicScheduler(schedule.Scheduler):
    """A ``schedule.Scheduler`` whose jobs are timed by ``clock`` (seconds, never jumping)."""

    def __init__(self, clock: Monotonic = time.monotonic) -> None:
        super().__init__()
        self.clock = clock

    def now(self) -> datetime:
        """The scheduler's time as the naive datetime ``schedule`` compares with ``next_run``."""
        return _ORIGIN + timedelta(seconds=self.clock())

    def every(self, interval: int = 1) -> MonotonicJob:
        return MonotonicJob(interval, self)

    @property
    def idle_seconds(self) -> float | None:
        if not self.next_run:
            return None
        return float((self.next_run - self.now()).total_seconds())


class MonotonicJob(schedule.Job):
    """A ``schedule.Job`` of ``every(N).seconds`` timed by its scheduler's clock.

    Only a plain interval is supported: ``at()``, ``until()``, ``to()`` and
    weekdays are about wall-clock times, which this clock does not have.
    """

    scheduler: MonotonicScheduler

    def __init__(self, interval: int, scheduler: MonotonicScheduler) -> None:
        super().__init__(interval, scheduler)

    @property
    def should_run(self) -> bool:
        assert self.next_run is not None, "must run _schedule_next_run before"
        return self.scheduler.now() >= self.next_run

    def run(self) -> Any:
        result = self.job_func()  # type: ignore[misc]
        self.last_run = self.scheduler.now()
        self._schedule_next_run()
        return result

    def _schedule_next_run(self) -> None:
        if self.at_time is not None or self.start_day is not None or self.latest is not None \
                or self.cancel_after is not None:
            raise schedule.ScheduleValueError(
                "MonotonicJob supports only every(N).<unit>: at(), until(), to() and weekdays need a wall clock"
            )
        if self.unit not in ("seconds", "minutes", "hours", "days", "weeks"):
            raise schedule.ScheduleValueError(f"invalid unit {self.unit!r}")
        self.next_run = self.scheduler.now() + timedelta(**{self.unit: self.interval})
