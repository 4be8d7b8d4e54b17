"""What a bench runs under a process manager: one :class:`Program` per process, in a :class:`Plan`.

Pure: it reads the bench's config and returns data; the renderers
(:mod:`bgcore.setup.render`) turn a plan into supervisor, systemd or Procfile
text, and :mod:`bgcore.setup.files` writes it.

Stop grace. On SIGTERM a worker pool lets each running job finish, for up to
its ``--shutdown-grace`` (the bench's ``shutdown_grace_seconds`` by default),
then stops cold: it kills its horses and records their jobs as failed
(``bgcore/engine/pool.py``). A job may run for its queue's timeout, so a
pool's program gets ``--shutdown-grace`` = the longest timeout of its queues
+ ``shutdown_grace_seconds`` (the job's deadline and the 1 s kill after it both
fall inside), and the process manager waits that plus
:data:`COLD_STOP_SECONDS` for the cold stop to record what is left before it
kills anything. A job enqueued with a ``timeout=`` longer than its queue's
can still be cut off by a stop: give such jobs a queue whose timeout fits.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from bgcore import connection, embedded_redis
from bgcore.bench import BENCH_ENV, Bench
from bgcore.config import COMMON_CONFIG
from bgcore.engine.settings import EngineSettings
from bgcore.errors import ConfigError, InvalidArgument
from bgcore.queues import worker_pools

COLD_STOP_SECONDS = 10  # a pool's cold stop: kill the horses, record their jobs, exit
REDIS_STOP_SECONDS = 60  # redis-server writes its append-only file before it exits
DEFAULT_REDIS_PORT = 11000  # the private Redis's port under a process manager (--redis-port)
LOG_DIR = "logs"


@dataclass(frozen=True)
class Program:
    """One process of the bench: its name, command line, stop grace and log file."""

    name: str  # short and unique in the plan: "redis", "worker-short", "scheduler", "dashboard"
    argv: tuple[str, ...]
    stop_seconds: int  # how long the process manager waits after SIGTERM before SIGKILL
    log: Path
    priority: int  # start order, lowest first (the private Redis before its clients)
    summary: str  # one line for the generated file: what it is and where its stop grace comes from


@dataclass(frozen=True)
class Plan:
    """Everything the generated config describes for one bench."""

    bench: Path
    bench_id: str
    prefix: str  # names every program: "bgcore-<bench dir>"
    user: str | None
    programs: tuple[Program, ...]
    redis_port: int | None  # the private Redis's port when the bench runs one (redis_queue unset)

    @property
    def environment(self) -> dict[str, str]:
        """The environment every program gets."""
        return {BENCH_ENV: str(self.bench)}

    def full_name(self, program: Program) -> str:
        return f"{self.prefix}-{program.name}"


def bgcore_argv() -> tuple[str, ...]:
    """The ``bgcore`` executable of the running interpreter (its console script), as an absolute path."""
    script = Path(sys.executable).parent / "bgcore"
    if script.is_file():
        return (str(script.absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", "bgcore.cli")


def prefix_for(bench: Path) -> str:
    """``bgcore-<bench directory name>`` with only lower-case letters, digits and ``-``."""
    slug = re.sub(r"[^a-z0-9]+", "-", bench.name.lower()).strip("-") or "bench"
    return f"bgcore-{slug}"


def build_plan(bench: Bench, *, user: str | None, dashboard: bool = True,
               redis_port: int = DEFAULT_REDIS_PORT) -> Plan:
    """The programs of ``bench``: private Redis (when ``redis_queue`` is unset), one worker pool per queue or
    queue group, the scheduler and (unless ``dashboard`` is false) the dashboard."""
    if not 1 <= redis_port <= 65535:
        raise InvalidArgument(f"--redis-port must be a TCP port from 1 to 65535, found {redis_port}")
    where = str(bench.sites_path / COMMON_CONFIG)
    grace = EngineSettings.from_bench(bench).shutdown_grace_seconds
    exe = bgcore_argv()
    logs = bench.path / LOG_DIR
    programs: list[Program] = []
    private = not connection.configured(bench)  # neither redis_queue nor redis_sentinel
    if private:
        server = str(Path(embedded_redis.find_redis_server()).absolute())
        argv = (server, *embedded_redis.server_args(embedded_redis.data_dir(bench), redis_port, ""))
        programs.append(Program("redis", argv, REDIS_STOP_SECONDS, logs / "redis.log", 10,
                                f"the bench's private Redis on 127.0.0.1:{redis_port} (redis_queue is unset); "
                                f"{REDIS_STOP_SECONDS}s to write its append-only file"))
    for pool in worker_pools(bench.queues, where):
        pool_grace = pool.max_timeout + _whole(grace)
        argv = (*exe, "worker", "--queue", pool.queue_list, "--pool", str(pool.size),
                "--shutdown-grace", str(pool_grace))
        horses = f"{pool.size} horse{'s' if pool.size != 1 else ''}"
        name = "worker-" + re.sub(r"[^A-Za-z0-9_-]", "-", pool.name)
        if any(p.name == name for p in programs):
            raise ConfigError(f"{where}: queues {pool.name!r} and another one give the same program name {name!r}; "
                              "rename one of them (letters, digits, '-' and '_' keep names apart)")
        programs.append(Program(name, argv, pool_grace + COLD_STOP_SECONDS,
                                logs / f"{name}.log", 100,
                                f"worker pool of queue(s) {pool.queue_list}, {horses}; stop grace = longest "
                                f"queue timeout {pool.max_timeout}s + shutdown_grace_seconds {_whole(grace)}s "
                                f"+ {COLD_STOP_SECONDS}s cold stop"))
    programs.append(Program("scheduler", (*exe, "schedule"), _whole(grace) + COLD_STOP_SECONDS,
                            logs / "scheduler.log", 100,
                            "the scheduler (one leads per bench, others stand by)"))
    if dashboard:
        host, port = _dashboard_address(bench, where)
        programs.append(Program("dashboard", (*exe, "dashboard", "--host", host, "--port", str(port)),
                                _whole(grace) + COLD_STOP_SECONDS, logs / "dashboard.log", 100,
                                f"the dashboard on {host}:{port} (dashboard_host, dashboard_port)"))
    return Plan(bench.path, bench.bench_id, prefix_for(bench.path), user, tuple(programs),
                redis_port if private else None)


def _whole(seconds: float) -> int:
    return math.ceil(seconds)


def _dashboard_address(bench: Bench, where: str) -> tuple[str, int]:
    """The dashboard's address, checked as ``bgcore dashboard`` checks it (a non-loopback one needs a password)."""
    from bgcore.dashboard.settings import DashboardSettings

    found = DashboardSettings.from_bench(bench)
    return found.host, found.port
