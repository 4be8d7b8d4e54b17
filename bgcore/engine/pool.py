"""The pool: a parent process that forks N long-lived work-horses and supervises them.

Before forking, the parent imports every app installed on any site of the
bench (and the modules their hooks name), then calls ``gc.freeze()``, so the
horses share that memory copy-on-write. Then it:

* kills a horse still running ``KILL_GRACE_SECONDS`` after its job's deadline
  (the job got ``JobTimeoutException`` at the deadline and did not stop), and
  records the job as a timeout;
* reaps a horse that died (killed, out of memory, segfault, exit) and fails only
  the job it was running (``WorkHorseKilled`` with the signal or exit code); a
  job it had taken but not started goes back to its queue;
* forks a fresh horse for each one that exited, was recycled or died (with a
  back-off when one dies young, so a broken app cannot spin the CPU);
* renews the horses' RQ worker registrations every ``worker_heartbeat_seconds``;
* stops: the first SIGTERM or SIGINT is a warm stop (each horse finishes its
  job, for up to ``shutdown_grace_seconds``); a second one, or the end of the
  grace period, is a cold stop (horses are killed, their jobs recorded failed).
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import random
import select
import signal
import socket
import sys
import time
from collections.abc import Iterable, Sequence
from functools import partial
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from rq.job import Job
from rq.utils import utcformat

from bgcore import keys
from bgcore.bench import Bench
from bgcore.connection import redis_url
from bgcore.engine.broker import Broker
from bgcore.engine.horse import FINISH_GRACE_SECONDS, Horse, HorseExit, HorseLimits, horse_main
from bgcore.engine.lifecycle import Middleware
from bgcore.engine.outage import OUTAGE_ERRORS, Outage
from bgcore.engine.middleware import default_middleware
from bgcore.engine.settings import EngineSettings
from bgcore.engine.slots import HorseState, Slots
from bgcore.errors import BgcoreError
from bgcore.holds import sync_holds
from bgcore.processes import die_with_parent
from bgcore.queues import QueueSpec
from bgcore.engine.recovery import forget, recover_dead_workers, settle_lost_jobs

logger = logging.getLogger(__name__)

KILL_GRACE_SECONDS = 1.0
YOUNG_DEATH_SECONDS = 1.0
RESPAWN_BACKOFF_SECONDS = 2.0
POLL_SECONDS = 0.5


@dataclass
class HorseProcess:
    """The parent's record of one running horse."""

    index: int
    name: str
    pid: int
    born: float
    killed_for: str | None = None  # why the parent killed it: "timeout", "stuck" or "cold stop"


