"""Job metrics (issue 10): counted by the lifecycle middleware, kept in Redis, served as Prometheus text.

In-process tests drive :class:`JobMetrics` with an injected clock and the engine's real
take/finish protocol on the session's real redis-server; the slow ones run a real pool
of two horses and the real ``bgcore metrics`` process, and read ``/metrics`` over HTTP.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq.job import Job
from wsgiref.util import setup_testing_defaults

import bgcore
import bgcore.metrics as metrics
from bgcore import keys
from bgcore.engine.lifecycle import JobRun, LostJob
from bgcore.errors import ConfigError, InvalidArgument
from bgcore.metrics.middleware import JobMetrics
from bgcore.metrics.server import check_listen, metrics_app
from bgcore.processes import free_port
from bgcore.rqbridge import SERIALIZER, broker
from bgcore.scheduler import presence
from tests.cli_support import run
from tests.conftest import BenchDir
from tests.test_engine_pool import Pools, bgcore_command, wait_until

UTC = timezone.utc
NOW = datetime(2026, 5, 4, 10, 20, 30, tzinfo=UTC)
MINUTE = int(NOW.timestamp()) // 60 * 60


# -- helpers ------------------------------------------------------------------------------------


class FakeMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_run(bench: Any, queue: str = "short", error: BaseException | None = None) -> JobRun:
    run = JobRun(bench=bench, job_id=keys.job_id("a.test", "j"), site="a.test", method="testapp.tasks.noop",
                 kwargs={}, queue=queue)
    run.error = error
    return run


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text body: (name, labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def family_names(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def fail_one(bench: Any, site: str, queue: str = "short") -> str:
    """A job of ``site`` that failed, through the engine's own take and finish (no worker process).

    Call it before queueing other jobs of ``site`` in ``queue``: the take takes the oldest.
    """
    with bgcore.connect(site, bench=bench):
        job_id = str(bgcore.enqueue("testapp.tasks.fail", queue=queue).id)
    engine = broker(bench)
    taken = engine.take("test-horse", [(queue, 300)])
    assert taken is not None and taken.job_id == job_id
    assert engine.finish("test-horse", job_id, queue, error="RuntimeError: boom")
    return job_id


def enqueue(bench: Any, site: str, method: str = "testapp.tasks.noop", queue: str = "short", **kwargs: Any) -> str:
    with bgcore.connect(site, bench=bench):
        return str(bgcore.enqueue(method, queue=queue, **kwargs).id)


# -- counting: batched, per queue, per minute -----------------------------------------------------


def test_runs_are_counted_in_memory_and_written_once_when_the_horse_stops(bench_dir: BenchDir,
                                                                           redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    counter = JobMetrics(flush_every=60.0, clock=lambda: NOW, monotonic=FakeMonotonic())
    # Given 3 finished runs and 1 failed run on `short`, within the flush interval
    for _ in range(3):
        counter.after_job(a_run(bench))
    counter.after_job(a_run(bench, error=RuntimeError("boom")))
    # Then nothing reached Redis yet (no round trip per job)
    assert redis_client.keys(f"bgcore:{bench.bench_id}:metrics:*") == []
    # When the horse stops
    counter.horse_stopping(bench)
    # Then the counters, the histogram and this minute's throughput hold them
    found = samples(metrics.render(bench, clock=lambda: NOW)[0].decode())
    assert value(found, "bgcore_jobs_total", queue="short", outcome="finished") == 3
    assert value(found, "bgcore_jobs_total", queue="short", outcome="failed") == 1
    assert value(found, "bgcore_jobs_total", queue="default", outcome="finished") == 0
    assert value(found, "bgcore_job_duration_seconds_count", queue="short") == 4
    assert value(found, "bgcore_job_duration_seconds_bucket", queue="short", le="+Inf") == 4
    history = metrics.throughput(bench, 60, now=NOW)
    assert set(history) == set(bench.queues)
    assert len(history["short"]) == 60
    assert history["short"][-1] == (MINUTE, 3, 1)
    assert history["short"][0] == (MINUTE - 59 * 60, 0, 0)
    assert [m for m, _, _ in history["short"]] == sorted(m for m, _, _ in history["short"])
    assert all(entry[1:] == (0, 0) for entry in history["default"])


def test_a_busy_horse_writes_about_once_per_flush_interval(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    mono = FakeMonotonic()
    counter = JobMetrics(flush_every=1.0, clock=lambda: NOW, monotonic=mono)
    outcomes = keys.metrics_outcomes(bench.bench_id, "short")
    # Given runs ending within one second: none written
    for _ in range(5):
        mono.now += 0.1
        counter.after_job(a_run(bench))
    assert redis_client.hget(outcomes, "finished") is None
    # When a run ends a second after the last write
    mono.now += 0.6
    counter.after_job(a_run(bench))
    # Then all six are written together, and going idle with nothing new writes nothing more
    assert redis_client.hget(outcomes, "finished") == b"6"
    counter.horse_idle(bench)
    assert redis_client.hget(outcomes, "finished") == b"6"


def test_outcomes_durations_and_minutes_are_kept_apart(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    clock = [NOW]
    counter = JobMetrics(flush_every=0.0, clock=lambda: clock[0])
    # Given a run on `long` that took ~2 s, a retried one, and one a minute later
    slow = a_run(bench, queue="long")
    slow.started_mono -= 2.0
    counter.after_job(slow)
    retried = a_run(bench, queue="long", error=RuntimeError("again"))
    retried.retry = SimpleNamespace(delay=1.0)  # type: ignore[assignment]
    counter.after_job(retried)
    clock[0] = NOW + timedelta(minutes=1)
    counter.after_job(a_run(bench, queue="long"))
    found = samples(metrics.render(bench, clock=lambda: clock[0])[0].decode())
    # Then the slow run is above 1 s and at or below 2.5 s
    assert value(found, "bgcore_job_duration_seconds_bucket", queue="long", le="1") == 2  # the two fast ones
    assert value(found, "bgcore_job_duration_seconds_bucket", queue="long", le="2.5") == 3
    assert value(found, "bgcore_job_duration_seconds_sum", queue="long") >= 2.0
    assert value(found, "bgcore_jobs_total", queue="long", outcome="retried") == 1
    # And each minute has its own runs (a retried run counts as failed in the throughput)
    history = metrics.throughput(bench, 2, now=clock[0])["long"]
    assert history == [(MINUTE, 1, 1), (MINUTE + 60, 1, 0)]
    assert 0 < redis_client.ttl(keys.metrics_minute(bench.bench_id, MINUTE)) <= 2 * 3600 + 120


def test_a_job_lost_with_its_horse_is_counted_at_once_in_the_pool_parent(bench_dir: BenchDir,
                                                                          redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    counter = JobMetrics(flush_every=60.0, clock=lambda: NOW)
    job = SimpleNamespace(origin=keys.queue_name(bench.bench_id, "default"))
    # When the pool parent settles two jobs of dead horses: one killed past its deadline, one killed
    counter.horse_lost(LostJob(bench, job, "timeout", "killed past its deadline", NOW))
    counter.horse_lost(LostJob(bench, job, "failed", "WorkHorseKilled", NOW))
    # Then both are written at once, outside the histogram (their run time is unknown)
    found = samples(metrics.render(bench, clock=lambda: NOW)[0].decode())
    assert value(found, "bgcore_jobs_total", queue="default", outcome="timeout") == 1
    assert value(found, "bgcore_jobs_total", queue="default", outcome="lost") == 1
    assert value(found, "bgcore_job_duration_seconds_count", queue="default") == 0
    assert metrics.throughput(bench, 1, now=NOW)["default"] == [(MINUTE, 0, 2)]


def test_counts_wait_in_memory_while_redis_is_away_and_go_out_after(bench_dir: BenchDir,
                                                                   redis_client: redis.Redis) -> None:
    # Given a bench whose Redis does not answer
    port = free_port()
    bench_dir.write_common(redis_queue=f"redis://127.0.0.1:{port}/0")
    away = bench_dir.bench()
    counter = JobMetrics(flush_every=0.0, clock=lambda: NOW)
    counter.after_job(a_run(away))  # logged once, kept
    assert counter.tally
    # When Redis is back (the same bench on the session's Redis)
    bench_dir.write_common()
    back = bench_dir.bench()
    counter.after_job(a_run(back))
    # Then both runs are counted
    assert not counter.tally
    assert redis_client.hget(keys.metrics_outcomes(back.bench_id, "short"), "finished") == b"2"


def test_throughput_refuses_a_window_it_does_not_keep(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    for bad in (0, 121, "60", 1.5, True):
        with pytest.raises(InvalidArgument, match="minutes must be a whole number from 1 to 120"):
            metrics.throughput(bench, bad, now=NOW)  # type: ignore[arg-type]


# -- the Prometheus view --------------------------------------------------------------------------


def test_metrics_show_queue_states_workers_and_the_scheduler(bench_dir: BenchDir,
                                                             redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    # Given 2 queued jobs, 1 delayed, 1 failed on `short`, and a leading scheduler that ticked 4 s ago
    fail_one(bench, "a.test")
    enqueue(bench, "a.test")
    enqueue(bench, "b.test")
    with bgcore.connect("a.test", bench=bench):
        bgcore.enqueue_in(3600, "testapp.tasks.noop", queue="short")
    redis_client.set(keys.scheduler_lease(bench.bench_id), "host:1:abc")
    presence.publish(redis_client, bench.bench_id, "host:1:abc", role="leader", now=NOW,
                     last_tick=NOW - timedelta(seconds=4), lease_seconds=15)
    body, content_type = metrics.render(bench, clock=lambda: NOW)
    found = samples(body.decode())
    # Then
    assert content_type.startswith("text/plain")
    assert value(found, "bgcore_jobs", queue="short", state="queued") == 2
    assert value(found, "bgcore_jobs", queue="short", state="scheduled") == 1
    assert value(found, "bgcore_jobs", queue="short", state="failed") == 1
    assert value(found, "bgcore_jobs", queue="short", state="running") == 0
    assert value(found, "bgcore_jobs", queue="long", state="queued") == 0
    assert value(found, "bgcore_workers", queue="short") == 0
    assert value(found, "bgcore_scheduler_leader") == 1
    assert value(found, "bgcore_scheduler_last_tick_timestamp_seconds") == (NOW - timedelta(seconds=4)).timestamp()
    assert value(found, "bgcore_scheduler_tick_lag_seconds") == 4
    # And no label names a worker or (without metrics_site_labels) a site
    labels = {name for (_, pairs) in found for name, _ in pairs}
    assert labels <= {"queue", "state", "outcome", "le"}
    assert "bgcore_site_jobs" not in family_names(body.decode())


def test_without_a_leader_the_scheduler_gauges_say_so(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    found = samples(metrics.render(bench_dir.bench(), clock=lambda: NOW)[0].decode())
    assert value(found, "bgcore_scheduler_leader") == 0
    assert not any(name == "bgcore_scheduler_tick_lag_seconds" for name, _ in found)


def test_site_labels_appear_only_with_metrics_site_labels(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    # Given 2 queued jobs and 1 failed job of a.test, none of b.test
    fail_one(bench, "a.test")
    enqueue(bench, "a.test")
    enqueue(bench, "a.test", queue="long")
    # When the switch is on
    bench_dir.write_common(metrics_site_labels=True)
    text = metrics.render(bench_dir.bench(), clock=lambda: NOW)[0].decode()
    found = samples(text)
    # Then every site has two series, queued (all queues) and failed
    assert value(found, "bgcore_site_jobs", site="a.test", state="queued") == 2
    assert value(found, "bgcore_site_jobs", site="a.test", state="failed") == 1
    assert value(found, "bgcore_site_jobs", site="b.test", state="queued") == 0
    assert value(found, "bgcore_site_jobs", site="b.test", state="failed") == 0
    assert len([k for k in found if k[0] == "bgcore_site_jobs"]) == 2 * 2
    # And off (explicitly) there is no site label at all
    bench_dir.write_common(metrics_site_labels=False)
    assert "bgcore_site_jobs" not in family_names(metrics.render(bench_dir.bench(), clock=lambda: NOW)[0].decode())


def test_a_bad_metrics_site_labels_value_is_one_clear_error(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    bench_dir.write_common(metrics_site_labels="yes")
    with pytest.raises(ConfigError, match="metrics_site_labels must be true or false, found 'yes'"):
        metrics.render(bench_dir.bench())


def test_two_benches_on_one_redis_never_see_each_others_metrics(bench_dir: BenchDir, redis_client: redis.Redis,
                                                               redis_server: str, tmp_path: Path) -> None:
    # Given a second bench on the same Redis, with a queued job, a failed job and counts of its own
    other = BenchDir(tmp_path / "other", redis_server)
    other.sites.mkdir(parents=True)
    other.write_common(metrics_site_labels=True)
    other.add_site("a.test")
    theirs = other.bench()
    fail_one(theirs, "a.test")
    enqueue(theirs, "a.test")
    JobMetrics(flush_every=0.0, clock=lambda: NOW).after_job(a_run(theirs))
    before = {k: redis_client.dump(k) for k in redis_client.keys(f"bgcore:{theirs.bench_id}:*")}
    # When this bench counts runs and is scraped
    bench_dir.write_common(metrics_site_labels=True)
    ours = bench_dir.bench()
    assert ours.bench_id != theirs.bench_id
    JobMetrics(flush_every=0.0, clock=lambda: NOW).after_job(a_run(ours, error=RuntimeError("x")))
    found = samples(metrics.render(ours, clock=lambda: NOW)[0].decode())
    # Then it sees only its own numbers, and the other bench's keys did not change
    assert value(found, "bgcore_jobs", queue="short", state="queued") == 0
    assert value(found, "bgcore_jobs", queue="short", state="failed") == 0
    assert value(found, "bgcore_jobs_total", queue="short", outcome="finished") == 0
    assert value(found, "bgcore_jobs_total", queue="short", outcome="failed") == 1
    assert value(found, "bgcore_site_jobs", site="a.test", state="failed") == 0
    assert metrics.throughput(ours, 1, now=NOW)["short"] == [(MINUTE, 0, 1)]
    assert metrics.throughput(theirs, 1, now=NOW)["short"] == [(MINUTE, 1, 0)]
    assert {k: redis_client.dump(k) for k in redis_client.keys(f"bgcore:{theirs.bench_id}:*")} == before


# -- the endpoint: authentication and bad input ---------------------------------------------------


def call(app: Any, path: str = "/metrics", authorization: str | None = None) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


def basic(password: str, user: str = "prometheus") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_with_a_password_every_request_needs_it_as_basic_or_bearer(bench_dir: BenchDir,
                                                                  redis_client: redis.Redis) -> None:
    bench_dir.write_common(dashboard_password="s3cret")
    bench = bench_dir.bench()
    app = metrics_app(bench, check_listen(bench, "0.0.0.0", 8010))
    assert call(app)[0].startswith("401")
    assert "WWW-Authenticate" in call(app)[1]
    assert call(app, authorization=basic("wrong"))[0].startswith("401")
    assert call(app, authorization="Bearer wrong")[0].startswith("401")
    assert call(app, authorization="Basic not-base64!")[0].startswith("401")
    status, headers, body = call(app, authorization=basic("s3cret"))
    assert status == "200 OK" and headers["Content-Type"].startswith("text/plain")
    assert "bgcore_jobs" in family_names(body.decode())
    assert call(app, authorization="Bearer s3cret")[0] == "200 OK"
    assert call(app, "/other", authorization="Bearer s3cret")[0].startswith("404")


def test_without_a_password_loopback_is_open_and_other_addresses_are_refused(bench_dir: BenchDir,
                                                                             redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    for host in ("127.0.0.1", "localhost", "::1"):
        assert check_listen(bench, host, 8010) is None
    assert call(metrics_app(bench, None))[0] == "200 OK"
    for host in ("0.0.0.0", "192.0.2.1", "metrics.example.com"):
        with pytest.raises(InvalidArgument, match="refuses to listen on .* without a password: set dashboard_password"):
            check_listen(bench, host, 8010)


def test_metrics_cli_refuses_bad_input_with_one_line(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    for args, message in (
        (["--port", "70000"], "--port must be a port number from 1 to 65535, found 70000"),
        (["--port", "0"], "--port must be a port number from 1 to 65535, found 0"),
        (["--host", "0.0.0.0"], "refuses to listen on '0.0.0.0' without a password"),
    ):
        result = run(bench_dir, "metrics", *args)
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    bench_dir.write_common(dashboard_password=5)  # (an empty one is an unset one: open, on loopback only)
    result = run(bench_dir, "metrics")
    assert result.exit_code == 1 and "dashboard_password must be a non-empty string" in result.stderr
    assert "5" not in result.stderr.split("found", 1)[1]  # a wrong password is never shown


def test_metrics_cli_says_when_its_port_is_taken(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(bench_dir, "metrics", "--port", str(port))
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "choose another --port" in result.stderr


# -- end to end: a real pool of two horses, the real `bgcore metrics` process ---------------------


@pytest.fixture
def worker_pools(bench_dir: BenchDir) -> Iterator[Pools]:
    """A migrated bench and a starter of ``bgcore worker`` pools, all stopped (by PID) at the end."""
    bench_dir.cli("migrate", check=True)
    started = Pools(bench_dir)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def metrics_server(bench_dir: BenchDir) -> Iterator[Any]:
    """Starts ``bgcore metrics`` processes for a test; stops them (by PID) afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> str:
        port = free_port()
        env = dict(os.environ, BGCORE_BENCH=str(bench_dir.path))
        proc = subprocess.Popen([*bgcore_command(), "--bench", str(bench_dir.path), "metrics", "--port", str(port),
                                 *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        started.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""
        assert f":{port}/metrics" in line, f"bgcore metrics did not start: {line}"
        return f"http://127.0.0.1:{port}/metrics"

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def fetch_text(url: str, authorization: str | None = None) -> str:
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain")
        return str(answer.read().decode())


@pytest.mark.slow
def test_a_real_pool_of_two_horses_counts_known_jobs_and_bgcore_metrics_serves_them(
        worker_pools: Pools, bench_dir: BenchDir, redis_client: redis.Redis, metrics_server: Any) -> None:
    bench = bench_dir.bench()
    short = keys.queue_name(bench.bench_id, "short")
    # Given a pool of two horses on `short`, both registered
    pool = worker_pools.start(pool=2, queue="short")
    wait_until(lambda: redis_client.scard(keys.rq_queue_workers(short)) == 2, "two horses registered on short")
    # When 3 jobs that finish (each takes a moment, so both horses work) and 1 that fails run
    done = [enqueue(bench, site, "testapp.tasks.sleep", seconds=0.4) for site in ("a.test", "b.test", "a.test")]
    failed = enqueue(bench, "b.test", "testapp.tasks.fail")
    wait_until(lambda: redis_client.zcard(keys.finished_registry(short)) == 3
               and redis_client.zcard(keys.failed_registry(short)) == 1, lambda: f"the jobs to end:\n{pool.output()}")
    # Then the runs happened in two horse processes
    horses = {Job.fetch(i, connection=redis_client, serializer=SERIALIZER).latest_result().worker_name  # type: ignore[union-attr]
              for i in [*done, failed]}
    assert len(horses) == 2, horses
    # And once the horses went idle (their batches written), the counters add both horses' runs
    outcomes = keys.metrics_outcomes(bench.bench_id, "short")
    wait_until(lambda: redis_client.hgetall(outcomes) == {b"finished": b"3", b"failed": b"1"},
               lambda: f"the counters of both horses (now {redis_client.hgetall(outcomes)})")
    for text in (metrics.render(bench)[0].decode(), fetch_text(metrics_server())):
        found = samples(text)
        assert value(found, "bgcore_jobs_total", queue="short", outcome="finished") == 3
        assert value(found, "bgcore_jobs_total", queue="short", outcome="failed") == 1
        assert value(found, "bgcore_jobs_total", queue="short", outcome="timeout") == 0
        assert value(found, "bgcore_job_duration_seconds_count", queue="short") == 4
        assert value(found, "bgcore_job_duration_seconds_bucket", queue="short", le="0.25") <= 1
        assert value(found, "bgcore_job_duration_seconds_sum", queue="short") >= 3 * 0.4
        assert value(found, "bgcore_jobs", queue="short", state="failed") == 1
        assert value(found, "bgcore_jobs", queue="short", state="queued") == 0
        assert value(found, "bgcore_jobs", queue="short", state="running") == 0
        assert value(found, "bgcore_workers", queue="short") == 2
        assert value(found, "bgcore_workers", queue="default") == 0
    # And this minute's throughput (or the last two, if a minute ended meanwhile) holds them
    history = metrics.throughput(bench, 2)["short"]
    assert (sum(f for _, f, _ in history), sum(f for _, _, f in history)) == (3, 1)


@pytest.mark.slow
def test_bgcore_metrics_with_a_password_needs_it_over_http(bench_dir: BenchDir, redis_client: redis.Redis,
                                                           metrics_server: Any) -> None:
    bench_dir.write_common(dashboard_password="s3cret")
    url = metrics_server()
    with pytest.raises(urllib.error.HTTPError) as refused:
        fetch_text(url)
    assert refused.value.code == 401
    assert "bgcore_jobs" in family_names(fetch_text(url, basic("s3cret")))
    assert "bgcore_jobs" in family_names(fetch_text(url, "Bearer s3cret"))


def test_a_horse_forked_while_the_parent_holds_unsent_counts_does_not_send_them_too(
        bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    # Given a pool parent whose count of a lost job could not be written (Redis away)
    port = free_port()
    bench_dir.write_common(redis_queue=f"redis://127.0.0.1:{port}/0")
    counter = JobMetrics(flush_every=0.0, clock=lambda: NOW)
    job = SimpleNamespace(origin=keys.queue_name(bench_dir.bench().bench_id, "default"))
    counter.horse_lost(LostJob(bench_dir.bench(), job, "failed", "WorkHorseKilled", NOW))
    assert counter.tally
    # When a horse is forked and runs a job once Redis answers
    bench_dir.write_common()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the horse
        try:
            counter.after_job(a_run(bench_dir.bench(), queue="default"))
            os.write(write, b"ok")
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 2) == b"ok"
    # Then the horse sent only its own run; the lost job is the parent's to send
    outcomes = keys.metrics_outcomes(bench_dir.bench().bench_id, "default")
    assert redis_client.hgetall(outcomes) == {b"finished": b"1"}
    # And the parent sends it with its next write (a second lost job)
    counter.horse_lost(LostJob(bench_dir.bench(), job, "failed", "WorkHorseKilled", NOW))
    assert redis_client.hgetall(outcomes) == {b"finished": b"1", b"lost": b"2"}


@pytest.mark.slow
def test_a_burst_worker_writes_its_last_counts_as_its_horse_leaves(bench_dir: BenchDir,
                                                                   redis_client: redis.Redis) -> None:
    # Given 5 quick jobs on `short` (a horse in burst mode never waits idle: it leaves once they are done)
    bench_dir.cli("migrate", check=True)
    bench = bench_dir.bench()
    for index in range(5):
        enqueue(bench, ("a.test", "b.test")[index % 2])
    # When a burst worker drains the queue and exits
    result = bench_dir.cli("worker", "--queue", "short", "--burst", "--quiet", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # Then every run was written before its horse left
    assert redis_client.hgetall(keys.metrics_outcomes(bench.bench_id, "short")) == {b"finished": b"5"}
    assert sum(f for _, f, _ in metrics.throughput(bench, 2)["short"]) == 5


def test_a_scrape_while_redis_is_away_answers_503_saying_why(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    bench_dir.write_common(redis_queue=f"redis://127.0.0.1:{free_port()}/0")
    status, _, body = call(metrics_app(bench_dir.bench(), None))
    assert status.startswith("503")
    assert body.decode().startswith("metrics unavailable: ") and body.count(b"\n") == 1
