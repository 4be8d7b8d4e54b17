"""A work-horse: one long-lived process of a pool that takes and runs jobs one after another.

Its loop is take -> run (:func:`bgcore.engine.lifecycle.perform`) -> finish,
each step one round trip, and a blocking wait on the queues' wake lists when
there is nothing to take. It exits (and the pool forks a fresh one) after
``max_jobs_per_horse`` jobs or once its RSS passes ``max_horse_memory_mb``.

Signals: SIGTERM asks it to stop after its current job (at once when idle; a
job taken but not yet started goes back to its queue). SIGINT is ignored:
Ctrl-C reaches the whole process group, and the pool parent decides.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from types import FrameType

import psutil
import redis

from bgcore.bench import Bench
from bgcore.engine.broker import Broker, Taken
from bgcore.engine.lifecycle import JobRun, Middleware, perform, storable
from bgcore.engine.slots import HorseState, Slots
from bgcore.queues import QueueSpec

logger = logging.getLogger(__name__)

IDLE_WAIT_SECONDS = 5.0
FINISH_GRACE_SECONDS = 60.0


class HorseExit(IntEnum):
    """Exit statuses a horse uses on purpose; any other status (or a signal) is a crash."""

    STOPPED = 0  # asked to stop, or (burst) nothing left to take
    RECYCLE_JOBS = 10
    RECYCLE_MEMORY = 11


@dataclass(frozen=True)
class HorseLimits:
    max_jobs: int
    max_memory_mb: int


class _Stop(BaseException):
    """Raised by the SIGTERM handler while the horse waits for work."""


class Horse:
    """The loop of one work-horse process (runs in the forked child)."""

    def __init__(self, bench: Bench, queues: Sequence[QueueSpec], *, name: str, index: int, slots: Slots,
                 middleware: Sequence[Middleware], limits: HorseLimits, burst: bool) -> None:
        self.bench = bench
        self.queues = [(q.name, q.timeout) for q in queues]
        self.name = name
        self.index = index
        self.slots = slots
        self.middleware = middleware
        self.limits = limits
        self.burst = burst
        self.stopping = False
        self._waiting = False
        self.broker = Broker(bench.redis(), bench.bench_id)

    def run(self) -> int:
        """Take and run jobs until stopped, drained (burst) or due for recycling; return the exit status."""
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        process = psutil.Process()
        done = 0
        while not self.stopping:
            taken = self.broker.take(self.name, self.queues)
            if taken is None:
                if self.burst:
                    return HorseExit.STOPPED
                self._wait()
                continue
            if self.stopping:  # SIGTERM came while the job was being taken: it has not started
                self.broker.requeue(self.name, taken.job_id, taken.queue)
                break
            self.run_one(taken)
            done += 1
            if done >= self.limits.max_jobs:
                logger.info("horse %s recycled after %d jobs (max_jobs_per_horse)", self.name, done)
                return HorseExit.RECYCLE_JOBS
            rss_mb = process.memory_info().rss / 2**20
            if rss_mb > self.limits.max_memory_mb:
                logger.warning("horse %s recycled: RSS %.0f MB is over max_horse_memory_mb=%d", self.name,
                               rss_mb, self.limits.max_memory_mb)
                return HorseExit.RECYCLE_MEMORY
        return HorseExit.STOPPED

    def run_one(self, taken: Taken) -> JobRun:
        """Run one taken job through the middleware and record its end in Redis."""
        payload = taken.payload()
        timeout = taken.number("timeout")
        seconds = float(timeout) if timeout and timeout > 0 else None
        started = self.broker.clock()
        deadline = time.monotonic() + seconds if seconds else float("inf")
        self.slots.write(self.index, HorseState.RUNNING, deadline, taken.job_id)
        run = JobRun(
            bench=self.bench, job_id=taken.job_id, site=str(payload.get("site") or taken.site or ""),
            method=str(payload.get("method") or ""), kwargs=dict(payload.get("kwargs") or {}),
            user=payload.get("user"), job_name=payload.get("job_name"), log=bool(payload.get("log")),
            event=payload.get("event"), queue=taken.queue, timeout=seconds,
        )
        if not run.site or not run.method:
            run.error = ValueError(f"job {taken.job_id} is not a bgcore job (its payload names no site or method)")
        else:
            perform(run, self.middleware)
        self.slots.write(self.index, HorseState.FINISHING, time.monotonic() + FINISH_GRACE_SECONDS, taken.job_id)
        failed = run.error is not None
        self.broker.finish(self.name, taken.job_id, taken.queue, result=storable(run.result),
                           error=_exc_string(run.error) if run.error is not None else None, started=started,
                           ttl=taken.number("failure_ttl" if failed else "result_ttl"))
        self.slots.clear(self.index)
        return run

    def _wait(self) -> None:
        self._waiting = True
        try:
            if self.stopping:
                return
            self.broker.wait([name for name, _ in self.queues], IDLE_WAIT_SECONDS)
        except _Stop:
            pass
        except redis.ConnectionError as exc:
            logger.warning("horse %s: Redis connection lost while waiting (%s); retrying", self.name, exc)
            time.sleep(1.0)
        finally:
            self._waiting = False

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self._waiting:
            raise _Stop()


def _exc_string(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def horse_main(horse: Horse) -> None:
    """Entry point of a forked horse: run, then leave with its exit status (never returns)."""
    status = 1
    try:
        status = int(horse.run())
    except BaseException:  # noqa: BLE001 - a crash of the loop itself: the parent sees status 1
        logger.exception("horse %s crashed", horse.name)
    finally:
        logging.shutdown()
        os._exit(status)
