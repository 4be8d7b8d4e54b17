"""Short versions of the fault suite (``python -m benchmarks.faults``), asserting its targets.

Real ``bgcore worker`` pools on a real ``redis-server`` (the session's, or for the Redis restart one
with its append-only file), a steady stream of 0.2 s jobs that leave evidence lines (started,
finished, with their job id), and a fault: kill -9 of a horse, of a whole pool, a Redis restart,
a broken ``site_config.json``, a job that swallows its timeout. Every acknowledged enqueue must
have run exactly once (or, with ``retry=2``, once more after the kill cut its run off), and the
engine must recover within the targets (15 s after a worker death, 5 s after Redis returns).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from benchmarks.faults import (
    REDIS_RECOVERY_TARGET,
    WORKER_RECOVERY_TARGET,
    Stream,
    Tally,
    first_start_after,
    read_evidence,
    running_jobs_of,
    tally,
    unfinished,
)
from bgcore.db.joblog import failures
from tests import test_engine_pool, test_engine_recovery
from tests.conftest import BenchDir
from tests.test_engine_pool import (
    PoolProcess,
    Pools,
    enqueue,
    exc_string,
    status,
    wait_status,
    wait_until,
)
from tests.test_engine_recovery import PrivateRedis

# The fixtures of those modules, shared by name (pytest finds them in this module's namespace).
pools = test_engine_pool.pools
private_redis = test_engine_recovery.private_redis

SITES = ("a.test", "b.test")
pytestmark = pytest.mark.slow


def _horse_running_a_job(pool: PoolProcess, evidence: Path) -> int:
    found: int = wait_until(lambda: next((pid for pid in pool.horse_pids() if running_jobs_of(evidence, {pid})), 0),
                            "a horse of the pool to be running a job")
    return found


def _settle(stream: Stream, evidence: Path, client: redis.Redis, retried: bool, timeout: float = 20) -> Tally:
    """Stop the stream, wait until every acknowledged job finished (or failed for good); count."""
    stream.stop()
    assert stream.acked, f"no enqueue was acknowledged: {dict(stream.errors)}"
    wait_until(lambda: all(status(client, j) == "failed" for j in unfinished(evidence, stream.acked)),
               lambda: f"every acknowledged job to finish; left: {unfinished(evidence, stream.acked)[:5]}", timeout)
    return tally(stream.enqueued, stream.acked, read_evidence(evidence), retried=retried)


def _recovered_after_kill(evidence: Path, t_fault: float, interrupted: set[str]) -> float:
    """Seconds from the kill until a job ran again and every job cut off by it started again."""
    def again() -> float | None:
        times = [first_start_after(evidence, t_fault), *(first_start_after(evidence, t_fault, {j}) for j in interrupted)]
        return None if None in times else max(t for t in times if t is not None)
    at: float | None = wait_until(again, f"jobs to run again, and {sorted(interrupted)} to be retried", 25)
    assert at is not None
    return at - t_fault


def test_kill_9_of_a_horse_loses_nothing_and_reruns_only_the_cut_off_job(
        pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path) -> None:
    # Given a pool of 2 under a steady stream of jobs enqueued with retry=2
    evidence = tmp_path / "ev.jsonl"
    pool = pools.start_ready(pool=2)
    stream = Stream(bench_dir.path, SITES, evidence, retry=2)
    stream.start()
    try:
        # When one of its horses is killed with SIGKILL while it runs a job
        horse = _horse_running_a_job(pool, evidence)
        os.kill(horse, signal.SIGKILL)
        t_fault = time.time()
        wait_until(lambda: horse not in pool.horse_pids(), "the killed horse to be reaped")
        interrupted = running_jobs_of(evidence, {horse})  # a dead horse writes no more lines
        # Then jobs run again and the cut-off job is retried within the target
        recover = _recovered_after_kill(evidence, t_fault, interrupted)
    finally:
        stream.stop()
    result = _settle(stream, evidence, redis_client, retried=True)
    # And no acknowledged job was lost, none ran twice but the one the kill cut off
    assert (result.lost, result.twice_unexpected) == (0, 0), result
    assert result.twice_allowed <= len(interrupted) and result.once + result.twice_allowed == result.acked
    assert recover <= WORKER_RECOVERY_TARGET
    assert pool.proc.poll() is None


def test_kill_9_of_a_whole_worker_has_its_jobs_rerun_by_the_surviving_pool(
        pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path) -> None:
    # Given two pools of 2 under a steady stream of jobs enqueued with retry=2
    evidence = tmp_path / "ev.jsonl"
    doomed = pools.start_ready(pool=2)
    survivor = pools.start_ready(pool=2)
    stream = Stream(bench_dir.path, SITES, evidence, retry=2)
    stream.start()
    try:
        # When the whole first pool (parent first, then its horses) is killed while one of them runs a job
        _horse_running_a_job(doomed, evidence)
        horses = set(doomed.horse_pids())
        doomed.kill_everything()
        t_fault = time.time()
        interrupted = running_jobs_of(evidence, horses)
        # Then the survivor settles and reruns its jobs within 3 heartbeats
        recover = _recovered_after_kill(evidence, t_fault, interrupted)
    finally:
        stream.stop()
    result = _settle(stream, evidence, redis_client, retried=True)
    assert (result.lost, result.twice_unexpected) == (0, 0), result
    assert result.twice_allowed <= len(interrupted)
    assert recover <= WORKER_RECOVERY_TARGET, recover
    assert survivor.proc.poll() is None


def test_standalone_pools_ride_out_a_redis_restart_under_load(
        pools: Pools, bench_dir: BenchDir, private_redis: PrivateRedis, tmp_path: Path) -> None:
    # Given two standalone pools on a Redis with its AOF, under a steady stream (no retry)
    bench_dir.write_common(redis_queue=private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    evidence = tmp_path / "ev.jsonl"
    started = [pools.start_ready(pool=2), pools.start_ready(pool=2)]
    stream = Stream(bench_dir.path, SITES, evidence)
    stream.start()
    try:
        wait_until(lambda: len(stream.acked) >= 5 and not unfinished(evidence, stream.acked[:3]),
                   "the first jobs to run")
        # When Redis stops, stays down 2 s, and starts again on the same port and directory
        private_redis.stop()
        time.sleep(2.0)  # the fault itself: the length of the outage
        private_redis.start()
        t_back = time.time()
        # Then jobs run again within the target
        at = wait_until(lambda: first_start_after(evidence, t_back), "a job to start after Redis returned", 15)
        assert at is not None
        recover = at - t_back
        after = len(stream.acked)
        wait_until(lambda: len(stream.acked) >= after + 3 and not unfinished(evidence, stream.acked[after:after + 3]),
                   "jobs enqueued after the outage to run")
    finally:
        stream.stop()
    result = _settle(stream, evidence, client, retried=False)
    # And no acknowledged job was lost or ran twice; both pools are still the processes started
    assert (result.lost, result.twice_unexpected, result.twice_allowed) == (0, 0, 0), result
    assert recover <= REDIS_RECOVERY_TARGET, recover
    assert all(p.proc.poll() is None for p in started), [p.output() for p in started]
    assert stream.errors, "some enqueues must have failed while Redis was down"


@pytest.mark.parametrize("corruption", [b'{"installed_apps": ["testapp"', b'{"installed_apps": ["\xff\xfe"]}'],
                         ids=["invalid-json", "non-utf8"])
def test_a_broken_site_config_fails_that_sites_jobs_alone_and_requeue_recovers_them(
        pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path, corruption: bytes) -> None:
    # Given a third site, a pool under a stream of the two other sites' jobs, and delayed jobs of the third
    import bgcore

    config_file = bench_dir.add_site("broken.test") / "site_config.json"
    bench_dir.cli("migrate", check=True)
    good = config_file.read_bytes()
    evidence = tmp_path / "ev.jsonl"
    pools.start_ready(pool=2)
    stream = Stream(bench_dir.path, SITES, evidence)
    stream.start()
    try:
        with bgcore.connect("broken.test", bench_dir.bench()):
            broken = [str(bgcore.enqueue_in(1, "testapp.engine_tasks.sleep_noted", path=str(evidence), seconds=0.2).id)
                      for _ in range(3)]
        # When the third site's config is corrupted before they are due
        config_file.write_bytes(corruption)
        # Then they fail, with an error naming the file
        for job_id in broken:
            wait_status(redis_client, job_id, "failed")
            error = exc_string(redis_client, job_id)
            assert "ConfigError" in error and "broken.test/site_config.json" in error, error
        # And after the fix, `bgcore jobs requeue --site broken.test --all` runs them
        config_file.write_bytes(good)
        bench_dir.cli("jobs", "requeue", "--site", "broken.test", "--all", check=True)
        wait_until(lambda: not unfinished(evidence, broken), "the requeued jobs to run")
    finally:
        stream.stop()
    # And the other sites lost nothing; each job (the requeued ones included) ran once
    result = _settle(stream, evidence, redis_client, retried=False)
    assert (result.lost, result.twice_unexpected) == (0, 0), result
    assert tally(3, broken, read_evidence(evidence), retried=False).once == 3


def test_a_job_swallowing_its_timeout_is_killed_within_two_seconds_and_recorded_timeout(
        pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path) -> None:
    # Given a pool of 2 under a steady stream, and a job that catches JobTimeoutException and loops on
    evidence, runaway = tmp_path / "ev.jsonl", tmp_path / "runaway.jsonl"
    pools.start_ready(pool=2)
    stream = Stream(bench_dir.path, SITES, evidence, rate=4.0)
    stream.start()
    try:
        job_id = enqueue(bench_dir, "swallow_forever", timeout=2, path=str(runaway))
        lines = wait_until(lambda: read_evidence(runaway).get(job_id), "the runaway job to start")
        assert lines
        started = lines[0]
        deadline = started["t"] + 2

        def horse_gone() -> bool:
            try:
                os.kill(started["pid"], 0)
                return False
            except ProcessLookupError:
                return True
        # Then its horse is killed within 2 s of the deadline, and the job is failed as a timeout
        wait_until(horse_gone, "the runaway horse to be killed", 10)
        killed_after = time.time() - deadline
        wait_status(redis_client, job_id, "failed")
    finally:
        stream.stop()
    assert killed_after <= 2.0, killed_after
    assert any(line["tag"] == "caught" for line in read_evidence(runaway).get(job_id, []))  # it did swallow one
    the_bench = bench_dir.bench()
    rows = wait_until(lambda: [r for r in failures(the_bench, the_bench.site_config("a.test")) if r.job_id == job_id],
                      "the job-log row")
    assert rows[0].status == "timeout"
    # And the other jobs kept running meanwhile, and none was lost
    result = _settle(stream, evidence, redis_client, retried=False)
    meanwhile = [line for lines in read_evidence(evidence).values() for line in lines
                 if line["tag"] == "started" and started["t"] < line["t"] < deadline]
    assert meanwhile, "no other job ran while the runaway job looped"
    assert (result.lost, result.twice_unexpected) == (0, 0), result
