"""Failed jobs and job logs do not grow for ever; jobs list / show / clear-failed. Real Redis, real workers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import bgcore
from bgcore import keys
from bgcore.clock import utcnow
from bgcore.db import joblog
from bgcore.migrate import migrate_site
from bgcore.retention import parse_duration, prune_failed_jobs, prune_job_log
from bgcore.scheduler.daemon import SchedulerDaemon
from bgcore.worker import run_worker
from tests.cli_support import run, run_json
from tests.conftest import BenchDir

UTC = timezone.utc


def _bench(bench_dir: BenchDir, **common: object) -> object:
    bench_dir.write_common(**common)
    bench = bench_dir.bench()
    for site in ("a.test", "b.test"):
        migrate_site(bench, site)
    return bench


def _fail_and_succeed(bench, site: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    with bgcore.connect(site, bench):
        failed = bgcore.enqueue("testapp.tasks.fail", message=f"{site} broke", job_id=f"bad-{site}")
        ok = bgcore.enqueue("testapp.tasks.add", a=1, b=2, job_id=f"good-{site}")
    run_worker(bench, burst=True, quiet=True)
    return failed.id, ok.id


def _row(job_id: str, ended: datetime) -> joblog.JobLogEntry:
    return joblog.JobLogEntry(job_id=job_id, method="testapp.tasks.fail", queue="default", status="failed",
                              started_at=ended, ended_at=ended, duration_ms=0, exception="RuntimeError: x")


def test_failed_jobs_older_than_failure_ttl_leave_redis_with_their_results(bench_dir: BenchDir) -> None:
    bench = _bench(bench_dir, failure_ttl=3600)
    failed, _ = _fail_and_succeed(bench, "a.test")
    redis = bench.redis()
    registry = keys.failed_registry(keys.queue_name(bench.bench_id, "default"))
    assert redis.exists(keys.rq_job(failed), keys.rq_results(failed)) == 2
    # When pruned now, nothing goes; an hour and a bit later, the job, its results and its entry go
    assert prune_failed_jobs(bench, utcnow()) == 0
    assert prune_failed_jobs(bench, utcnow() + timedelta(hours=1, minutes=1)) == 1
    assert redis.exists(keys.rq_job(failed), keys.rq_results(failed)) == 0
    assert redis.zcard(registry) == 0


def test_job_log_rows_older_than_the_keep_days_are_pruned_in_batches(bench_dir: BenchDir) -> None:
    bench = _bench(bench_dir, job_log_keep_days=7)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    config = bench.site_config("a.test")
    for n in range(3):
        joblog.write(bench, config, _row(f"a_dtest__old{n}", now - timedelta(days=8 + n)))
    joblog.write(bench, config, _row("a_dtest__young", now - timedelta(days=6)))
    assert prune_job_log(bench, "a.test", now, batch=2) == 2
    assert prune_job_log(bench, "a.test", now, batch=2) == 1
    assert prune_job_log(bench, "a.test", now, batch=2) == 0
    assert [e.job_id for e in joblog.failures(bench, config)] == ["a_dtest__young"]


def test_only_the_scheduler_leader_prunes(bench_dir: BenchDir) -> None:
    bench = _bench(bench_dir, job_log_keep_days=1)
    now = utcnow()
    joblog.write(bench, bench.site_config("b.test"), _row("b_dtest__old", now - timedelta(days=2)))
    leader = SchedulerDaemon(bench_dir.bench(), clock=lambda: now)
    standby = SchedulerDaemon(bench_dir.bench(), clock=lambda: now)
    leader.lease_step()
    standby.lease_step()
    assert standby.prune() == 0
    assert leader.prune() == 1
    assert joblog.failures(bench, bench.site_config("b.test")) == []
    leader.lease.release()


def test_jobs_list_shows_successes_and_failures_and_filters_by_status(bench_dir: BenchDir) -> None:
    bench = _bench(bench_dir)
    _fail_and_succeed(bench, "a.test")
    _fail_and_succeed(bench, "b.test")
    rows = run_json(bench_dir, "jobs", "list", "--site", "a.test")
    assert sorted((r["job_id"], r["status"]) for r in rows) == [("bad-a.test", "failed"), ("good-a.test", "finished")]
    only = run_json(bench_dir, "jobs", "list", "--site", "a.test", "--status", "finished")
    assert [(r["job_id"], r["job"]) for r in only] == [("good-a.test", "testapp.tasks.add")]
    assert "good-a.test" not in run(bench_dir, "jobs", "list", "--site", "a.test").stdout  # ids need --wide


def test_jobs_show_gives_status_timings_arguments_worker_and_traceback(bench_dir: BenchDir) -> None:
    bench = _bench(bench_dir)
    _fail_and_succeed(bench, "a.test")
    shown = run_json(bench_dir, "jobs", "show", "bad-a.test", "--site", "a.test")
    assert shown["status"] == "failed" and shown["kwargs"] == {"message": "a.test broke"}
    assert shown["worker"] and shown["started_at"] and shown["ended_at"] and shown["duration_ms"] is not None
    assert "RuntimeError: a.test broke" in shown["traceback"] and "Traceback" in shown["traceback"]
    text = run(bench_dir, "jobs", "show", "good-a.test", "--site", "a.test").stdout
    assert "finished" in text and '{"a": 1, "b": 2}' in text
    missing = run(bench_dir, "jobs", "show", "nope", "--site", "a.test")
    assert missing.exit_code == 1 and "has no job 'nope'" in missing.stderr


def test_clear_failed_removes_only_that_sites_failures(bench_dir: BenchDir) -> None:
    bench = _bench(bench_dir)
    failed_a, _ = _fail_and_succeed(bench, "a.test")
    failed_b, _ = _fail_and_succeed(bench, "b.test")
    young = run(bench_dir, "jobs", "clear-failed", "--site", "a.test", "--older-than", "1h")
    assert young.stdout == "cleared 0 job-log row(s) and 0 failed job(s) in Redis of site a.test\n"
    done = run(bench_dir, "jobs", "clear-failed", "--site", "a.test")
    assert done.stdout == "cleared 1 job-log row(s) and 1 failed job(s) in Redis of site a.test\n"
    assert not bench.redis().exists(keys.rq_job(failed_a)) and bench.redis().exists(keys.rq_job(failed_b))
    assert [e.job_id for e in joblog.failures(bench, bench.site_config("b.test"))] == [failed_b]
    bad = run(bench_dir, "jobs", "clear-failed", "--site", "a.test", "--older-than", "soon")
    assert bad.exit_code == 2 and "is not a duration" in bad.stderr


def test_durations_parse() -> None:
    assert parse_duration("90") == timedelta(seconds=90) and parse_duration("7d") == timedelta(days=7)
    assert parse_duration("2w") == timedelta(weeks=2) and parse_duration("15m") == timedelta(minutes=15)
