"""Redis Sentinel end to end: a real master, its replica and three Sentinels on free ports; a real
``bgcore worker`` pool and a real ``bgcore schedule`` daemon; a steady stream of jobs from this process
(``bgcore.enqueue`` through Sentinel). The master is SIGKILLed; Sentinel promotes the replica; the
same worker and scheduler processes go on: jobs enqueued after the failover run, ticks continue.

What a failover may lose (acknowledged writes the replica had not received yet) is counted and
printed, not asserted: replication is asynchronous (README, "Redis Sentinel and failover").
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import bgcore
from bgcore.bench import Bench
from tests.cli_support import run
from tests.conftest import BenchDir
from tests.redis_topology import SentinelSetup, sentinel_setup, wait_until
from tests.test_scheduler_daemon_support import SchedBench, make_sched_bench

pytestmark = pytest.mark.slow

FAILOVER_SECONDS = 90  # generous: two cores shared by many test runs


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = sentinel_setup(tmp_path / "redis")
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture
def sentinel_bench(request: pytest.FixtureRequest, tmp_path: Path, sentinels: SentinelSetup) -> Iterator[SchedBench]:
    """A bench on ``redis_sentinel`` (no redis_queue) whose sites run an ``all`` event every 1 s tick;
    ``redis_wait_replicas`` from the test's ``wait`` parameter."""
    bench_dir = BenchDir(tmp_path / "bench", redis_url="")
    bench_dir.sites.mkdir(parents=True)
    sched = make_sched_bench(bench_dir, ["every"], redis_queue=None, redis_sentinel=sentinels.config(),
                             redis_wait_replicas=request.node.callspec.params["wait"])
    for site in ("a.test", "b.test"):  # the stream's jobs are testapp's
        sched.add_site(site, installed_apps=[sched.app, "testapp"])
    try:
        yield sched
    finally:
        sched.stop_all()


class Stream:
    """Enqueue ``testapp.tasks.record`` jobs, one every ``pause`` seconds, in a thread; remember what was acked."""

    def __init__(self, bench: Bench, evidence: Path, pause: float = 0.05) -> None:
        self.bench, self.evidence, self.pause = bench, evidence, pause
        self.acked: list[tuple[str, float]] = []  # (tag, time acknowledged)
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            tag = f"n{n}"
            try:
                with bgcore.connect("a.test", bench=self.bench):
                    bgcore.enqueue("testapp.tasks.record", queue="short", path=str(self.evidence), tag=tag)
                self.acked.append((tag, time.time()))
            except (redis.RedisError, bgcore.BgcoreError) as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            self._stop.wait(self.pause)

    def acked_after(self, moment: float) -> list[str]:
        return [tag for tag, at in self.acked if at > moment]


def ran(evidence: Path) -> list[str]:
    if not evidence.exists():
        return []
    return [json.loads(line)["tag"] for line in evidence.read_text().split("\n")[:-1] if line.strip()]


@pytest.mark.parametrize(("fault", "wait"), [("kill", 0), ("kill", 1), ("demote", 0), ("freeze", 0)],
                         ids=["kill-master", "kill-master-wait-1-replica", "sentinel-failover-demotes-master",
                              "master-frozen-no-tcp-reset"])