class Pool:
    """``size`` work-horses serving ``queues`` (priority order) of ``bench``."""

    def __init__(self, bench: Bench, queues: Sequence[QueueSpec], size: int, *, burst: bool = False) -> None:
        if size < 1:
            raise BgcoreError(f"--pool must be at least 1, found {size}")
        self.bench = bench
        self.queues = list(queues)
        self.size = size
        self.burst = burst
        self.settings = EngineSettings.from_bench(bench)
        self.hostname = socket.gethostname()
        self.horses: dict[int, HorseProcess] = {}
        self.respawn_at: dict[int, float] = {}
        self.middleware: list[Middleware] = []
        self.slots = Slots(size)
        self.stopping = False
        self.cold = False
        self.stop_deadline = float("inf")
        self._generation = 0
        self._signals: list[int] = []
        self._wake_r, self._wake_w = -1, -1
        self._next_heartbeat = 0.0
        self.outage = Outage(f"pool pid={os.getpid()}")

    # -- life of the pool ---------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped (or, in burst mode, until every horse found its queues empty); return the jobs run."""
        redis_url(self.bench)  # a bench without a Redis is a configuration error, not an outage
        self.broker = Broker(self.bench.redis(), self.bench.bench_id)
        self.outage.call(self.broker.redis.ping)  # a Redis that is down at start: wait for it
        self.retry_defaults = {q.name: q.retry for q in self.queues}
        for spec in self.queues:
            moved = self.outage.call(partial(self.broker.adopt_legacy, spec.name))
            if moved:
                logger.info("moved %d job(s) from RQ's plain list of queue %s to their sites' lists", moved, spec.name)
            indexed = self.outage.call(partial(self.broker.index_failed, spec.name))
            if indexed:
                logger.info("indexed %d earlier failed job(s) of queue %s by site", indexed, spec.name)
        preload_apps(self.bench)
        self.middleware = default_middleware(self.bench, timeouts=True)
        self.outage.call(partial(recover_dead_workers, self.bench, self.broker, retry_defaults=self.retry_defaults,
                                 middleware=self.middleware, this_host=self.hostname))
        self.outage.call(partial(sync_holds, self.bench))
        previous = self._install_signals()
        gc.freeze()  # what is imported now is shared copy-on-write by every horse
        logger.info("pool pid=%s: %d horse(s) on queue(s) %s%s", os.getpid(), self.size,
                    ",".join(q.name for q in self.queues), " (burst)" if self.burst else "")
        try:
            for index in range(self.size):
                self._spawn(index)
            self._supervise()
        finally:
            self._kill_all("cold stop")
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
        jobs = self.slots.jobs_run()
        logger.info("pool pid=%s stopped after %d job(s)", os.getpid(), jobs)
        return jobs

    def _supervise(self) -> None:
        while self.horses or self.respawn_at:
            self._sleep()
            self._handle_signals()
            self._reap()
            now = time.monotonic()
            self._enforce_deadlines(now)
            if self.stopping and not self.cold and now >= self.stop_deadline:
                logger.warning("shutdown grace of %gs is over; stopping the running jobs (cold stop)",
                               self.settings.shutdown_grace_seconds)
                self._cold_stop()
            for index, when in list(self.respawn_at.items()):
                if self.stopping:
                    self.respawn_at.clear()
                elif now >= when:
                    del self.respawn_at[index]
                    self._spawn(index)
            if now >= self._next_heartbeat:
                self._heartbeat()

    def _sleep(self) -> None:
        """Wait for a signal (SIGCHLD, SIGTERM, ...) or the next deadline, whichever comes first."""
        now = time.monotonic()
        timeout = min(POLL_SECONDS, max(0.0, self._next_heartbeat - now))
        for horse in self.horses.values():
            view = self.slots.read(horse.index)
            if view.state != HorseState.IDLE:
                timeout = min(timeout, max(0.0, view.deadline + KILL_GRACE_SECONDS - now))
        if self.respawn_at:
            timeout = min(timeout, max(0.0, min(self.respawn_at.values()) - now))
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            return
        if ready:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass

    # -- horses -------------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        self._generation += 1
        name = f"{self.hostname}.{os.getpid()}.{index}.{self._generation}"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the horse
            self._become_horse(index, name)
        self.horses[index] = HorseProcess(index, name, pid, time.monotonic())
        logger.debug("horse %s pid=%s started", name, pid)

    def _become_horse(self, index: int, name: str) -> None:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            die_with_parent()
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            random.seed()
            self.bench.reset_after_fork()
            horse = Horse(self.bench, self.queues, name=name, index=index, slots=self.slots,
                          middleware=self.middleware, burst=self.burst,
                          limits=HorseLimits(self.settings.max_jobs_per_horse, self.settings.max_horse_memory_mb))
            horse.outage.call(partial(register, horse.broker.redis, name, self.queues, self.bench.bench_id,
                                      self.hostname, ttl=self.settings.registration_ttl))
        except BaseException:  # noqa: BLE001 - never return into the parent's code
            logger.exception("horse %s could not start", name)
            os._exit(1)
        horse_main(horse)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            horse = next((h for h in self.horses.values() if h.pid == pid), None)
            if horse is not None:
                self._on_exit(horse, os.waitstatus_to_exitcode(status))

    def _on_exit(self, horse: HorseProcess, code: int) -> None:
        """A horse ended: record its job if it was running one, forget it, and replace it if needed."""
        del self.horses[horse.index]
        view = self.slots.read(horse.index)
        self.slots.clear(horse.index)
        # A horse leaves on purpose only between jobs: one that exits with one of those statuses
        # while its slot shows a job (the job called os._exit(0), say) died, and must be replaced
        # even in burst mode.
        planned = (code in (HorseExit.STOPPED, HorseExit.RECYCLE_JOBS, HorseExit.RECYCLE_MEMORY)
                   and view.state == HorseState.IDLE)
        if not planned and horse.killed_for is None:
            logger.error("horse %s pid=%s died (%s)", horse.name, horse.pid, describe_exit(code))
        running = view.job_id if view.state != HorseState.IDLE else None
        try:
            self._recover(horse, running, code)
        except Exception as exc:  # noqa: BLE001 - e.g. Redis away
            # Its records stay: once they lapse, recovery (this pool's next heartbeats, or any other
            # pool's) finds the dead horse and settles its jobs.
            logger.error("jobs of dead horse %s not recorded yet (%s); job=%s is settled by recovery later",
                         horse.name, exc, running)
        else:
            self._forget(horse.name)
        if self.stopping or (self.burst and planned and code == HorseExit.STOPPED):
            return
        young = time.monotonic() - horse.born < YOUNG_DEATH_SECONDS
        self.respawn_at[horse.index] = time.monotonic() + (RESPAWN_BACKOFF_SECONDS if young and not planned else 0)

    def _recover(self, horse: HorseProcess, running: str | None, code: int) -> None:
        """The dead horse's jobs: the one it ran fails (or is retried); any it had only taken goes back."""
        settle_lost_jobs(self.bench, self.broker, horse.name, running=running, assume_running=False,
                         reason=lambda job: self._lost_reason(horse, job, code), retry_defaults=self.retry_defaults,
                         middleware=self.middleware)

    def _lost_reason(self, horse: HorseProcess, job: Job, code: int) -> tuple[str, str]:
        if horse.killed_for == "timeout":
            return "timeout", (f"JobTimeoutException: Job exceeded maximum timeout value ({job.timeout} seconds); "
                               "the job did not stop at its deadline (it caught the timeout, blocked signals or "
                               f"was stuck in C code), so its work-horse was killed {KILL_GRACE_SECONDS:g}s later")
        if horse.killed_for == "cold stop":
            return "failed", "WorkerStopped: the worker was stopped (cold shutdown) while this job was running"
        if horse.killed_for == "stuck":
            return "failed", ("WorkHorseKilled: the work-horse hung outside the job's own code (entering the "
                              f"job's site or recording its outcome) for over {FINISH_GRACE_SECONDS:g}s and was killed")
        return "failed", (f"WorkHorseKilled: the process running this job died ({describe_exit(code)}; e.g. "
                          "killed or out of memory) before the job could finish")

    def _enforce_deadlines(self, now: float) -> None:
        for horse in list(self.horses.values()):
            view = self.slots.read(horse.index)
            if horse.killed_for is None and view.state != HorseState.IDLE and now > view.deadline + KILL_GRACE_SECONDS:
                horse.killed_for = "timeout" if view.state == HorseState.RUNNING else "stuck"
                logger.error("job site=%s job=%s is past its deadline; killing its horse %s pid=%s",
                             keys.site_of_job(view.job_id), view.job_id, horse.name, horse.pid)
                _kill(horse.pid, signal.SIGKILL)

    def _heartbeat(self) -> None:
        """Renew the horses' registrations and settle dead workers' jobs (bench-wide).

        Never blocks: during an outage it logs once and tries again next time. A record that
        lapsed meanwhile (a long outage) is written again.
        """
        self._next_heartbeat = time.monotonic() + self.settings.worker_heartbeat_seconds
        horses = list(self.horses.values())
        try:
            with self.broker.redis.pipeline(transaction=False) as pipe:
                for horse in horses:
                    pipe.expire(keys.rq_worker(horse.name), self.settings.registration_ttl)
                renewed = pipe.execute()
            for horse, alive in zip(horses, renewed):
                if not alive:
                    register(self.broker.redis, horse.name, self.queues, self.bench.bench_id, self.hostname,
                             ttl=self.settings.registration_ttl, pid=horse.pid)
            recover_dead_workers(self.bench, self.broker, retry_defaults=self.retry_defaults,
                                 middleware=self.middleware, this_host=self.hostname,
                                 skip={h.name for h in self.horses.values()})
            sync_holds(self.bench)
        except OUTAGE_ERRORS as exc:
            self.outage.failed(exc)
            return
        self.outage.recovered()

    def _forget(self, name: str) -> None:
        try:
            forget(self.broker.redis, name, self.bench.bench_id,
                   [keys.queue_name(self.bench.bench_id, q.name) for q in self.queues])
        except OUTAGE_ERRORS as exc:  # its record lapses by itself; recovery forgets it then
            logger.warning("worker record of %s not removed: %s", name, exc)

    # -- stopping -----------------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, self._on_stop_signal)
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        return previous

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)  # acted on by the supervising loop, never inside the handler

    def _handle_signals(self) -> None:
        while self._signals:
            self._stop_requested(self._signals.pop(0))

    def _stop_requested(self, signum: int) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.settings.shutdown_grace_seconds
            logger.info("received %s: warm stop, each horse finishes its job (up to %gs; send it again for a "
                        "cold stop)", signal.Signals(signum).name, self.settings.shutdown_grace_seconds)
            self.respawn_at.clear()
            for horse in self.horses.values():
                _kill(horse.pid, signal.SIGTERM)
        elif not self.cold:
            logger.warning("received %s again: cold stop", signal.Signals(signum).name)
            self._cold_stop()

    def _cold_stop(self) -> None:
        self.cold = True
        self._kill_all("cold stop")

    def _kill_all(self, why: str) -> None:
        """Kill every horse still alive and record their jobs (used by cold stops and on the way out)."""
        for horse in self.horses.values():
            if horse.killed_for is None:
                horse.killed_for = why
            _kill(horse.pid, signal.SIGKILL)
        for horse in list(self.horses.values()):
            try:
                _, status = os.waitpid(horse.pid, 0)
            except ChildProcessError:
                status = 0
            if horse.index in self.horses:
                self._on_exit(horse, os.waitstatus_to_exitcode(status))


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def describe_exit(code: int) -> str:
    """``os.waitstatus_to_exitcode``'s value in words: ``signal 9 (SIGKILL)`` or ``exit code 3``."""
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# -- registration: RQ's worker records, so `rq info`, doctor and the scheduler see each horse --------


