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
import resource
import signal
import sys
import time
import traceback
from functools import partial
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from types import FrameType
from typing import Any


from bgcore import keys
from bgcore.bench import Bench
from bgcore.connection import wait_replicas
from bgcore.engine.broker import Broker, Taken
from bgcore.engine.outage import OUTAGE_ERRORS, GaveUp, Outage
from bgcore.engine.lifecycle import JobRun, Middleware, RetryDecision, _quietly, perform, storable
from bgcore.engine.settings import EngineSettings
from bgcore.engine.slots import HorseState, Slots
from bgcore.queues import QueueSpec
from bgcore.retry import job_policy

logger = logging.getLogger(__name__)

# Below the clients' read timeout (bgcore.connection.READ_TIMEOUT, 15 s), so an idle wait never ends in one.
IDLE_WAIT_SECONDS = 2.0
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


class SlotKeeper(Middleware):
    """Innermost middleware of a horse: tells the pool parent, through the slot, when the job's own code runs.

    The parent's hard deadline (timeout + ``KILL_GRACE_SECONDS``) then covers exactly
    what the in-job timeout covers. Before it (site entry, imports) and after it
    (rollback, commit, job log) the slot says ``FINISHING``, with a grace of its own.
    """

    def __init__(self, slots: Slots, index: int) -> None:
        self.slots = slots
        self.index = index

    def before_job(self, run: JobRun) -> None:
        self._running(run)

    def after_retry_decision(self, run: JobRun, decision: RetryDecision | None) -> None:
        if decision is not None:  # the method runs again: the remaining time of its timeout applies
            self._running(run)

    def after_success(self, run: JobRun) -> None:
        self._finishing(run)

    def after_failure(self, run: JobRun) -> None:
        self._finishing(run)

    def _running(self, run: JobRun) -> None:
        armed = run.state.setdefault("slot_armed_at", time.monotonic())  # Timeout armed its alarm just before
        deadline = armed + run.timeout if run.timeout else float("inf")
        self.slots.write(self.index, HorseState.RUNNING, deadline, run.job_id or "")

    def _finishing(self, run: JobRun) -> None:
        self.slots.write(self.index, HorseState.FINISHING, time.monotonic() + FINISH_GRACE_SECONDS, run.job_id or "")


