"""``bgcore start``: run a whole bench in one process tree.

It runs the bench's private Redis when ``redis_queue`` is not set, one worker
pool per queue (or per queue ``group``) sized by the config
(``background_workers`` horses per queue, default 1; a queue with 0 gets none) and the scheduler daemon, restarts a
child that dies (the private Redis too: reaped, and started again on the same
port with the same data directory, so its append-only file and every client's
URL still hold), and on Ctrl-C (SIGINT) or SIGTERM stops them gracefully:
horses finish their current job for up to ``shutdown_grace_seconds`` (bench
config, default 30); a job still running then is stopped (the pool's cold
stop kills its horse and records the job as failed, with the reason). Queued
jobs stay in Redis, and the private Redis saves its append-only file before
it exits. On Linux every child also gets SIGTERM if this supervisor itself
dies, so no worker or Redis is left behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType

from bgcore import embedded_redis
from bgcore.bench import Bench
from bgcore.config import COMMON_CONFIG
from bgcore.connection import configured, ping
from bgcore.engine.settings import EngineSettings
from bgcore.errors import BgcoreError
from bgcore.processes import die_with_parent
from bgcore.queues import worker_pools

logger = logging.getLogger(__name__)

COLD_STOP_SECONDS = 10.0
RESTART_BACKOFF = 2.0
# A restarted Redis first loads its append-only file; a big one takes a while.
REDIS_START_SECONDS = 60.0


@dataclass
class Child:
    """One supervised process: its command line and the running process."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = field(default=0.0)

    def spawn(self) -> None:
        self.proc = subprocess.Popen(self.argv, start_new_session=True, preexec_fn=die_with_parent)
        self.started_at = time.monotonic()
        logger.info("started %s pid=%s", self.name, self.proc.pid)


def child_commands(bench: Bench, with_scheduler: bool, dashboard_port: int | None = None) -> list[Child]:
    """The workers (and scheduler, and the dashboard on ``dashboard_port`` of loopback) the bench asks for."""
    base = [sys.executable, "-m", "bgcore.cli", "--bench", str(bench.path)]
    children = []
    for pool in worker_pools(bench.queues, str(bench.sites_path / COMMON_CONFIG)):
        children.append(Child(f"worker[{pool.name}]", [*base, "worker", "--queue", pool.queue_list,
                                                      "--pool", str(pool.size)]))
    if with_scheduler:
        children.append(Child("scheduler", [*base, "schedule"]))
    if dashboard_port is not None:
        children.append(Child("dashboard", [*base, "dashboard", "--host", DASHBOARD_HOST,
                                            "--port", str(dashboard_port)]))
    return children


DASHBOARD_HOST = "127.0.0.1"  # start runs the dashboard on loopback only, whatever dashboard_host says


def dashboard_port(bench: Bench) -> int | None:
    """The port ``bgcore start`` runs the dashboard on (``dashboard_port``), or None when it is taken.

    A taken port is one warning, not a dashboard restarted every two seconds; the
    bench runs without it (``bgcore dashboard --port`` can serve it elsewhere).
    """
    from bgcore.dashboard.server import port_free
    from bgcore.dashboard.settings import DashboardSettings

    settings = DashboardSettings.from_bench(bench, host=DASHBOARD_HOST)
    if not port_free(DASHBOARD_HOST, settings.port):
        logger.warning("dashboard not started: port %s of %s is in use; set dashboard_port in "
                       "common_site_config.json, or run 'bgcore dashboard --port N'", settings.port, DASHBOARD_HOST)
        return None
    return settings.port


