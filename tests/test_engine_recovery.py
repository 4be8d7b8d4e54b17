"""Dead workers and Redis outages: jobs are settled, not stranded; pools ride out a Redis restart."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.job import Job

import bgcore
from bgcore import keys
from bgcore.bench import Bench
from bgcore.engine.broker import Broker
from bgcore.engine.middleware import default_middleware
from bgcore.engine.outage import GaveUp, Outage
from bgcore.engine.pool import register
from bgcore.engine.recovery import dead_workers, recover_dead_workers
from bgcore.migrate import migrate_site
from bgcore.processes import free_port, wait_for_redis
from bgcore.rqbridge import SERIALIZER

from tests.conftest import BenchDir
from tests.test_engine_delays_retries import _log_rows
from tests.test_engine_pool import Pools, evidence, pools, wait_status, wait_until  # noqa: F401 - fixture

QUEUE = "default"


def _ghost_takes_a_job(bench: Bench, hostname: str, **enqueue_options: object) -> str:
    """A horse 'ghost' on ``hostname`` registers and takes a job (then, in the tests, vanishes)."""
    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue("testapp.tasks.noop", **enqueue_options)
    register(bench.redis(), "ghost", [bench.queues[QUEUE]], bench.bench_id, hostname, ttl=60, pid=999999)
    taken = Broker(bench.redis(), bench.bench_id).take("ghost", [(QUEUE, 300)])
    assert taken is not None and taken.job_id == job.id
    return str(job.id)


def _recover(bench: Bench, this_host: str = "this-host") -> list[str]:
    broker = Broker(bench.redis(), bench.bench_id)
    return recover_dead_workers(bench, broker, retry_defaults={}, this_host=this_host,
                                middleware=default_middleware(bench, timeouts=False))


def test_a_worker_whose_record_lapsed_has_its_job_failed_with_a_job_log_row(bench_dir: BenchDir) -> None:
    # Given a job taken by a horse on another host, whose record then lapses (no heartbeat)
    bench = bench_dir.bench()
    migrate_site(bench, "a.test")
    job_id = _ghost_takes_a_job(bench, "other-host")
    assert _recover(bench) == []  # alive as far as anyone can tell: its record is there
    bench.redis().delete(keys.rq_worker("ghost"))
    # When recovery runs
    assert _recover(bench) == [job_id]
    # Then the job failed with the reason, has its job-log row, and the worker is forgotten
    job = Job.fetch(job_id, connection=bench.redis(), serializer=SERIALIZER)
    assert job.get_status() == "failed" and "WorkerDied" in (job.latest_result().exc_string or "")
    assert [(r.job_id, r.status) for r in _log_rows(bench)] == [(job_id, "failed")]
    assert dead_workers(bench.redis(), bench.bench_id) == []
    assert _recover(bench) == []  # settled once


def test_a_dead_workers_job_with_a_retry_goes_back_to_its_queue(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    migrate_site(bench, "a.test")
    job_id = _ghost_takes_a_job(bench, "this-host", retry=1)  # same host: its pid 999999 is gone
    assert _recover(bench) == [job_id]
    job = Job.fetch(job_id, connection=bench.redis(), serializer=SERIALIZER)
    assert job.get_status() == "queued" and job.number_of_retries == 1
    assert [(r.status, r.attempt) for r in _log_rows(bench)] == [("retried", 1)]


def test_outage_logs_once_backs_off_and_gives_up_only_when_asked(caplog: pytest.LogCaptureFixture) -> None:
    # Given an operation that fails three times with a connection error, then answers
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) <= 3:
            raise redis.ConnectionError("Connection refused")
        return "ok"

    outage = Outage("test", sleep=slept.append, clock=lambda: float(len(calls)))
    with caplog.at_level("WARNING", logger="bgcore.engine.outage"):
        assert outage.call(flaky) == "ok"
    # Then one line when it started, one when it ended, and a growing (capped) backoff
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "unreachable" in lines[0] and "reachable again" in lines[1]
    assert slept == [0.1, 0.2, 0.4]
    # And a caller that stops waiting gives up instead of retrying for ever
    with pytest.raises(GaveUp):
        Outage("test", sleep=slept.append).call(lambda: (_ for _ in ()).throw(redis.ConnectionError("x")),
                                                give_up=lambda: True)


@pytest.mark.slow
def test_a_whole_worker_killed_has_its_running_job_settled_by_the_next_pool(
        pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, tmp_path: Path) -> None:
    # Given a pool running a long job
    out = tmp_path / "ev.jsonl"
    first = pools.start_ready(pool=1)
    with bgcore.connect("a.test", bench_dir.bench()):
        job = bgcore.enqueue("testapp.engine_tasks.sleep_noted", path=str(out), seconds=60)
    wait_until(lambda: evidence(out), "the long job to start")
    # When the whole worker is killed (parent first, so it cannot record anything), and another pool starts
    first.proc.send_signal(signal.SIGKILL)
    first.kill_everything()
    assert Job.fetch(job.id, connection=redis_client, serializer=SERIALIZER).get_status() == "started"
    pools.start_ready(pool=1)
    # Then the job is failed by the new pool's recovery, with its reason and job-log row
    failed = wait_status(redis_client, job.id, "failed")
    assert "WorkerDied" in (failed.latest_result().exc_string or "")
    wait_until(lambda: _log_rows(bench_dir.bench()), "the job-log row")


# -- a Redis restart under a running pool -------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test only, that can be stopped and started again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", "", "--appendonly", "yes", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for_redis(self.url, self.proc), "redis-server did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(10)


@pytest.mark.slow
def test_a_pool_rides_out_a_redis_restart_and_runs_what_comes_after(
        pools: Pools, bench_dir: BenchDir, private_redis: PrivateRedis, tmp_path: Path) -> None:
    # Given a pool on a Redis of its own that ran a job
    bench_dir.write_common(redis_queue=private_redis.url, worker_heartbeat_seconds=0.5)
    client = redis.Redis.from_url(private_redis.url)
    out = tmp_path / "ev.jsonl"
    pool = pools.start_ready(pool=2)
    with bgcore.connect("a.test", bench_dir.bench()):
        before = bgcore.enqueue("testapp.engine_tasks.record", path=str(out), tag="before")
    wait_status(client, before.id, "finished")
    # When Redis goes away for a moment and comes back on the same port (its AOF kept)
    private_redis.stop()
    wait_until(lambda: "Redis is unreachable" in pool.output(), "the pool to notice")
    private_redis.start()
    # Then the pool is still the same process and runs a job enqueued afterwards
    with bgcore.connect("a.test", Bench(bench_dir.path)):
        after = bgcore.enqueue("testapp.engine_tasks.record", path=str(out), tag="after")
    wait_status(redis.Redis.from_url(private_redis.url), after.id, "finished")
    assert pool.proc.poll() is None
    # And each process logged the outage once, with its end, and no traceback
    log = pool.output()
    assert "Traceback" not in log, log
    started = Counter(re.findall(r"(horse \S+|pool pid=\d+): Redis is unreachable", log))
    assert started and set(started.values()) == {1}, started
    assert log.count("Redis is reachable again") >= 1


def test_the_scheduler_logs_a_redis_outage_once_and_its_end(bench_dir: BenchDir,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from bgcore.scheduler.daemon import SchedulerDaemon

    # Given a daemon whose steps fail while Redis is away, then succeed
    daemon = SchedulerDaemon(bench_dir.bench())
    answers = iter([redis.ConnectionError("Connection refused")] * 5 + [None, None])

    def step() -> None:
        answer = next(answers)
        if answer is not None:
            raise answer

    with caplog.at_level("INFO"):
        for _ in range(7):
            daemon._guard(step)
    # Then the outage is one line when it starts and one when it ends, not one per step
    lines = [r.getMessage() for r in caplog.records if "Redis" in r.getMessage()]
    assert len(lines) == 2 and "unreachable" in lines[0] and "reachable again" in lines[1], lines


def test_an_idle_wait_longer_than_the_socket_timeout_is_no_outage(bench_dir: BenchDir, redis_server: str) -> None:
    # Given a client whose socket times out after 0.3 s (redis-py's default is 5 s)
    client = redis.Redis.from_url(redis_server, socket_timeout=0.3)
    broker = Broker(client, bench_dir.bench().bench_id)
    # When a horse waits longer than that for work that does not come
    # Then the wait just ends ("nothing came"), it is not an error
    assert broker.wait([QUEUE], 1.0) is False
    assert client.ping()