def test_workers_and_the_scheduler_carry_on_through_a_sentinel_failover(
        sentinel_bench: SchedBench, sentinels: SentinelSetup, tmp_path: Path, fault: str, wait: int) -> None:
    """``kill``: SIGKILL of the master. ``demote``: ``SENTINEL FAILOVER`` while the master is alive; it becomes a
    replica, so clients still connected to it get READONLY until they reconnect to the new master.
    ``freeze``: SIGSTOP of the master, as when its host vanishes: no TCP reset, so clients waiting on it
    only leave by their read timeout (15 s)."""
    sched = sentinel_bench
    bench = sched.dir.bench()
    evidence = tmp_path / "jobs.jsonl"
    # Given a migrated bench on Sentinel, one worker pool and one scheduler (real processes)
    sched.migrate()
    worker = sched.spawn("worker", "--pool", "2", log="worker.log")
    scheduler = sched.schedule()
    wait_until(lambda: len(sched.records("a.test", "every")) >= 2, 60, "two scheduler ticks before the failover")
    first_master = sentinels.master_port()
    assert first_master == sentinels.master.port
    with Stream(bench, evidence) as stream:
        wait_until(lambda: len(ran(evidence)) >= 20, 60,
                   lambda: f"20 jobs to run before the failover (enqueue errors {stream.errors})")
        # When the master is SIGKILLed (or demoted by a Sentinel failover) under the stream of jobs
        killed_at = time.time()
        if fault == "kill":
            sentinels.master.kill()
        elif fault == "freeze":
            assert sentinels.master.proc is not None
            sentinels.master.proc.send_signal(signal.SIGSTOP)
        else:
            with sentinels.sentinels[0].client(sentinels.sentinel_password) as sentinel:
                sentinel.execute_command("SENTINEL", "FAILOVER", "bgmaster")
        # Then Sentinel promotes the replica
        wait_until(lambda: sentinels.master_port() == sentinels.replica.port, FAILOVER_SECONDS,
                   "Sentinel to promote the replica")
        promoted_at = time.time()
        with sentinels.replica.client(sentinels.password) as new_master:
            wait_until(lambda: new_master.info("replication")["role"] == "master", 30, "the replica to be master")
        # And jobs enqueued after the failover run, on the same worker process
        wait_until(lambda: len(stream.acked_after(promoted_at)) >= 30, FAILOVER_SECONDS,
                   lambda: f"30 enqueues acknowledged after the failover (errors {stream.errors})")
    after = stream.acked_after(promoted_at)
    wait_until(lambda: set(after) <= set(ran(evidence)), FAILOVER_SECONDS,
               lambda: f"every job enqueued after the failover to run; missing {sorted(set(after) - set(ran(evidence)))[:5]}")
    # And the scheduler keeps ticking on the new master, without a restart
    ticks_before = len([r for r in sched.records("a.test", "every") if r["t"] > promoted_at])
    wait_until(lambda: len([r for r in sched.records("a.test", "every") if r["t"] > promoted_at]) >= ticks_before + 3,
               FAILOVER_SECONDS, "three scheduler ticks after the failover")
    assert worker.poll() is None and scheduler.poll() is None, "a process exited"
    if fault in ("kill", "freeze"):
        assert "Redis is unreachable" in sched.log("worker.log") and "Redis is reachable again" in sched.log("worker.log")
        if fault == "freeze":
            sentinels.master.kill()  # SIGKILL ends a stopped process too
    else:  # Sentinel turns the old master into a replica of the new one
        with sentinels.master.client(sentinels.password) as old:
            wait_until(lambda: old.info("replication")["role"] == "slave", FAILOVER_SECONDS,
                       "the old master to become a replica")
    # A job enqueued after the failover ran exactly once; what the failover cost is printed for the record
    runs = ran(evidence)
    assert all(runs.count(tag) == 1 for tag in after)
    before = [tag for tag, at in stream.acked if at <= killed_at]
    lost = [tag for tag in before if tag not in runs]
    again = [tag for tag in set(runs) if runs.count(tag) > 1]
    if bench.common_config["redis_wait_replicas"]:
        # every enqueue acknowledged before the kill was on the replica too, so none is lost
        assert not lost, f"acknowledged enqueues lost although the replica confirmed them: {lost[:5]}"
    print(f"failover (redis_wait_replicas={bench.common_config['redis_wait_replicas']}): promoted {promoted_at - killed_at:.1f}s after the kill; {len(stream.acked)} enqueues acked, "
          f"{len(after)} after the promotion (all ran once); acked before the kill and never run: {len(lost)}; "
          f"run twice: {len(again)}; enqueue errors during the failover: {stream.errors}")
    # And the command line follows the new master too: enqueue, doctor (without a password in sight)
    result = run(sched.dir, "enqueue", "testapp.tasks.record", "--site", "b.test", "--queue", "short",
                 "--kwargs", json.dumps({"path": str(evidence), "tag": "cli"}))
    assert result.exit_code == 0, result.stderr
    wait_until(lambda: "cli" in ran(evidence), 60, "the job the CLI enqueued to run")
    doctor = run(sched.dir, "doctor", "--format", "json")
    report: dict[str, Any] = json.loads(doctor.stdout)
    assert report["redis_ok"] and report["redis_url"].startswith("Sentinel master 'bgmaster' (db 0) via 127.0.0.1:")
    for text in (doctor.stdout, doctor.stderr, sched.log("worker.log"), sched.log("schedule.log")):
        assert sentinels.password not in text and sentinels.sentinel_password not in text