def register(redis: Any, name: str, queues: Iterable[QueueSpec], bench_id: str, hostname: str, *, ttl: int,
             pid: int | None = None) -> None:
    """Write horse ``name``'s RQ worker record (by the horse itself at its start, so the pid is its own)."""
    from rq.version import VERSION

    rq_names = [keys.queue_name(bench_id, q.name) for q in queues]
    stamp = utcformat(datetime.now(timezone.utc))
    with redis.pipeline() as pipe:
        pipe.delete(keys.rq_worker(name))
        pipe.hset(keys.rq_worker(name), mapping={
            "birth": stamp, "last_heartbeat": stamp, "queues": ",".join(rq_names), "pid": pid or os.getpid(),
            "hostname": hostname, "ip_address": "", "version": VERSION, "python_version": sys.version,
            "pool_pid": os.getppid(),
        })
        pipe.expire(keys.rq_worker(name), ttl)
        pipe.sadd(keys.RQ_WORKERS, keys.rq_worker(name))
        pipe.sadd(keys.bench_workers(bench_id), name)
        for rq_name in rq_names:
            pipe.sadd(keys.rq_queue_workers(rq_name), keys.rq_worker(name))
        pipe.execute()


# -- preloading ---------------------------------------------------------------------------------------


def preload_apps(bench: Bench) -> list[str]:
    """Import every app installed on any site, its hooks and the modules they name; return the apps imported.

    An app that does not import is logged (its jobs will fail with that error) and skipped.
    """
    bench.activate_import_path()
    apps: set[str] = set()
    for site in bench.site_names():
        try:
            config = bench.site_config(site)
            apps.update(config.installed_apps)
            _preload_database_driver(bench, config)
        except BgcoreError:
            continue  # a broken site: its jobs say why when they run
    loaded = []
    for app in sorted(apps):
        try:
            importlib.import_module(app)
            hooks = importlib.import_module(f"{app}.hooks")
        except Exception as exc:  # noqa: BLE001 - user code
            logger.warning("app %s does not import (%s: %s); its jobs will fail until it is fixed", app,
                           type(exc).__name__, exc)
            continue
        for module in sorted(_modules_named_in(hooks)):
            try:
                importlib.import_module(module)
            except Exception as exc:  # noqa: BLE001 - user code
                logger.warning("module %s named in %s.hooks does not import (%s)", module, app, exc)
        loaded.append(app)
    return loaded


def _modules_named_in(hooks: Any) -> set[str]:
    paths: list[str] = []
    events = getattr(hooks, "scheduler_events", None)
    if isinstance(events, dict):
        for value in events.values():
            if isinstance(value, list):
                paths += value
            elif isinstance(value, dict):
                paths += [m for methods in value.values() if isinstance(methods, list) for m in methods]
    doctypes = getattr(hooks, "doctypes", None)
    if isinstance(doctypes, dict):
        paths += list(doctypes.values())
    return {p.rpartition(".")[0] for p in paths if isinstance(p, str) and "." in p}


def _preload_database_driver(bench: Bench, config: Any) -> None:
    from bgcore.db.engines import site_url

    try:
        site_url(config).get_dialect().import_dbapi()
    except Exception:  # noqa: BLE001 - the site's own jobs report a broken db_url
        pass
