"""The lifecycle middleware that counts job runs for the metrics (no round trip of its own per job).

:class:`JobMetrics` adds each run's queue, outcome, duration and end minute to a
:class:`~bgcore.metrics.store.Tally` in memory, and writes the tally to Redis in one
``MULTI``/``EXEC`` pipeline at most every :data:`FLUSH_SECONDS` (checked as a job ends),
when the horse goes idle, and when it stops or is recycled. A busy horse therefore adds
about one round trip per second, whatever its job rate.

What can be missed: the counts of a horse that dies without stopping (SIGKILL, out of
memory, a segfault), at most its last :data:`FLUSH_SECONDS`; the job it was running is
still counted, as ``lost`` (or ``timeout``) by the pool parent's ``horse_lost`` hook.
While Redis is away the tally keeps growing and is written once Redis is back; a write
whose reply is lost (Redis died right after ``EXEC``) is sent again, so counted twice.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from redis import RedisError

from bgcore import keys
from bgcore.clock import Clock, utcnow
from bgcore.engine.lifecycle import JobRun, LostJob, Middleware
from bgcore.metrics.store import Tally

if TYPE_CHECKING:
    from bgcore.bench import Bench

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0


class JobMetrics(Middleware):
    """Counts every run (outcome, duration histogram, per-minute throughput) per queue, batched.

    ``flush_every=0`` writes after every run: for callers outside a pool's horses
    (``bgcore.worker.execute_job``), which never go idle or stop as a horse does.
    """

    def __init__(self, *, flush_every: float = FLUSH_SECONDS, clock: Clock = utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.flush_every = flush_every
        self.clock = clock
        self.monotonic = monotonic
        self.tally = Tally()
        self._pid = os.getpid()
        self._bench: Bench | None = None
        self._written_at = monotonic()
        self._failing = False

    def after_job(self, run: JobRun) -> None:
        if run.queue is None:  # run outside a queue (RQ's job.perform() of a job of another program)
            return
        self._own_tally().add(run.queue, run.status, ended=self.clock().timestamp(), duration=run.duration)
        self._bench = run.bench
        if self.monotonic() - self._written_at >= self.flush_every:
            self.flush()

    def horse_lost(self, lost: LostJob) -> None:
        """In the pool parent: the job of a dead horse (rare), written at once."""
        queue = keys.queue_of(lost.bench.bench_id, getattr(lost.rq_job, "origin", None))
        if queue is None:
            return
        outcome = "timeout" if lost.status == "timeout" else "lost"
        self._own_tally().add(queue, outcome, ended=lost.ended_at.timestamp(), duration=None)
        self._bench = lost.bench
        self.flush()

    def horse_idle(self, bench: Bench) -> None:
        self.flush()

    def horse_stopping(self, bench: Bench) -> None:
        self.flush()

    def _own_tally(self) -> Tally:
        """This process's tally: a horse drops what it inherited from the pool parent at the fork.

        (The parent writes its counts at once, but keeps them while Redis is away: the parent
        sends those later, and a horse forked meanwhile must not send them too.)
        """
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self.tally = Tally()
        return self.tally

    def flush(self) -> None:
        """Write what was counted since the last write (nothing to send: no round trip)."""
        self._written_at = self.monotonic()
        bench = self._bench
        if bench is None or not self._own_tally():
            return
        try:
            self.tally.write(bench.redis(), bench.bench_id)
        except RedisError as exc:
            if not self._failing:
                logger.warning("job metrics not written yet (%s); they are kept and sent once Redis answers", exc)
            self._failing = True
            return
        self._failing = False
