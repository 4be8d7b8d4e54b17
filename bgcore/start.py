"""``bgcore start``: run a whole bench in one process tree.

It runs the bench's private Redis when ``redis_queue`` is not set, one worker
pool per queue sized by the config (``background_workers`` horses per queue,
default 1; a queue with 0 gets none) and the scheduler daemon, restarts a
child that dies, and on Ctrl-C (SIGINT) or SIGTERM stops them gracefully:
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
from bgcore.connection import ping
from bgcore.engine.settings import EngineSettings
from bgcore.processes import die_with_parent

logger = logging.getLogger(__name__)

COLD_STOP_SECONDS = 10.0
RESTART_BACKOFF = 2.0


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


def child_commands(bench: Bench, with_scheduler: bool) -> list[Child]:
    """The workers (and scheduler) the bench's config asks for."""
    base = [sys.executable, "-m", "bgcore.cli", "--bench", str(bench.path)]
    children = []
    for spec in bench.queues.values():
        if spec.background_workers > 0:
            children.append(Child(f"worker[{spec.name}]", [*base, "worker", "--queue", spec.name,
                                                          "--pool", str(spec.background_workers)]))
    if with_scheduler:
        children.append(Child("scheduler", [*base, "schedule"]))
    return children


def run_bench(bench: Bench, *, with_scheduler: bool) -> None:
    """Run the bench until SIGINT/SIGTERM; see the module docstring."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("received %s, shutting down gracefully", signal.Signals(signum).name)
        stop.set()

    grace = shutdown_grace(bench)
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    redis_proc = None
    children: list[Child] = []
    try:
        if not bench.common_config.get("redis_queue"):
            redis_proc = embedded_redis.start(bench)
            logger.info("private Redis for bench %s at %s", bench.path, embedded_redis.running_url(bench))
        ping(bench)
        children = child_commands(bench, with_scheduler)
        for child in children:
            child.spawn()
        _supervise(children, stop)
    finally:
        _stop_children(children, grace)
        if redis_proc is not None:
            embedded_redis.stop(bench, redis_proc)
            logger.info("private Redis stopped; queued jobs are kept in %s", bench.state_path / "redis")
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _supervise(children: list[Child], stop: threading.Event) -> None:
    while not stop.wait(0.5):
        for child in children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                logger.error("%s exited with %s; restarting", child.name, code)
                if time.monotonic() - child.started_at < RESTART_BACKOFF:
                    time.sleep(RESTART_BACKOFF)
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
