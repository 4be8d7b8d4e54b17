"""``bgcore start`` as a real process: private Redis, workers, graceful stop, nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bgcore import embedded_redis
from bgcore.processes import free_port, pid_alive
from tests.conftest import BGCORE_EXE, REPO, BenchDir
from tests.polling import wait_until


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    wait_until(predicate, what, timeout, 0.2)


@pytest.fixture
def private_bench(bench_dir: BenchDir) -> BenchDir:
    """The test bench without redis_queue, plus a queue that has no workers."""
    bench_dir.write_common(redis_queue=None, workers={"idle": {"background_workers": 0}})
    return bench_dir


STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def stop_leftovers() -> Iterator[None]:
    """Whatever a test leaves running (it failed midway) is stopped, by PID."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start(bench: BenchDir, log: Path, *, scheduler: bool = False) -> subprocess.Popen[bytes]:
    """``bgcore start`` on the bench, its dashboard on a free port (never the default 8009 another run may hold)."""
    common = bench.sites / "common_site_config.json"
    config = json.loads(common.read_text())
    config["dashboard_port"] = free_port()
    common.write_text(json.dumps(config, indent=2))
    env = dict(os.environ, BGCORE_BENCH=str(bench.path))
    with open(log, "ab") as out:
        proc = subprocess.Popen([BGCORE_EXE, "start", *(() if scheduler else ("--no-scheduler",))], env=env,
                                stdout=out, stderr=out, cwd=bench.path)
    STARTED.append(proc)
    state = bench.path / ".bgcore" / "redis.json"
    wait_for(lambda: state.exists() and redis_ok(bench), what="bench start")
    return proc


def redis_ok(bench: BenchDir) -> bool:
    """Doctor reaches the private Redis (it may still report unmigrated sites: exit 1)."""
    result = bench.cli("doctor", "--format", "json")
    return bool(result.stdout) and json.loads(result.stdout)["redis_ok"] is True


