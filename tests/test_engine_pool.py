"""The worker pool (bgcore.engine) as a real process: ``bgcore worker --pool N`` on the session's
real redis-server, with jobs from ``testapp.engine_tasks`` that leave their evidence in files.

Covers the hard guarantees of issue 7: timeouts enforced even against jobs that swallow them or
block SIGALRM, crash isolation, horse recycling (job count and memory), warm and cold stops, burst
mode and the CLI's errors, and ``bgcore start`` sizing pools from ``background_workers``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from rq.job import Job

import bgcore
from bgcore.db.joblog import JobLogEntry, failures
from bgcore.jobs import queued_count
from bgcore.processes import pid_alive
from bgcore.rqbridge import SERIALIZER
from tests import polling
from tests.conftest import BGCORE_EXE, BenchDir
from tests.test_scheduler_daemon_support import session_members

T = TypeVar("T")

DEADLINE_SECONDS = 20.0
POLL_SECONDS = 0.03
TASKS = "testapp.engine_tasks"
# A fresh horse's RSS is about 50 MiB here; hog_memory adds 100 MiB on top.
MEMORY_LIMIT_MB = 96


# -- helpers ------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], T], what: str | Callable[[], str], timeout: float = DEADLINE_SECONDS) -> T:
    """:func:`tests.polling.wait_until` every few ms, with this module's deadline."""
    return polling.wait_until(predicate, what, timeout, POLL_SECONDS)


def bgcore_command() -> list[str]:
    """The ``bgcore`` console script of this venv, or the CLI module run by this interpreter."""
    return [BGCORE_EXE] if os.path.exists(BGCORE_EXE) else [sys.executable, "-m", "bgcore.cli"]


@dataclass
class PoolProcess:
    """One ``bgcore worker`` process started by a test (its own session, so its horses share its group)."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """The pool's exit status, or a failure (with its log) if it is still running after ``timeout``."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pool pid={self.pid} still running after {timeout:g}s:\n{self.output()}") from None

    def horse_pids(self) -> list[int]:
        """The pool's live work-horses (its children)."""
        found = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found]

    def kill_everything(self) -> None:
        """SIGKILL the pool's whole session (parent and horses) and wait until none of it is left."""
        for pid in [self.pid, *session_members(self.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        wait_until(lambda: not session_members(self.pid), f"the processes of pool {self.pid} to be gone", 10)


@dataclass
class Pools:
    """Starts pools for a test and stops every one of them afterwards, even when the test failed."""

    bench: BenchDir
    started: list[PoolProcess] = field(default_factory=list)

    def start(self, *args: str, pool: int = 1, queue: str = "default") -> PoolProcess:
        """Start ``bgcore worker --queue QUEUE --pool N ARGS``, logging to a file next to the bench."""
        log = self.bench.path / f"pool-{len(self.started)}.log"
        env = dict(os.environ, BGCORE_BENCH=str(self.bench.path))
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*bgcore_command(), "--bench", str(self.bench.path), "worker", "--queue", queue, "--pool", str(pool),
                 *args],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.bench.path, start_new_session=True,
            )
        started = PoolProcess(proc, log)
        self.started.append(started)
        return started

    def start_ready(self, *args: str, pool: int = 1) -> PoolProcess:
        """Start a pool and wait until its ``pool`` horses are forked (so a job's timing starts at once)."""
        started = self.start(*args, pool=pool)
        wait_until(lambda: len(started.horse_pids()) == pool or started.proc.poll() is not None,
                   f"{pool} horse(s) of pool {started.pid}")
        assert started.proc.poll() is None, f"the pool exited early:\n{started.output()}"
        return started

    def stop_all(self) -> None:
        """Kill every pool started (and its horses); print their logs, which pytest shows for a failed test."""
        for started in self.started:
            started.kill_everything()
            print(f"--- bgcore worker pid={started.pid} ---\n{started.output()}")