def test_sentinels_that_are_down_are_one_clear_line_after_a_retry(tmp_path: Path) -> None:
    from bgcore.processes import free_port

    bench_dir = BenchDir(tmp_path / "bench", redis_url="")
    bench_dir.sites.mkdir(parents=True)
    bench_dir.write_common(redis_queue=None, redis_sentinel={
        "sentinels": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], "master": "bgmaster",
        "password": "master-secret", "sentinel_password": "sentinel-secret"})
    bench_dir.add_site("a.test")
    started = time.monotonic()
    result = run(bench_dir, "enqueue", "testapp.tasks.noop", "--site", "a.test")
    assert time.monotonic() - started >= 1.5  # it asked again (0.5 s, then 1 s later) before giving up
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no Sentinel answers for master 'bgmaster' (asked 3 times over 1.5s" in lines[0]
    assert "start the Sentinels or fix 'sentinels' in redis_sentinel" in lines[0]
    assert "secret" not in result.stdout + result.stderr


def test_a_wrong_sentinel_password_or_master_name_is_named(sentinels: SentinelSetup, tmp_path: Path) -> None:
    for change, expected in ((("sentinel_password", "nope"), "refused the credentials"),
                             (("master", "othermaster"), "know no healthy master named 'othermaster'"),
                             (("password", "nope"), "refused the credentials")):
        bench_dir = BenchDir(tmp_path / change[0], redis_url="")
        bench_dir.sites.mkdir(parents=True)
        bench_dir.write_common(redis_queue=None, redis_sentinel={**sentinels.config(), change[0]: change[1]})
        bench_dir.add_site("a.test")
        result = run(bench_dir, "enqueue", "testapp.tasks.noop", "--site", "a.test")
        assert result.exit_code == 1 and expected in result.stderr, (change, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert sentinels.password not in result.stderr and sentinels.sentinel_password not in result.stderr
        if expected == "refused the credentials":  # waiting cannot fix a password: a worker exits 1 at start
            worker = bench_dir.cli("worker", timeout=60)
            assert worker.returncode == 1 and expected in worker.stderr, (change, worker.stderr)


def test_start_on_sentinel_runs_no_private_redis_and_names_the_service(sentinels: SentinelSetup,
                                                                        tmp_path: Path) -> None:
    import signal
    import subprocess

    from tests.conftest import BGCORE_EXE

    bench_dir = BenchDir(tmp_path / "bench", redis_url="")
    bench_dir.sites.mkdir(parents=True)
    bench_dir.write_common(redis_queue=None, redis_sentinel=sentinels.config(),
                           workers={"short": {"background_workers": 0}, "long": {"background_workers": 0}})
    bench_dir.add_site("a.test")
    out = tmp_path / "start.out"
    with open(out, "wb") as sink:
        start = subprocess.Popen([BGCORE_EXE, "--bench", str(bench_dir.path), "start", "--no-scheduler"],
                                 stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: "pool pid=" in out.read_text(), 90, "the default queue's pool to start")
    finally:
        start.send_signal(signal.SIGTERM)
        try:
            start.wait(timeout=60)
        except subprocess.TimeoutExpired:
            import os
            os.killpg(start.pid, signal.SIGKILL)
            start.wait(timeout=10)
    text = out.read_text()
    assert "Redis at Sentinel master 'bgmaster' (db 0) via 127.0.0.1:" in text
    assert "private Redis" not in text and not (bench_dir.path / ".bgcore" / "redis.json").exists()
    assert sentinels.password not in text and sentinels.sentinel_password not in text


def test_a_pool_on_a_read_only_replica_waits_and_runs_once_it_is_a_master(tmp_path: Path) -> None:
    """READONLY is an outage: a plain redis_queue URL to a server that is (still, or again) a replica."""
    import subprocess

    from tests.conftest import BGCORE_EXE
    from tests.redis_topology import server

    # Given jobs enqueued on a master, and its replica that has them
    master = server(tmp_path / "redis", "master", [])
    master.wait_ready()
    replica = server(tmp_path / "redis", "replica", [f"replicaof 127.0.0.1 {master.port}"])
    replica.wait_ready()
    try:
        on_master = BenchDir(tmp_path / "bench", redis_url=f"redis://127.0.0.1:{master.port}/0")
        on_master.sites.mkdir(parents=True)
        on_master.write_common(bench_id="ro-test")
        on_master.add_site("a.test")
        evidence = tmp_path / "ran.jsonl"
        with bgcore.connect("a.test", bench=on_master.bench()):
            for n in range(3):
                bgcore.enqueue("testapp.tasks.record", path=str(evidence), tag=f"n{n}")
        with replica.client() as client:
            wait_until(lambda: client.info("replication")["master_link_status"] == "up"
                       and client.dbsize() == master.client().dbsize(), 30, "the replica to have the jobs")
        # When a pool starts on the replica's URL (the same bench id)
        on_master.write_common(bench_id="ro-test", redis_queue=f"redis://127.0.0.1:{replica.port}/0")
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen([BGCORE_EXE, "--bench", str(on_master.path), "worker"], stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Then it rides out READONLY as an outage (one line) and runs nothing yet
            wait_until(lambda: "Redis is unreachable (ReadOnlyError" in log.read_text(), 60, "the READONLY outage line")
            assert ran(evidence) == [] and worker.poll() is None
            # And once the replica is promoted, the same pool runs every job, once
            with replica.client() as client:
                client.execute_command("REPLICAOF", "NO", "ONE")
            wait_until(lambda: sorted(ran(evidence)) == ["n0", "n1", "n2"], 60,
                       lambda: f"the three jobs to run (ran {ran(evidence)}); log:\n{log.read_text()}")
            assert "Redis is reachable again" in log.read_text()
        finally:
            import os
            import signal
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
    finally:
        replica.stop()
        master.stop()


def test_after_an_outage_a_horse_puts_back_a_job_whose_finish_the_failover_lost(
        bench_dir: BenchDir, caplog: pytest.LogCaptureFixture) -> None:
    """What the promoted replica may show: a job still ``started`` by a live horse, whose end (acknowledged by
    the old master) was never replicated. The horse requeues it at its first take after the outage."""
    from bgcore.engine.horse import Horse, HorseLimits
    from bgcore.engine.slots import Slots
    from tests.test_engine_pool import status

    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench=bench):
        first = bgcore.enqueue("testapp.tasks.noop").id
        second = bgcore.enqueue("testapp.tasks.noop").id
    horse = Horse(bench, [bench.queues["default"]], name="failover-horse", index=0, slots=Slots(1), middleware=[],
                  limits=HorseLimits(100, 1024), burst=True)
    # Given the state after a failover that lost the end of `first`: taken by this horse, still `started`
    taken = horse.broker.take(horse.name, horse.queues)
    assert taken is not None and taken.job_id == first
    client = bench.redis()
    assert status(client, first) == "started"
    # When the horse saw an outage (the failover) and takes again
    horse.outage.failed(redis.ConnectionError("Error 111 connecting: the master died"))
    with caplog.at_level("INFO", logger="bgcore.engine.horse"):
        again = horse._take()
    # Then `first` went back to its queue first and is taken again (at least once), not left `started`
    assert again is not None and again.job_id == first
    assert any("taken while Redis was failing: back in queue default" in r.getMessage() for r in caplog.records)
    assert horse.broker.processing(horse.name) == [first]
    # And without an outage, a take leaves the processing list alone (the normal path costs nothing)
    horse.broker.finish(horse.name, first, "default")
    nxt = horse._take()
    assert nxt is not None and nxt.job_id == second and horse.broker.processing(horse.name) == [second]


def test_a_worker_started_while_the_sentinels_are_down_waits_and_runs_once_they_are_back(
        sentinels: SentinelSetup, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from tests.conftest import BGCORE_EXE

    # Given a bench on Sentinel, and every Sentinel down
    bench_dir = BenchDir(tmp_path / "bench", redis_url="")
    bench_dir.sites.mkdir(parents=True)
    bench_dir.write_common(redis_queue=None, redis_sentinel=sentinels.config())
    bench_dir.add_site("a.test")
    for node in sentinels.sentinels:
        node.kill()
    # When a worker starts
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([BGCORE_EXE, "--bench", str(bench_dir.path), "worker"], stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Then it says so once (no Sentinel answers, after its own retry) and keeps waiting
        wait_until(lambda: "no Sentinel answers for master 'bgmaster'" in log.read_text(), 60, "the outage line")
        assert worker.poll() is None
        # And once the Sentinels are back, it serves jobs without a restart
        for node in sentinels.sentinels:
            node.start()
        for node in sentinels.sentinels:
            node.wait_ready(sentinels.sentinel_password)
        wait_until(lambda: "Redis is reachable again" in log.read_text(), 90, "the end of the outage")
        evidence = tmp_path / "ran.jsonl"
        enqueued = run(bench_dir, "enqueue", "testapp.tasks.record", "--site", "a.test",
                       "--kwargs", json.dumps({"path": str(evidence), "tag": "back"}))
        assert enqueued.exit_code == 0, enqueued.stderr
        wait_until(lambda: ran(evidence) == ["back"], 60, "the job to run")
        text = log.read_text()
        assert text.count("pool pid=") and "Redis is unreachable (MasterNotFoundError" in text
        assert "Traceback" not in text, text
        assert sentinels.password not in text and sentinels.sentinel_password not in text
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