def test_start_runs_private_redis_and_workers_and_stops_without_losing_jobs(
    private_bench: BenchDir, tmp_path: Path
) -> None:
    log = tmp_path / "start.log"
    out = tmp_path / "seen.jsonl"
    proc = start(private_bench, log)
    try:
        state = json.loads((private_bench.path / ".bgcore" / "redis.json").read_text())
        assert state["url"].startswith("redis://127.0.0.1:")
        # Other commands find the private Redis: a job flows through a worker
        private_bench.cli("enqueue", "testapp.tasks.record", "--site", "b.test",
                          "--kwargs", json.dumps({"path": str(out), "tag": "flow"}), check=True)
        wait_for(lambda: out.exists(), what="the job to run")
        assert json.loads(out.read_text())["site"] == "b.test"
        # A job on a queue without workers waits; a long job is running at shutdown
        private_bench.cli("enqueue", "testapp.tasks.noop", "--site", "a.test", "--queue", "idle", check=True)
        private_bench.cli("enqueue", "testapp.tasks.sleep_then_record", "--site", "a.test", "--queue", "long",
                          "--kwargs", json.dumps({"seconds": 2, "path": str(out)}), check=True)
        time.sleep(0.8)
    finally:
        # When Ctrl-C reaches bgcore start
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
    # Then the running job finished, Redis stopped and its state file is gone
    assert [json.loads(line)["tag"] for line in out.read_text().splitlines()] == ["flow", "finished"]
    assert not pid_alive(state["pid"])
    assert not (private_bench.path / ".bgcore" / "redis.json").exists()
    # And after a restart the queued job is still there
    proc = start(private_bench, log)
    try:
        listing = json.loads(private_bench.cli("show-pending-jobs", "--format", "json", check=True).stdout)
        assert [(r["site"], r["queue"]) for r in listing] == [("a.test", "idle")]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_start_restarts_a_worker_that_died(private_bench: BenchDir, tmp_path: Path) -> None:
    proc = start(private_bench, tmp_path / "start.log")
    try:
        report = json.loads(private_bench.cli("doctor", "--format", "json").stdout)
        wait_for(lambda: json.loads(private_bench.cli("doctor", "--format", "json").stdout)["queues"][0]["workers"] == 1,
                 what="short worker")
        ps = subprocess.run(["pgrep", "-f", "--", f"--bench {private_bench.path} worker --queue short"],
                            capture_output=True, text=True)
        worker_pid = int(ps.stdout.split()[0])
        os.kill(worker_pid, signal.SIGKILL)
        out = tmp_path / "after.jsonl"
        private_bench.cli("enqueue", "testapp.tasks.record", "--site", "a.test", "--queue", "short",
                          "--kwargs", json.dumps({"path": str(out)}), check=True)
        wait_for(lambda: out.exists(), what="a restarted short worker to run the job")
        assert report["redis_ok"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_a_job_longer_than_the_grace_period_is_stopped_and_nothing_is_left_running(
    private_bench: BenchDir, tmp_path: Path
) -> None:
    private_bench.write_common(redis_queue=None, shutdown_grace_seconds=2)
    out = tmp_path / "busy.jsonl"
    proc = start(private_bench, tmp_path / "start.log")
    private_bench.cli("enqueue", "testapp.tasks.record_then_sleep", "--site", "a.test", "--queue", "long",
                      "--kwargs", json.dumps({"path": str(out), "seconds": 120}), check=True)
    wait_for(lambda: out.exists(), what="the long job to start")
    horse = json.loads(out.read_text())["pid"]
    # When Ctrl-C reaches bgcore start while the job has far longer to run than the grace period
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    # Then start stops after the grace period, with the job's process gone too
    assert time.monotonic() - began < 2 + 10 + 5
    wait_for(lambda: not pid_alive(horse), timeout=10, what="the job's process to end")
    assert "still busy after 2.0s; stopping their jobs (cold shutdown)" in (tmp_path / "start.log").read_text()


def test_children_stop_when_the_supervisor_is_killed(private_bench: BenchDir, tmp_path: Path) -> None:
    proc = start(private_bench, tmp_path / "start.log")
    redis_pid = json.loads((private_bench.path / ".bgcore" / "redis.json").read_text())["pid"]
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 4  # redis + short, default, long workers
    # When the supervisor dies without a chance to clean up
    proc.kill()
    proc.wait()
    # Then Linux sends its children SIGTERM: the workers and the private Redis exit
    for pid in [int(c) for c in children]:
        wait_for(lambda: not pid_alive(pid), timeout=30, what=f"child {pid} to exit")
    assert not pid_alive(redis_pid)


def test_the_demo_bench_runs_scheduled_jobs_on_every_queue_of_every_site(tmp_path: Path) -> None:
    # Given a copy of the bundled demo bench (relative apps_path, no redis_queue)
    bench = tmp_path / "demo"
    shutil.copytree(REPO / "sites", bench / "sites",
                    ignore=shutil.ignore_patterns("*.sqlite3*", ".state", "logs"))
    shutil.copytree(REPO / "fixtures", bench / "fixtures", ignore=shutil.ignore_patterns("__pycache__"))
    demo = BenchDir(bench, redis_url="")
    demo.cli("migrate", check=True)
    log = tmp_path / "demo.log"
    # When `bgcore start` runs it with its scheduler
    proc = start(demo, log, scheduler=True)
    try:
        expected = {f"hello from site={site} queue={queue}" for site in ("site1.localhost", "site2.localhost")
                    for queue in ("short", "default", "long", "reports")}
        # Then the demo's `all` event (10 s tick) fans out one job per queue in each site
        wait_for(lambda: all(e in log.read_text() for e in expected), timeout=45, what="demo jobs on every queue")
        # And the output is for people: a banner once, one line per job from bgcore, nothing alarming
        text = log.read_text()
        assert text.count("bgcore start: bench ") == 1 and "Redis at redis://127.0.0.1:" in text
        assert f"{BGCORE_EXE} --bench {bench} doctor" in text
        assert "INFO demo_app: hello from site=" in text and "WARNING demo_app" not in text
        assert "INFO bgcore.scheduler.daemon: scheduler leading" in text
        assert " INFO rq." not in text and "job site=site1.localhost" in text
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0


def aof_holds(bench: BenchDir, needle: str) -> bool:
    """The private Redis's append-only file(s) already hold ``needle`` (written, if not yet fsynced)."""
    data = bench.path / ".bgcore" / "redis"
    return any(needle.encode() in f.read_bytes() for f in data.rglob("*.aof*") if f.is_file())


def test_a_killed_private_redis_is_reaped_and_restarted_where_it_was_and_jobs_flow_again(
    private_bench: BenchDir, tmp_path: Path
) -> None:
    import psutil

    log = tmp_path / "start.log"
    proc = start(private_bench, log)
    try:
        state_file = private_bench.path / ".bgcore" / "redis.json"
        before = json.loads(state_file.read_text())
        # Given a job waiting on a queue without workers, in the append-only file
        queued = private_bench.cli("enqueue", "testapp.tasks.noop", "--site", "a.test", "--queue", "idle",
                                   check=True).stdout.split()[1]
        wait_for(lambda: aof_holds(private_bench, queued), what="the queued job in the AOF")
        # When the private Redis is killed with SIGKILL
        os.kill(before["pid"], signal.SIGKILL)
        # Then start reaps it (no zombie), starts it again on the same port, and logs one line each way
        wait_for(lambda: "private Redis is back at" in log.read_text(), what="the private Redis to come back")
        assert not psutil.pid_exists(before["pid"])
        after = json.loads(state_file.read_text())
        assert after["url"] == before["url"] and after["pid"] != before["pid"]
        text = log.read_text()
        assert text.count(f"private Redis pid={before['pid']} exited with signal SIGKILL; restarting it on port "
                          f"{embedded_redis.port_of(before['url'])}") == 1
        assert text.count("private Redis is back at") == 1
        # And the queued job survived (same data directory, AOF kept)
        listing = json.loads(private_bench.cli("show-pending-jobs", "--format", "json", check=True).stdout)
        assert [(r["site"], r["queue"]) for r in listing] == [("a.test", "idle")]
        # And start's short worker (reconnected or restarted) runs a job enqueued after the restart
        out = tmp_path / "after.jsonl"
        private_bench.cli("enqueue", "testapp.tasks.record", "--site", "b.test", "--queue", "short",
                          "--kwargs", json.dumps({"path": str(out), "tag": "after"}), check=True)
        wait_for(lambda: out.exists(), timeout=60, what="a job enqueued after the restart to run")
        assert json.loads(out.read_text())["tag"] == "after"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    # And the restarted Redis is stopped on the way out, like the first one
    assert not pid_alive(after["pid"])
    assert not (private_bench.path / ".bgcore" / "redis.json").exists()


def test_a_private_redis_whose_port_was_taken_comes_back_once_the_port_is_free(
    private_bench: BenchDir, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    from bgcore import start as start_module

    monkeypatch.setattr(start_module, "RESTART_BACKOFF", 0.0)
    private = start_module.PrivateRedis(private_bench.bench())
    try:
        # Given the private Redis died and another process took its port
        private.proc.kill()
        private.proc.wait()
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", private.port))
        squatter.listen()
        # When the supervisor checks it
        with caplog.at_level("DEBUG", logger="bgcore.start"):
            private.check()
            # Then it says once that Redis is not back, and keeps trying
            assert private.proc.poll() is not None
            squatter.close()
            wait_for(lambda: private.check() or private.proc.poll() is None, what="Redis back on its port")
        messages = [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"]
        assert sum("exited with signal SIGKILL" in m for m in messages) == 1
        assert sum("did not come back yet" in m for m in messages) == 1
        assert sum("private Redis is back at" in m for m in messages) == 1
        assert embedded_redis.running_url(private_bench.bench()) == private.url
    finally:
        private.stop()


def test_start_runs_the_dashboard_on_loopback_and_prints_its_url(private_bench: BenchDir, tmp_path: Path) -> None:
    import urllib.request

    # Given a bench started with its dashboard (on a free port the helper chose)
    log = tmp_path / "start.log"
    proc = start(private_bench, log)
    port = json.loads((private_bench.sites / "common_site_config.json").read_text())["dashboard_port"]
    url = f"http://127.0.0.1:{port}/"
    try:
        # Then the banner names the dashboard's URL and the overview answers there
        wait_for(lambda: f"Dashboard: {url}" in log.read_text(), what="the banner with the dashboard URL")

        def overview() -> str:
            try:
                with urllib.request.urlopen(url + "sites", timeout=5) as response:
                    return str(response.read().decode())
            except OSError:
                return ""

        wait_for(lambda: "a.test" in overview(), timeout=60, what="the dashboard to serve the sites page")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    # And with --no-dashboard there is none
    env = dict(os.environ, BGCORE_BENCH=str(private_bench.path))
    with open(log, "ab") as out:
        quiet = subprocess.Popen([BGCORE_EXE, "start", "--no-scheduler", "--no-dashboard"], env=env, stdout=out,
                                 stderr=out, cwd=private_bench.path)
    STARTED.append(quiet)
    try:
        wait_for(lambda: log.read_text().count("bgcore start: bench ") == 2, what="the second start's banner")
        assert log.read_text().count("Dashboard: ") == 1
    finally:
        quiet.send_signal(signal.SIGINT)
        assert quiet.wait(60) == 0