class PrivateRedis:
    """The bench's private Redis as a supervised child: restarted where it was when it dies."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.proc = embedded_redis.start(bench)
        self.url = embedded_redis.running_url(bench) or ""
        self.port = embedded_redis.port_of(self.url)
        self._down_since: float | None = None
        self._retry_at = 0.0

    def check(self) -> None:
        """Reap the Redis if it exited (no zombie left), and start it again; one log line each way."""
        if self._down_since is None:
            if self.proc.poll() is None:
                return
            self._down_since = time.monotonic()
            logger.error("private Redis pid=%s exited with %s; restarting it on port %s with the data in %s",
                         self.proc.pid, _exit_status(self.proc.returncode), self.port,
                         embedded_redis.data_dir(self.bench))
        if time.monotonic() < self._retry_at:
            return
        try:
            self.proc = embedded_redis.start(self.bench, REDIS_START_SECONDS, port=self.port)
        except BgcoreError as exc:  # e.g. another process took the port: keep trying, say so once
            first = self._retry_at == 0.0
            self._retry_at = time.monotonic() + RESTART_BACKOFF
            logger.log(logging.WARNING if first else logging.DEBUG,
                       "private Redis did not come back yet (%s); trying again every %ss", exc, RESTART_BACKOFF)
            return
        logger.warning("private Redis is back at %s pid=%s after %.1fs", self.url, self.proc.pid,
                       time.monotonic() - self._down_since)
        self._down_since = None
        self._retry_at = 0.0

    def stop(self) -> None:
        embedded_redis.stop(self.bench, self.proc)  # also when it is down: forgets its state file
        logger.info("private Redis stopped; queued jobs are kept in %s", embedded_redis.data_dir(self.bench))


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def run_bench(bench: Bench, *, with_scheduler: bool, dashboard: int | None = None) -> None:
    """Run the bench until SIGINT/SIGTERM; see the module docstring."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, shutting down gracefully", signal.Signals(signum).name)
        stop.set()

    grace = shutdown_grace(bench)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    private: PrivateRedis | None = None
    children: list[Child] = []
    try:
        if not configured(bench):
            private = PrivateRedis(bench)
            logger.info("private Redis for bench %s at %s", bench.path, private.url)
        ping(bench)
        children = child_commands(bench, with_scheduler, dashboard)
        for child in children:
            child.spawn()
        _supervise(children, stop, private)
    finally:
        _stop_children(children, grace)
        if private is not None:
            private.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(children: list[Child], stop: threading.Event, private: PrivateRedis | None = None) -> None:
    while not stop.wait(0.5):
        if private is not None:
            private.check()  # first: a worker restarted now finds its Redis
        for child in children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                logger.error("%s exited with %s; restarting", child.name, code)
                if time.monotonic() - child.started_at < RESTART_BACKOFF and stop.wait(RESTART_BACKOFF):
                    return
                child.spawn()


def _stop_children(children: list[Child], grace: float) -> None:
    """Warm stop (SIGTERM), after ``grace`` a cold stop (SIGTERM again), then SIGKILL."""
    running = _signal_all(children, signal.SIGTERM)
    late = _wait_all(running, grace)
    if late:
        logger.warning("%s still busy after %ss; stopping their jobs (cold shutdown)",
                       ", ".join(c.name for c in late), grace)
        late = _wait_all(_signal_all(late, signal.SIGTERM), COLD_STOP_SECONDS)
    for child in late:
        assert child.proc is not None
        logger.error("%s did not stop; killing its process group", child.name)
        try:
            os.killpg(child.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.proc.wait()
    logger.info("all workers stopped")


def _signal_all(children: list[Child], sig: signal.Signals) -> list[Child]:
    running = [c for c in children if c.proc is not None and c.proc.poll() is None]
    for child in running:
        assert child.proc is not None
        child.proc.send_signal(sig)
    return running


def _wait_all(children: list[Child], seconds: float) -> list[Child]:
    """Wait up to ``seconds`` in all; return the children still running."""
    deadline = time.monotonic() + seconds
    late = []
    for child in children:
        assert child.proc is not None
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            late.append(child)
    return late


def shutdown_grace(bench: Bench) -> float:
    """``shutdown_grace_seconds`` from the bench config (default 30; checked with the engine's settings)."""
    return EngineSettings.from_bench(bench).shutdown_grace_seconds
