"""The CLI through its real console script: enqueue, listings, purge, doctor, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import bgcore
from bgcore.jobs import pending_jobs

from tests.conftest import BGCORE_EXE, FIXTURE_APPS, BenchDir


def test_enqueue_then_show_pending_jobs_as_table_and_json(bench_dir: BenchDir) -> None:
    done = bench_dir.cli("enqueue", "testapp.tasks.add", "--site", "a.test", "--queue", "short",
                         "--kwargs", '{"a": 1, "b": 2}', check=True)
    assert "enqueued" in done.stdout and "a.test" in done.stdout
    with bgcore.connect("b.test", bench_dir.bench()):
        bgcore.enqueue("testapp.tasks.noop", job_name="nightly report")
    table = bench_dir.cli("show-pending-jobs", "--list", check=True).stdout
    assert "a.test" in table and "b.test" in table and "nightly report" in table
    rows = json.loads(bench_dir.cli("show-pending-jobs", "--list", "--site", "b.test", "--format", "json",
                                   check=True).stdout)
    assert [(r["site"], r["queue"], r["job_name"], r["method"]) for r in rows] == [
        ("b.test", "default", "nightly report", "testapp.tasks.noop")]


def test_purge_matches_the_site_exactly(bench_dir: BenchDir) -> None:
    bench_dir.add_site("erp")
    bench_dir.add_site("erp2")
    bench = bench_dir.bench()
    for site in ("erp", "erp2", "erp", "erp2"):
        with bgcore.connect(site, bench):
            bgcore.enqueue("testapp.tasks.noop", queue="short")
            bgcore.enqueue("testapp.tasks.noop", queue="long")
    out = bench_dir.cli("purge-jobs", "--site", "erp", "--queue", "short", check=True).stdout
    assert "purged 2 queued job(s) of site erp" in out
    assert sorted((j.site, j.queue) for j in pending_jobs(bench)) == [
        ("erp", "long"), ("erp", "long"), ("erp2", "long"), ("erp2", "long"), ("erp2", "short"), ("erp2", "short")]
    bench_dir.cli("purge-jobs", "--site", "erp", check=True)
    assert {j.site for j in pending_jobs(bench)} == {"erp2"}


def test_errors_are_one_line_exit_1_and_usage_errors_exit_2(bench_dir: BenchDir) -> None:
    unknown = bench_dir.cli("enqueue", "testapp.tasks.noop", "--site", "nope.test")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "Error: unknown site 'nope.test': " + str(bench_dir.sites / "nope.test" / "site_config.json")
        + " does not exist (sites on this bench: a.test, b.test)"]
    traversal = bench_dir.cli("purge-jobs", "--site", "../../etc")
    assert traversal.returncode == 1 and "invalid site name '../../etc'" in traversal.stderr
    bad_queue = bench_dir.cli("worker", "--queue", "shrt", "--burst")
    assert bad_queue.returncode == 1 and "unknown queue 'shrt'; valid queues are" in bad_queue.stderr
    bad_kwargs = bench_dir.cli("enqueue", "testapp.tasks.noop", "--site", "a.test", "--kwargs", "[1]")
    assert bad_kwargs.returncode == 1 and "--kwargs must be a JSON object" in bad_kwargs.stderr
    usage = bench_dir.cli("enqueue", "testapp.tasks.noop")
    assert usage.returncode == 2 and "Missing option '--site'" in usage.stderr
    verbose = bench_dir.cli("--verbose", "enqueue", "testapp.tasks.nope", "--site", "a.test")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
    assert pending_jobs(bench_dir.bench()) == []


def test_not_a_bench_and_no_redis_are_clear(bench_dir: BenchDir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    nowhere = subprocess.run([BGCORE_EXE, "--bench", str(tmp_path), "show-pending-jobs"],
                             capture_output=True, text=True)
    assert nowhere.returncode == 1 and "is not a bench: it has no sites/ directory" in nowhere.stderr
    bench_dir.write_common(redis_queue=None)
    no_redis = bench_dir.cli("show-pending-jobs")
    assert no_redis.returncode == 1 and "run 'bgcore start'" in no_redis.stderr


def test_doctor_counts_this_benchs_live_workers_per_queue(bench_dir: BenchDir) -> None:
    env = dict(os.environ, BGCORE_BENCH=str(bench_dir.path))
    worker = subprocess.Popen([BGCORE_EXE, "worker", "--queue", "short,long", "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            report = json.loads(bench_dir.cli("doctor", "--format", "json").stdout)
            counts = {q["name"]: q["workers"] for q in report["queues"]}
            if counts.get("short") == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert report["redis_ok"] is True
        assert counts == {"short": 1, "default": 0, "long": 1}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)


def test_doctor_reports_a_broken_site_and_fails(bench_dir: BenchDir) -> None:
    (bench_dir.add_site("broken.test") / "site_config.json").write_text("{")
    result = bench_dir.cli("doctor")
    assert result.returncode == 1
    assert "broken.test" in result.stdout and "invalid JSON" in result.stdout
    listing = bench_dir.cli("sites", "--format", "json", check=True)
    rows = {r["site"]: r["config"] for r in json.loads(listing.stdout)}
    assert rows["a.test"] == "ok" and rows["broken.test"].startswith("ERROR:")


def test_doctor_lists_unmigrated_sites_and_stale_hooks(bench_dir: BenchDir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Given an app with scheduler events, installed on a migrated site
    app = tmp_path / "apps" / "stalapp"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "tasks.py").write_text("def tick():\n    pass\n")
    (app / "hooks.py").write_text('scheduler_events = {"hourly": ["stalapp.tasks.tick"]}\n')
    bench_dir.write_common(apps_path=[str(tmp_path / "apps"), str(FIXTURE_APPS)])
    bench_dir.add_site("s.test", installed_apps=["stalapp"])
    bench_dir.cli("migrate", "--site", "s.test", check=True)
    fresh = json.loads(bench_dir.cli("doctor", "--format", "json").stdout)
    assert not any("s.test" in p for p in fresh["problems"] if not p.startswith("no scheduler leads"))
    assert any("'a.test'" in p and "bgcore migrate" in p for p in fresh["problems"])
    # When its hooks.py changes after the migrate
    (app / "hooks.py").write_text('scheduler_events = {"daily": ["stalapp.tasks.tick"]}\n')
    result = bench_dir.cli("doctor")
    # Then doctor names the app, the file and the site, and fails
    assert result.returncode == 1
    assert "hooks of app 'stalapp' changed since the last migrate" in result.stdout
    assert "s.test" in result.stdout and "run 'bgcore migrate'" in result.stdout
    bench_dir.cli("migrate", "--site", "s.test", check=True)
    after = json.loads(bench_dir.cli("doctor", "--format", "json").stdout)
    assert not any("stalapp" in p for p in after["problems"])


def test_an_unreachable_redis_is_one_line_not_a_traceback(bench_dir: BenchDir) -> None:
    bench_dir.write_common(redis_queue="redis://127.0.0.1:1/0")
    for args in (["enqueue", "testapp.tasks.noop", "--site", "a.test"], ["show-pending-jobs"],
                 ["purge-jobs", "--site", "a.test"]):
        result = bench_dir.cli(*args)
        assert result.returncode == 1, args
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith("Error: Redis at redis://127.0.0.1:1/0 failed (ConnectionError")
        assert "is it running and reachable?" in result.stderr


def test_doctor_does_not_count_a_killed_worker(bench_dir: BenchDir) -> None:
    env = dict(os.environ, BGCORE_BENCH=str(bench_dir.path))
    worker = subprocess.Popen([BGCORE_EXE, "worker", "--queue", "long", "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def long_workers() -> int:
        report = json.loads(bench_dir.cli("doctor", "--format", "json").stdout)
        return int({q["name"]: q["workers"] for q in report["queues"]}["long"])

    try:
        deadline = time.monotonic() + 20
        while long_workers() != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert long_workers() == 1
    finally:
        worker.kill()  # SIGKILL: its registration stays in Redis until its TTL expires
        worker.wait(10)
    assert long_workers() == 0


def test_doctor_reports_a_broken_workers_config(bench_dir: BenchDir) -> None:
    bench_dir.write_common(workers={"short": {"timeout": "x"}})
    result = bench_dir.cli("doctor", "--format", "json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert any("workers.short.timeout must be a positive integer" in p for p in report["problems"])
    assert [q["name"] for q in report["queues"]] == ["short", "default", "long"]


def test_listing_or_purging_a_site_that_is_gone_says_so(bench_dir: BenchDir) -> None:
    result = bench_dir.cli("purge-jobs", "--site", "gone.test", check=True)
    assert "note: site 'gone.test' is not on this bench" in result.stderr
    assert "purged 0 queued job(s)" in result.stdout
    limit = bench_dir.cli("jobs", "failed", "--site", "a.test", "--limit", "0")
    assert limit.returncode == 2


def test_doctor_names_a_site_directory_with_an_invalid_name(bench_dir: BenchDir) -> None:
    bench_dir.add_site("bad name")
    result = bench_dir.cli("doctor")
    assert result.returncode == 1
    assert "'bad name' is not a valid site name, so it is never served" in result.stdout