class Horse:
    """The loop of one work-horse process (runs in the forked child)."""

    def __init__(self, bench: Bench, queues: Sequence[QueueSpec], *, name: str, index: int, slots: Slots,
                 middleware: Sequence[Middleware], limits: HorseLimits, burst: bool,
                 clock: Callable[[], float] = time.time) -> None:
        self.bench = bench
        self.queues = [(q.name, q.timeout) for q in queues]
        self.retry_defaults = {q.name: q.retry for q in queues}
        self.max_result_bytes = EngineSettings.of(bench).max_result_bytes
        self.name = name
        self.index = index
        self.slots = slots
        self.middleware = [*middleware, SlotKeeper(slots, index)]
        self.limits = limits
        self.burst = burst
        self.stopping = False
        self._waiting = False
        self.broker = Broker(bench.redis(), bench.bench_id, clock=clock, wait_replicas=wait_replicas(bench))
        self.outage = Outage(f"horse {name}")
        self._unsure = False  # a take's answer was lost: the processing list may hold a job
        self._outages_seen = 0  # outages this horse has checked its processing list after

    def run(self) -> int:
        """Take and run jobs until stopped, drained (burst) or due for recycling; return the exit status.

        While busy, ending one job and taking the next are one round trip (``finish_and_take``).
        Redis outages are ridden out (:mod:`bgcore.engine.outage`): waiting for work gives up
        when the horse is asked to stop; recording a job's end never does.
        """
        self._own_signals()
        done = 0
        taken: Taken | None = None
        looked = False  # whether ``taken is None`` is a fresh answer of the queues
        while not self.stopping:
            if taken is None:
                if not looked:
                    taken = self._take()
                looked = False
                if taken is None:
                    if self.burst and not self.outage.since:
                        return HorseExit.STOPPED
                    self._wait()
                    continue
            if self.stopping:  # SIGTERM came while the job was being taken: it has not started
                self._record(partial(self.broker.requeue, self.name, taken.job_id, taken.queue))
                break
            run, started = self.execute(taken)
            self._own_signals()  # a job may have replaced them; the next one must not inherit that
            done += 1
            self.slots.count_job(self.index)
            outcome = self._outcome(taken, run, started)
            recycle = self._recycle(done)
            if recycle is not None or self.stopping:
                self._finish(taken, outcome)
                return recycle if recycle is not None else HorseExit.STOPPED
            ended = taken
            try:
                _, taken = self.broker.finish_and_take(self.name, ended.job_id, ended.queue, self.queues, **outcome)
            except OUTAGE_ERRORS as exc:
                # The answer is lost: the finish and the take may or may not have happened. The guarded
                # finish can be sent again; a job the take gave us sits on our processing list.
                self.outage.failed(exc)
                self._finish(ended, outcome)
                self._unsure = True
                taken = None
                continue
            self.slots.clear(self.index)
            looked = True
        return HorseExit.STOPPED

    def _take(self) -> Taken | None:
        """Take a job, riding out an outage (``None`` when asked to stop meanwhile).

        A take whose answer was lost may still have given this horse a job (it is on the
        processing list): before taking again, such jobs go back to their queues. The same after
        any outage: a Sentinel failover can lose the last writes the old master acknowledged
        (replication is asynchronous), so the new master may still show an earlier job as taken
        by this horse although its end was recorded. A horse about to take holds no job, so
        whatever its processing list holds then is stale and goes back (it runs again: at least once).
        """
        def attempt() -> Taken | None:
            if self.outage.outages != self._outages_seen:
                self._unsure = True
            if self._unsure:
                self._requeue_processing()
                self._unsure = False
                self._outages_seen = self.outage.outages
            try:
                return self.broker.take(self.name, self.queues)
            except OUTAGE_ERRORS:
                self._unsure = True
                raise

        try:
            return self.outage.call(attempt, give_up=lambda: self.stopping)
        except GaveUp:
            return None  # anything left on the processing list is requeued by the pool parent

    def _finish(self, taken: Taken, outcome: dict[str, Any]) -> None:
        """Record the end of ``taken`` (through any outage), then free the slot."""
        self._record(partial(self.broker.finish, self.name, taken.job_id, taken.queue, **outcome))
        self.slots.clear(self.index)

    def _record(self, operation: Callable[[], object]) -> None:
        """Write something that must reach Redis; while Redis is away the slot's grace is renewed."""
        view = self.slots.read(self.index)

        def keep_slot() -> None:
            if view.state != HorseState.IDLE:
                self.slots.write(self.index, HorseState.FINISHING, time.monotonic() + FINISH_GRACE_SECONDS,
                                 view.job_id)

        self.outage.call(operation, while_waiting=keep_slot)

    def _requeue_processing(self) -> None:
        """Put back every job on this horse's processing list (taken, never started: after a lost answer)."""
        for job_id in self.broker.processing(self.name):
            queue = self.broker.queue_of_job(job_id)
            if queue is not None and self.broker.requeue(self.name, job_id, queue):
                logger.info("job site=%s job=%s taken while Redis was failing: back in queue %s",
                            keys.site_of_job(job_id), job_id, queue)

    def run_one(self, taken: Taken) -> JobRun:
        """Run one taken job through the middleware and record its end in Redis."""
        run, started = self.execute(taken)
        self.broker.finish(self.name, taken.job_id, taken.queue, **self._outcome(taken, run, started))
        self.slots.clear(self.index)
        return run

    def execute(self, taken: Taken) -> tuple[JobRun, float]:
        """Run one taken job through the middleware; return the run and when it started (epoch seconds)."""
        payload = taken.payload()
        timeout = taken.timeout
        seconds = float(timeout) if timeout and timeout > 0 else None
        started = self.broker.clock()
        # Until SlotKeeper sees the job's own code start, the slot grants set-up a grace of its own.
        self.slots.write(self.index, HorseState.FINISHING, time.monotonic() + FINISH_GRACE_SECONDS, taken.job_id)
        run = JobRun(
            bench=self.bench, job_id=taken.job_id, site=str(payload.get("site") or taken.site or ""),
            method=str(payload.get("method") or ""), kwargs=dict(payload.get("kwargs") or {}),
            user=payload.get("user"), job_name=payload.get("job_name"), log=bool(payload.get("log")),
            event=payload.get("event"), queue=taken.queue, timeout=seconds, tries=taken.retries,
            retry_policy=job_policy(payload, self.retry_defaults.get(taken.queue)),
        )
        if not run.site or not run.method:
            run.error = ValueError(f"job {taken.job_id} is not a bgcore job (its payload names no site or method)")
        else:
            perform(run, self.middleware)
        self.slots.write(self.index, HorseState.FINISHING, time.monotonic() + FINISH_GRACE_SECONDS, taken.job_id)
        return run, started

    def _outcome(self, taken: Taken, run: JobRun, started: float) -> dict[str, Any]:
        """The keyword arguments of ``Broker.finish`` for ``run``."""
        failed = run.error is not None
        retry_at = self.broker.clock() + run.retry.delay if run.retry is not None else None
        return {"result": storable(run.result, self.max_result_bytes), "error": _exc_string(run.error) if run.error is not None else None,
                "started": started, "ttl": taken.failure_ttl if failed else taken.result_ttl, "retry_at": retry_at}

    def _recycle(self, done: int) -> HorseExit | None:
        """Whether this horse is due for replacement after its ``done``-th job.

        Memory is the peak RSS (``ru_maxrss``, one system call): once a job has pushed the
        horse past the limit, Python seldom gives that memory back, so the peak is the measure.
        """
        if done >= self.limits.max_jobs:
            logger.info("horse %s recycled after %d jobs (max_jobs_per_horse)", self.name, done)
            return HorseExit.RECYCLE_JOBS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
        if rss_mb > self.limits.max_memory_mb:
            logger.warning("horse %s recycled: RSS %.0f MB is over max_horse_memory_mb=%d", self.name,
                           rss_mb, self.limits.max_memory_mb)
            return HorseExit.RECYCLE_MEMORY
        return None

    def _own_signals(self) -> None:
        if signal.getsignal(signal.SIGTERM) != self._on_term:
            signal.signal(signal.SIGTERM, self._on_term)
        if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _wait(self) -> None:
        # Before ``_waiting``: a SIGTERM must not break into a hook's write (it would raise _Stop there).
        for m in self.middleware:
            _quietly(m.horse_idle, self.bench)
        self._waiting = True
        try:
            if self.stopping:
                return
            wait = IDLE_WAIT_SECONDS
            if self.broker.next_due is not None:  # a delayed job: be back when it is due
                wait = min(wait, max(0.01, self.broker.next_due - self.broker.clock()))
            self.broker.wait([name for name, _ in self.queues], wait)
        except _Stop:
            pass
        except OUTAGE_ERRORS as exc:  # the next take rides the outage out
            self.outage.failed(exc)
        finally:
            self._waiting = False

    def stopped(self) -> None:
        """Tell the middleware this horse is leaving (each hook's error is logged, never raised)."""
        for m in self.middleware:
            _quietly(m.horse_stopping, self.bench)

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
        horse.stopped()
        logging.shutdown()
        os._exit(status)