@pytest.fixture
def pools(bench_dir: BenchDir) -> Iterator[Pools]:
    """A migrated bench (each site's job log exists) and a starter of pools that stops them all at the end."""
    bench_dir.cli("migrate", check=True)
    started = Pools(bench_dir)
    try:
        yield started
    finally:
        started.stop_all()


def enqueue(bench: BenchDir, task: str, *, site: str = "a.test", timeout: int | None = None, **kwargs: Any) -> str:
    """Enqueue ``testapp.engine_tasks.<task>(**kwargs)`` on queue ``default`` of ``site``; return the job id."""
    with bgcore.connect(site, bench=bench.bench()):
        return str(bgcore.enqueue(f"{TASKS}.{task}", queue="default", timeout=timeout, **kwargs).id)


def fetch(client: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=client, serializer=SERIALIZER)


def status(client: redis.Redis, job_id: str) -> str:
    value = fetch(client, job_id).get_status(refresh=True)
    return str(getattr(value, "value", value))  # RQ's JobStatus is an enum of strings


def wait_status(client: redis.Redis, job_id: str, wanted: str, timeout: float = DEADLINE_SECONDS) -> Job:
    """Wait until job ``job_id`` has RQ status ``wanted``; the job."""
    wait_until(lambda: status(client, job_id) == wanted,
               lambda: f"job {job_id} to be {wanted} (it is {status(client, job_id)})", timeout)
    return fetch(client, job_id)


def exc_string(client: redis.Redis, job_id: str) -> str:
    result = fetch(client, job_id).latest_result()
    assert result is not None, f"job {job_id} has no result entry"
    return str(result.exc_string)


def evidence(path: Path, tag: str | None = None) -> list[dict[str, Any]]:
    """The JSON lines a job wrote to ``path`` (those tagged ``tag`` only, if given)."""
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]  # a line still being written has no newline yet
    lines = [json.loads(line) for line in complete if line.strip()]
    return [line for line in lines if tag is None or line["tag"] == tag]


def job_log_failures(bench: BenchDir, site: str = "a.test") -> dict[str, JobLogEntry]:
    """The site's failed and timed-out job-log rows, by job id."""
    the_bench = bench.bench()
    return {row.job_id: row for row in failures(the_bench, the_bench.site_config(site))}


def wait_job_log_row(bench: BenchDir, job_id: str, site: str = "a.test") -> JobLogEntry:
    return wait_until(lambda: job_log_failures(bench, site).get(job_id), f"a job-log row for job {job_id}")


# -- 1. timeouts --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_timeout_caught_by_the_job_is_still_recorded_as_a_timeout(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given a pool of one horse
    When a job with a 1 s timeout catches JobTimeoutException with ``except Exception`` and returns
    Then it is failed as a timeout in RQ and in the site's job log, and the same horse runs the next job."""
    out = tmp_path / "ev.jsonl"
    pool = pools.start_ready(pool=1)
    swallowed = enqueue(bench_dir, "swallow_timeout", timeout=1, path=str(out))
    after = enqueue(bench_dir, "record", path=str(out), tag="after")

    wait_status(redis_client, swallowed, "failed")
    assert evidence(out, "caught")[0]["error"] == "JobTimeoutException"
    assert "JobTimeoutException" in exc_string(redis_client, swallowed)
    row = wait_job_log_row(bench_dir, swallowed)
    assert row.status == "timeout" and "JobTimeoutException" in (row.exception or "")
    wait_status(redis_client, after, "finished")
    assert evidence(out, "after")[0]["pid"] == evidence(out, "started")[0]["pid"], "the horse went on"
    assert pool.proc.poll() is None


