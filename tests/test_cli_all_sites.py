"""``--site all`` in every command that takes ``--site``; enqueue, migrate and trigger-scheduler-event
with ``--now``, ``--job-name`` and ``--format json``; holding a site's jobs. In-process CliRunner."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import bgcore
from bgcore.db import joblog
from bgcore.jobs import pending_jobs, queued_count
from bgcore.migrate import migrate_site
from tests.cli_support import run, run_json
from tests.conftest import BenchDir
from tests.test_scheduler_daemon_support import SchedBench, make_sched_bench

UTC = timezone.utc


@pytest.fixture
def sched(bench_dir: BenchDir) -> SchedBench:
    """Sites a.test and b.test with one ``all`` event (``every``), migrated."""
    found = make_sched_bench(bench_dir, ["every"])
    assert run(bench_dir, "migrate", "--site", "all").exit_code == 0
    return found


def test_enqueue_site_all_puts_one_job_in_every_site_and_prints_json(bench_dir: BenchDir) -> None:
    rows = run_json(bench_dir, "enqueue", "testapp.tasks.add", "--site", "all", "--kwargs", '{"a": 1, "b": 2}',
                    "--job-name", "sum", "--queue", "short")
    assert [(r["site"], r["queue"], r["job_name"]) for r in rows] == [("a.test", "short", "sum"), ("b.test", "short", "sum")]
    pending = {(p.site, p.job_id, p.job_name) for p in pending_jobs(bench_dir.bench())}
    assert pending == {(r["site"], r["job_id"], "sum") for r in rows}


def test_enqueue_now_runs_in_the_site_and_prints_the_result(bench_dir: BenchDir) -> None:
    text = run(bench_dir, "enqueue", "testapp.tasks.add", "--site", "a.test", "--kwargs", '{"a": 2, "b": 3}', "--now")
    assert text.exit_code == 0 and text.stdout == "ran testapp.tasks.add in site a.test: 5\n"
    assert run_json(bench_dir, "enqueue", "testapp.tasks.add", "--site", "b.test", "--kwargs", '{"a": 1, "b": 1}',
                    "--now") == [{"site": "b.test", "method": "testapp.tasks.add", "result": 2}]
    assert queued_count(bench_dir.bench(), "default") == 0


def test_enqueue_prints_the_job_id_the_user_gave(bench_dir: BenchDir) -> None:
    result = run(bench_dir, "enqueue", "testapp.tasks.noop", "--site", "a.test", "--job-id", "nightly-1")
    assert result.stdout == "enqueued nightly-1 on default for site a.test\n"


def test_show_pending_jobs_counts_by_default_and_lists_on_request(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    for site, n in (("a.test", 3), ("b.test", 1)):
        with bgcore.connect(site, bench):
            for _ in range(n):
                bgcore.enqueue("testapp.tasks.noop", queue="long")
    counts = run_json(bench_dir, "show-pending-jobs")
    assert counts == [{"queue": "long", "site": "a.test", "count": 3}, {"queue": "long", "site": "b.test", "count": 1}]
    assert run_json(bench_dir, "show-pending-jobs", "--site", "all") == counts
    assert run_json(bench_dir, "show-pending-jobs", "--site", "b.test") == counts[1:]
    table = run(bench_dir, "show-pending-jobs").stdout
    assert "Pending jobs (4)" in table and "--list [--limit N] shows the jobs" in table
    assert len(table.splitlines()) < 12
    listed = run_json(bench_dir, "show-pending-jobs", "--list", "--limit", "2")
    assert len(listed) == 2 and {"job_id", "method", "enqueued_at"} <= set(listed[0])
    assert len(run_json(bench_dir, "show-pending-jobs", "--list", "--site", "all")) == 4


def test_purge_site_all_needs_yes_then_purges_every_site(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    for site in ("a.test", "b.test"):
        with bgcore.connect(site, bench):
            bgcore.enqueue("testapp.tasks.noop")
    refused = run(bench_dir, "purge-jobs", "--site", "all")
    assert refused.exit_code == 2 and "add --yes to confirm" in refused.stderr
    assert queued_count(bench, "default") == 2
    done = run(bench_dir, "purge-jobs", "--site", "all", "--yes")
    assert done.exit_code == 0 and queued_count(bench, "default") == 0
    assert "purged 1 queued job(s) of site a.test" in done.stdout and "purged 1 queued job(s) of site b.test" in done.stdout


def test_jobs_failed_site_all_lists_every_sites_failures_newest_first(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    for minutes, site in ((1, "a.test"), (2, "b.test")):
        migrate_site(bench, site)
        joblog.write(bench, bench.site_config(site), joblog.JobLogEntry(
            job_id=f"{site}__j", method="testapp.tasks.fail", queue="default", status="failed",
            started_at=start + timedelta(minutes=minutes), ended_at=start + timedelta(minutes=minutes),
            duration_ms=0, exception="RuntimeError: boom"))
    rows = run_json(bench_dir, "jobs", "failed", "--site", "all")
    assert [r["site"] for r in rows] == ["b.test", "a.test"]
    assert "site" in run(bench_dir, "jobs", "failed", "--site", "all").stdout


def test_scheduler_events_site_all_names_each_rows_site(sched: SchedBench) -> None:
    rows = run_json(sched.dir, "scheduler", "events", "--site", "all")
    assert sorted(r["site"] for r in rows) == ["a.test", "b.test"]
    assert all(r["method"] == f"{sched.app}.tasks.every" for r in rows)


def test_trigger_site_all_runs_in_every_site_that_has_the_event(sched: SchedBench) -> None:
    sched.add_site("other.test", installed_apps=["testapp"])
    migrate_site(sched.dir.bench(), "other.test")
    method = f"{sched.app}.tasks.every"
    result = run(sched.dir, "trigger-scheduler-event", method, "--site", "all", "--job-name", "by hand",
                 "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["site"] for r in rows] == ["a.test", "b.test"]
    assert f"note: site other.test has no scheduled event {method!r}; skipped" in result.stderr
    assert {(p.site, p.job_id, p.job_name) for p in pending_jobs(sched.dir.bench())} == {
        (r["site"], r["job_id"], "by hand") for r in rows}
    nowhere = run(sched.dir, "trigger-scheduler-event", "testapp.tasks.nope", "--site", "all")
    assert nowhere.exit_code == 1 and "no site of the bench has a scheduled event" in nowhere.stderr


@pytest.mark.parametrize("switch", [["set-maintenance-mode", "on"], ["scheduler", "disable"]])
def test_trigger_on_a_stopped_site_warns_and_runs_only_with_force(sched: SchedBench, switch: list[str]) -> None:
    assert run(sched.dir, *switch, "--site", "a.test").exit_code == 0
    method = f"{sched.app}.tasks.every"
    refused = run(sched.dir, "trigger-scheduler-event", method, "--site", "a.test")
    assert refused.exit_code == 1 and "not run; add --force to run it anyway" in refused.stderr
    assert queued_count(sched.dir.bench(), "default") == 0
    forced = run(sched.dir, "trigger-scheduler-event", method, "--site", "a.test", "--force")
    assert forced.exit_code == 0 and "running it anyway (--force)" in forced.stderr
    assert queued_count(sched.dir.bench(), "default", "a.test") == 1


def test_trigger_now_runs_the_event_here(sched: SchedBench) -> None:
    result = run(sched.dir, "trigger-scheduler-event", f"{sched.app}.tasks.every", "--site", "b.test", "--now")
    assert result.exit_code == 0 and result.stdout.startswith(f"ran {sched.app}.tasks.every in site b.test")
    assert [r["site"] for r in sched.records("b.test", "every")] == ["b.test"]
    assert queued_count(sched.dir.bench(), "default") == 0


def test_migrate_json_reports_each_site(bench_dir: BenchDir) -> None:
    reports = run_json(bench_dir, "migrate", "--site", "all")
    assert [(r["site"], r["ok"]) for r in reports] == [("a.test", True), ("b.test", True)]
    assert "job_log" in reports[0]["created_tables"] and reports[0]["steps"][0].startswith("registry:")


def test_holding_a_sites_jobs_makes_enqueue_warn(bench_dir: BenchDir) -> None:
    assert run(bench_dir, "hold-jobs", "on", "--site", "a.test").stdout == "jobs held for site a.test\n"
    held = run(bench_dir, "enqueue", "testapp.tasks.noop", "--site", "a.test")
    assert held.exit_code == 0 and "warning: site 'a.test' has hold_jobs on" in held.stderr
    assert "warning" not in run(bench_dir, "enqueue", "testapp.tasks.noop", "--site", "b.test").stderr
    assert json.loads((bench_dir.sites / "a.test" / "site_config.json").read_text())["hold_jobs"] is True
    run(bench_dir, "hold-jobs", "off", "--site", "all")
    assert "warning" not in run(bench_dir, "enqueue", "testapp.tasks.noop", "--site", "a.test").stderr


def test_a_new_site_cannot_be_named_all(bench_dir: BenchDir) -> None:
    result = run(bench_dir, "new-site", "all")
    assert result.exit_code == 1 and "'--site all' means every site" in result.stderr
