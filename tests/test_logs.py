"""Logs for people: --log-file / --log-level, RQ's per-job lines quiet, a held-back event said once."""

from __future__ import annotations

import logging
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

import bgcore
from bgcore.clock import utcnow
from bgcore.cli.run import start_banner
from bgcore.scheduler.daemon import SchedulerDaemon
from tests.conftest import BGCORE_EXE, BenchDir
from tests.test_scheduler_daemon_support import make_sched_bench


def _worker(bench_dir: BenchDir, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BGCORE_BENCH=str(bench_dir.path))
    return subprocess.run([BGCORE_EXE, "worker", "--burst", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_worker_logs_one_line_per_job_to_the_log_file(bench_dir: BenchDir, tmp_path: Path) -> None:
    with bgcore.connect("a.test", bench_dir.bench()):
        job = bgcore.enqueue("testapp.tasks.add", a=1, b=2)
    log = tmp_path / "worker.log"
    result = _worker(bench_dir, "--log-file", str(log), "--log-level", "info")
    assert result.returncode == 0 and result.stderr == ""
    text = log.read_text()
    assert f"job site=a.test job={job.id} method=testapp.tasks.add queue=default" in text
    assert "outcome=finished" in text and " rq." not in text


def test_log_level_warning_keeps_the_job_lines_out(bench_dir: BenchDir, tmp_path: Path) -> None:
    with bgcore.connect("a.test", bench_dir.bench()):
        bgcore.enqueue("testapp.tasks.noop")
    log = tmp_path / "worker.log"
    assert _worker(bench_dir, "--log-file", str(log), "--log-level", "warning").returncode == 0
    assert "job site=a.test" not in (log.read_text() if log.exists() else "")
    bad = _worker(bench_dir, "--log-level", "loud")
    assert bad.returncode == 2 and "Invalid value for '--log-level'" in bad.stderr


def test_the_start_banner_says_where_redis_is_and_what_to_try_next(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    text = start_banner(bench, "redis://127.0.0.1:6390/0")
    assert f"bench {bench.path} (id {bench.bench_id}), Redis at redis://127.0.0.1:6390/0" in text
    assert f"{BGCORE_EXE} --bench {bench.path} doctor" in text and "activate" in text


def test_an_event_held_back_is_said_once_until_it_runs_again(bench_dir: BenchDir,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    sched = make_sched_bench(bench_dir, ["every"])
    sched.migrate()
    now = utcnow()
    daemon = SchedulerDaemon(bench_dir.bench(), clock=lambda: now)
    with caplog.at_level(logging.INFO, logger="bgcore.scheduler.daemon"):
        daemon.rescan()
        daemon.lease_step()
        # The first tick queues the event; no worker runs it, so the next ticks hold it back
        for n in range(1, 5):
            daemon.tick(1.0, now + timedelta(seconds=2 * n))
    held = [r for r in caplog.records if "last run still queued" in r.getMessage() and "site=a.test" in r.getMessage()]
    assert len(held) == 1
    leading = [r for r in caplog.records if "scheduler leading" in r.getMessage()]
    assert [r.levelno for r in leading] == [logging.INFO]
    daemon.lease.release()