@pytest.mark.slow
def test_a_job_that_keeps_catching_its_timeout_is_killed_and_a_fresh_horse_runs_the_next(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given a pool of one horse
    When a job with a 1 s timeout catches every JobTimeoutException and loops for ever
    Then the parent kills its horse shortly after the deadline, records a timeout (RQ and job log),
    and a fresh horse (another pid) runs the next job."""
    out = tmp_path / "ev.jsonl"
    pools.start_ready(pool=1)
    stubborn = enqueue(bench_dir, "swallow_forever", timeout=1, path=str(out))
    after = enqueue(bench_dir, "record", path=str(out), tag="after")

    started = wait_until(lambda: evidence(out, "started"), "the stubborn job to start")[0]
    wait_status(redis_client, stubborn, "failed")
    killed_after = time.time() - started["t"]
    assert evidence(out, "caught"), "the job saw its timeout and swallowed it"
    assert killed_after < 1 + 1 + 3, f"killed {killed_after:.1f}s after it started (deadline 1 s + 1 s grace)"
    assert not pid_alive(started["pid"])
    assert "JobTimeoutException" in exc_string(redis_client, stubborn)
    assert wait_job_log_row(bench_dir, stubborn).status == "timeout"
    wait_status(redis_client, after, "finished")
    assert evidence(out, "after")[0]["pid"] != started["pid"], "a fresh horse replaced the killed one"


@pytest.mark.slow
def test_a_job_that_blocks_sigalrm_and_spins_is_killed_by_the_parent(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given a pool of one horse
    When a job with a 1 s timeout blocks SIGALRM and busy-loops (the in-job timeout cannot fire)
    Then the parent kills its horse, the job is recorded as a timeout, and a new horse runs the next job."""
    out = tmp_path / "ev.jsonl"
    pools.start_ready(pool=1)
    spinner = enqueue(bench_dir, "block_alarm_and_spin", timeout=1, path=str(out))
    after = enqueue(bench_dir, "record", path=str(out), tag="after")

    started = wait_until(lambda: evidence(out, "started"), "the spinning job to start")[0]
    wait_status(redis_client, spinner, "failed")
    assert not evidence(out, "caught")
    assert not pid_alive(started["pid"])
    assert "JobTimeoutException" in exc_string(redis_client, spinner)
    assert wait_job_log_row(bench_dir, spinner).status == "timeout"
    wait_status(redis_client, after, "finished")
    assert evidence(out, "after")[0]["pid"] != started["pid"]


@pytest.mark.slow
def test_a_job_that_blocked_sigalrm_and_returned_does_not_disable_the_next_jobs_timeout(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given one horse, and a job that blocks SIGALRM and returns (the mask outlives it in the horse)
    When the next job overruns its 1 s timeout
    Then it still gets JobTimeoutException inside the job (it catches it), in the same horse: not a kill."""
    out = tmp_path / "ev.jsonl"
    pools.start_ready(pool=1)
    blocker = enqueue(bench_dir, "block_alarm", path=str(out))
    late = enqueue(bench_dir, "swallow_timeout", timeout=1, path=str(out))

    wait_status(redis_client, blocker, "finished")
    wait_status(redis_client, late, "failed")
    caught = evidence(out, "caught")
    assert caught and caught[0]["error"] == "JobTimeoutException", "the timeout fired inside the job"
    assert caught[0]["pid"] == evidence(out, "blocked")[0]["pid"]
    assert "JobTimeoutException" in exc_string(redis_client, late)
    assert wait_job_log_row(bench_dir, late).status == "timeout"


# -- 2. crash isolation -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_horse_that_sigkills_itself_fails_only_its_own_job(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given a pool of two horses and jobs enqueued before and after a job that SIGKILLs its horse
    Then only that job fails (WorkHorseKilled, signal 9) with a job-log row; every other job finishes."""
    out = tmp_path / "ev.jsonl"
    pools.start_ready(pool=2)
    before = [enqueue(bench_dir, "record", path=str(out), tag=f"before-{i}") for i in range(3)]
    doomed = enqueue(bench_dir, "kill_self", path=str(out))
    after = [enqueue(bench_dir, "record", path=str(out), tag=f"after-{i}") for i in range(3)]

    wait_status(redis_client, doomed, "failed")
    reason = exc_string(redis_client, doomed)
    assert "WorkHorseKilled" in reason and "signal 9 (SIGKILL)" in reason, reason
    for job_id in before + after:
        wait_status(redis_client, job_id, "finished")
    wait_job_log_row(bench_dir, doomed)
    rows = job_log_failures(bench_dir)
    assert set(rows) == {doomed} and rows[doomed].status == "failed"
    assert "signal 9 (SIGKILL)" in (rows[doomed].exception or "")
    assert not pid_alive(evidence(out, "dying")[0]["pid"])


@pytest.mark.slow
def test_a_job_that_exits_its_horse_with_status_0_fails_and_burst_still_drains(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given ``--burst --pool 1`` and a job that calls ``os._exit(0)`` (a horse's own "drained" status)
    Then that job fails (WorkHorseKilled, exit code 0), a fresh horse runs the next job, and the pool
    exits 0 with the queue empty (the dead horse is not mistaken for one that found nothing to do)."""
    out = tmp_path / "ev.jsonl"
    quitter = enqueue(bench_dir, "exit_horse", path=str(out), code=0)
    after = enqueue(bench_dir, "record", path=str(out), tag="after")
    pool = pools.start("--burst", pool=1)

    assert pool.wait_exit(DEADLINE_SECONDS) == 0, pool.output()
    assert status(redis_client, quitter) == "failed"
    reason = exc_string(redis_client, quitter)
    assert "WorkHorseKilled" in reason and "exit code 0" in reason, reason
    assert status(redis_client, after) == "finished"
    assert evidence(out, "after")[0]["pid"] != evidence(out, "exiting")[0]["pid"]
    assert queued_count(bench_dir.bench(), "default") == 0
    assert wait_job_log_row(bench_dir, quitter).status == "failed"


# -- 3. recycling -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_horse_is_recycled_after_max_jobs_per_horse(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given max_jobs_per_horse=3 and one horse
    When 7 jobs run
    Then they run in 3 horses, 3 + 3 + 1 jobs each, in that order."""
    bench_dir.write_common(max_jobs_per_horse=3)
    out = tmp_path / "ev.jsonl"
    ids = [enqueue(bench_dir, "record", path=str(out), tag=str(i)) for i in range(7)]
    pools.start(pool=1)

    for job_id in ids:
        wait_status(redis_client, job_id, "finished")
    runs = evidence(out)
    assert [r["tag"] for r in runs] == [str(i) for i in range(7)]
    pids = [r["pid"] for r in runs]
    assert [len(list(group)) for _, group in groupby(pids)] == [3, 3, 1], pids
    assert len(set(pids)) == 3


@pytest.mark.slow
def test_a_horse_is_recycled_after_a_memory_spike(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given max_horse_memory_mb just above a fresh horse's RSS, and one horse
    When a job allocates 100 MiB and keeps it referenced in a module global
    Then the horse is replaced after that job: the next job runs in a new pid."""
    bench_dir.write_common(max_horse_memory_mb=MEMORY_LIMIT_MB)
    out = tmp_path / "ev.jsonl"
    first = enqueue(bench_dir, "record", path=str(out), tag="fresh")
    hog = enqueue(bench_dir, "hog_memory", path=str(out), mb=100)
    after = enqueue(bench_dir, "record", path=str(out), tag="after")
    pools.start(pool=1)

    for job_id in (first, hog, after):
        wait_status(redis_client, job_id, "finished")
    fresh, hoarded, later = evidence(out, "fresh")[0], evidence(out, "hoarded")[0], evidence(out, "after")[0]
    assert fresh["rss_mb"] < MEMORY_LIMIT_MB, f"a fresh horse is already at {fresh['rss_mb']} MiB: raise the limit"
    assert hoarded["rss_mb"] > MEMORY_LIMIT_MB
    assert fresh["pid"] == hoarded["pid"], "a small job does not recycle the horse"
    assert later["pid"] != hoarded["pid"], "the horse over its memory limit was replaced"
    assert later["rss_mb"] < MEMORY_LIMIT_MB


# -- 4. stopping --------------------------------------------------------------------------------


@pytest.mark.slow
def test_warm_stop_finishes_the_running_job_and_leaves_the_queued_one(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given one horse running a 2 s job and another job still queued
    When the pool gets SIGTERM
    Then the running job finishes, the queued one stays queued, and the pool exits 0 within the grace."""
    grace = 10
    bench_dir.write_common(shutdown_grace_seconds=grace)
    out = tmp_path / "ev.jsonl"
    pool = pools.start_ready(pool=1)
    running = enqueue(bench_dir, "sleep_noted", path=str(out), seconds=2)
    waiting = enqueue(bench_dir, "record", path=str(out), tag="waiting")
    wait_until(lambda: evidence(out, "started"), "the long job to start")

    began = time.monotonic()
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(grace + 5) == 0, pool.output()
    assert time.monotonic() - began < grace
    assert status(redis_client, running) == "finished"
    assert evidence(out, "finished")
    assert status(redis_client, waiting) == "queued"
    assert queued_count(bench_dir.bench(), "default") == 1
    assert not evidence(out, "waiting")


@pytest.mark.slow
def test_warm_stop_lets_an_idle_horse_go_at_once_and_a_late_job_waits(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given two horses, one running a 2 s job and one idle (blocked waiting for work)
    When the pool gets SIGTERM
    Then the idle horse exits at once, a job enqueued meanwhile is not taken, and the pool exits 0
    as soon as the running job has finished."""
    bench_dir.write_common(shutdown_grace_seconds=10)
    out = tmp_path / "ev.jsonl"
    pool = pools.start_ready(pool=2)
    running = enqueue(bench_dir, "sleep_noted", path=str(out), seconds=2)
    busy = wait_until(lambda: evidence(out, "started"), "the long job to start")[0]["pid"]
    idle = [pid for pid in pool.horse_pids() if pid != busy]
    assert len(idle) == 1

    pool.send(signal.SIGTERM)
    wait_until(lambda: not pid_alive(idle[0]), "the idle horse to exit", timeout=1.5)
    late = enqueue(bench_dir, "record", path=str(out), tag="late")
    assert pool.wait_exit(10) == 0, pool.output()
    finished_at = evidence(out, "finished")[0]["t"]
    assert time.time() - finished_at < 2, "the pool exited soon after its last job"
    assert status(redis_client, running) == "finished"
    assert status(redis_client, late) == "queued" and not evidence(out, "late")
    assert queued_count(bench_dir.bench(), "default", "a.test") == 1


@pytest.mark.slow
def test_a_second_sigterm_is_a_cold_stop_that_records_the_running_job_as_failed(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given one horse running a 60 s job (grace 30 s)
    When the pool gets SIGTERM, then SIGTERM again
    Then it exits promptly, and the job is failed (WorkerStopped, cold shutdown) with a job-log row."""
    bench_dir.write_common(shutdown_grace_seconds=30)
    out = tmp_path / "ev.jsonl"
    pool = pools.start_ready(pool=1)
    running = enqueue(bench_dir, "sleep_noted", path=str(out), seconds=60)
    horse = wait_until(lambda: evidence(out, "started"), "the long job to start")[0]["pid"]

    pool.send(signal.SIGTERM)
    wait_until(lambda: "warm stop" in pool.output(), "the pool to begin its warm stop")
    began = time.monotonic()
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(10) == 0, pool.output()
    assert time.monotonic() - began < 5
    assert not pid_alive(horse)
    assert status(redis_client, running) == "failed"
    reason = exc_string(redis_client, running)
    assert "WorkerStopped" in reason and "cold shutdown" in reason, reason
    row = wait_job_log_row(bench_dir, running)
    assert row.status == "failed" and "WorkerStopped" in (row.exception or "")
    assert not evidence(out, "finished")


@pytest.mark.slow
def test_ctrl_c_past_the_grace_period_becomes_a_cold_stop(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given one horse running a 60 s job and shutdown_grace_seconds=1
    When Ctrl-C reaches the whole process group (SIGINT to the pool and its horse)
    Then the horse ignores SIGINT and keeps working, the grace runs out, and the pool cold-stops:
    it exits 0 within a few seconds and the job is failed with WorkerStopped."""
    bench_dir.write_common(shutdown_grace_seconds=1)
    out = tmp_path / "ev.jsonl"
    pool = pools.start_ready(pool=1)
    running = enqueue(bench_dir, "sleep_noted", path=str(out), seconds=60)
    wait_until(lambda: evidence(out, "started"), "the long job to start")

    began = time.monotonic()
    os.killpg(pool.pid, signal.SIGINT)
    assert pool.wait_exit(10) == 0, pool.output()
    assert 1 <= time.monotonic() - began < 5
    reason = exc_string(redis_client, running)
    assert "WorkerStopped" in reason and "cold shutdown" in reason, reason
    assert "shutdown grace of 1s is over" in pool.output()
    assert wait_job_log_row(bench_dir, running).status == "failed"


# -- 5. burst mode and the command line ---------------------------------------------------------


@pytest.mark.slow
def test_burst_with_two_horses_drains_the_queue_and_exits_0(
    pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Given 10 queued jobs of two sites
    When ``bgcore worker --burst --pool 2`` runs
    Then every job finishes, in both horses' hands, the queue is empty and the pool exits 0."""
    out = tmp_path / "ev.jsonl"
    ids = [enqueue(bench_dir, "record", site=site, path=str(out), tag=str(i))
           for i in range(5) for site in ("a.test", "b.test")]
    pool = pools.start("--burst", pool=2)

    assert pool.wait_exit(DEADLINE_SECONDS) == 0, pool.output()
    assert {status(redis_client, job_id) for job_id in ids} == {"finished"}
    assert len(evidence(out)) == 10
    assert queued_count(bench_dir.bench(), "default") == 0


def test_an_unknown_queue_is_one_clear_error(bench_dir: BenchDir) -> None:
    """When ``bgcore worker --queue nope`` runs
    Then it exits 1 with one line naming the queue and the valid ones (no traceback)."""
    result = bench_dir.cli("worker", "--queue", "nope", "--burst", timeout=30)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unknown queue 'nope'"), result.stderr
    assert "short, default, long" in lines[0]


def test_pool_zero_is_a_usage_error(bench_dir: BenchDir) -> None:
    """When ``bgcore worker --pool 0`` runs
    Then click refuses it: exit 2, with the option named."""
    result = bench_dir.cli("worker", "--queue", "default", "--pool", "0", "--burst", timeout=30)
    assert result.returncode == 2, result
    assert "--pool" in result.stderr and "Traceback" not in result.stderr


# -- 6. bgcore start ----------------------------------------------------------------------------


def test_start_sizes_each_queue_pool_from_background_workers(bench_dir: BenchDir) -> None:
    """Given queue ``default`` with background_workers 3 and a queue ``idle`` with 0
    Then ``bgcore start`` runs one pool of 3 horses for default, none for idle, and 1 for the others."""
    from bgcore.start import child_commands

    bench_dir.write_common(workers={"default": {"background_workers": 3}, "idle": {"background_workers": 0}})
    children = child_commands(bench_dir.bench(), with_scheduler=False)

    by_queue = {child.argv[child.argv.index("--queue") + 1]: child.argv for child in children}
    assert set(by_queue) == {"short", "default", "long"}
    assert [c.name for c in children].count("worker[default]") == 1
    pool_sizes = {queue: argv[argv.index("--pool") + 1] for queue, argv in by_queue.items()}
    assert pool_sizes == {"short": "1", "default": "3", "long": "1"}
    assert all(argv[argv.index("worker") - 2:argv.index("worker")] == ["--bench", str(bench_dir.path)]
               for argv in by_queue.values())
    assert "scheduler" not in [c.name for c in children]
