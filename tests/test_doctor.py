"""``bgcore doctor`` is unhealthy when nothing would run the queued work, and shows the scheduler."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

import bgcore
from bgcore.clock import utcnow
from bgcore.doctor import diagnose
from bgcore.migrate import migrate_site
from bgcore.scheduler.daemon import SchedulerDaemon
from tests.cli_support import run
from tests.conftest import BenchDir

UTC = timezone.utc


@pytest.fixture
def migrated(bench_dir: BenchDir) -> BenchDir:
    """``bench_dir`` with both sites migrated (so only the checks under test can fail)."""
    for site in ("a.test", "b.test"):
        migrate_site(bench_dir.bench(), site)
    return bench_dir


def _daemon(bench_dir: BenchDir, now: datetime) -> SchedulerDaemon:
    return SchedulerDaemon(bench_dir.bench(), clock=lambda: now)


def test_doctor_fails_with_queued_jobs_no_worker_and_no_scheduler(migrated: BenchDir) -> None:
    # Given queued jobs, no worker of any queue and no scheduler daemon
    with bgcore.connect("a.test", migrated.bench()):
        for _ in range(3):
            bgcore.enqueue("testapp.tasks.noop", queue="long")
    # When the operator asks the doctor
    result = run(migrated, "doctor")
    # Then it is unhealthy, each reason on its own line
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem: ")]
    assert problems == [
        "problem: no scheduler leads this bench (nobody holds the lease) although 2 site(s) have the scheduler "
        "enabled (a.test, b.test); run 'bgcore schedule' or 'bgcore start'",
        "problem: queue 'long' holds 3 job(s) but no live worker serves it; start one ('bgcore worker --queue "
        "long', or 'bgcore start')",
    ]
    assert "scheduler: no leader" in result.stdout


def test_no_leader_is_fine_when_every_site_has_its_scheduler_stopped(migrated: BenchDir) -> None:
    for args in (["scheduler", "disable", "--site", "a.test"], ["set-maintenance-mode", "on", "--site", "b.test"]):
        assert run(migrated, *args).exit_code == 0
    result = run(migrated, "doctor", "--format", "json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["healthy"] is True and report["problems"] == []
    assert report["scheduler"] == {"leader": None, "last_tick": None, "standbys": [], "enabled_sites": 0}


def test_doctor_fails_when_the_oldest_queued_job_is_older_than_the_threshold(migrated: BenchDir) -> None:
    migrated.write_common(doctor_max_queue_age_seconds=60)
    bench = migrated.bench()
    with bgcore.connect("b.test", bench):
        bgcore.enqueue("testapp.tasks.noop", queue="short")
        bgcore.enqueue("testapp.tasks.noop", queue="short", at_front=True)
    enqueued = diagnose(bench).queues[0].oldest_enqueued_at
    assert enqueued is not None
    # When the doctor looks 30 s later, then 90 s later
    young = diagnose(bench, now=enqueued + timedelta(seconds=30))
    old = diagnose(bench, now=enqueued + timedelta(seconds=90))
    # Then only the second finds the queue too old (and names the key to tune)
    assert not any("oldest job" in p for p in young.problems)
    [age] = [p for p in old.problems if "oldest job" in p]
    assert age == ("queue 'short': its oldest job has waited 90s, more than doctor_max_queue_age_seconds=60; "
                   "add workers for it or find what blocks them")


def test_a_bad_queue_age_threshold_is_a_problem_naming_the_key(migrated: BenchDir) -> None:
    migrated.write_common(doctor_max_queue_age_seconds="soon")
    report = diagnose(migrated.bench())
    assert any("doctor_max_queue_age_seconds must be a positive number of seconds, found 'soon'" in p
               for p in report.problems)


def test_doctor_shows_the_leader_its_last_tick_and_the_standbys(migrated: BenchDir, caplog) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()  # the CLI's doctor reads the real clock: the daemons' entries must be fresh for it
    # Given two daemons: the first takes the lease and ticks, the second stands by
    leader, standby = _daemon(migrated, now), _daemon(migrated, now)
    leader.rescan()
    leader.lease_step()
    leader.tick(60.0, now)
    leader.lease_step()
    with caplog.at_level(logging.INFO, logger="bgcore.scheduler.daemon"):
        standby.lease_step()
        standby.lease_step()
    # Then the standby said once that it stands by, and who leads
    said = [r.getMessage() for r in caplog.records if "scheduler standby" in r.getMessage()]
    assert len(said) == 1 and f"leader is {leader.lease.holder}" in said[0]
    # And the doctor shows the leader, its last tick and the standby, and is healthy
    result = run(migrated, "doctor", "--format", "json")
    report = json.loads(result.stdout)
    assert report["scheduler"]["leader"] == leader.lease.holder
    assert report["scheduler"]["last_tick"] == now.isoformat(timespec="microseconds")
    assert report["scheduler"]["standbys"] == [standby.lease.holder]
    assert result.exit_code == 0 and report["problems"] == []
    text = run(migrated, "doctor").stdout
    assert f"scheduler: leader {leader.lease.holder}, last tick {now.isoformat(sep=' ', timespec='seconds')}" in text
    assert f"scheduler standbys: {standby.lease.holder}" in text
    # And a standby that stopped refreshing its entry (it died) is no longer listed
    later = now + timedelta(seconds=60)
    assert diagnose(migrated.bench(), now=later).scheduler.standbys == []  # type: ignore[union-attr]
    leader.lease.release()
