"""Durable run state: the registry remembers what ran, so a Redis flush repeats nothing,
and a run whose work-horse is killed still gets its failed job-log row.

In-process daemons with a fixed clock; real ``bgcore worker --burst`` processes,
the session's real redis-server and the sites' real (SQLite) databases."""

from __future__ import annotations

import os
import shutil
import signal
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from bgcore import keys
from bgcore.scheduler.daemon import SchedulerDaemon
from bgcore.scheduler.runs import due_of
from tests.conftest import BenchDir
from tests.test_scheduler_daemon_support import (
    SchedBench,
    cron_hooks_text,
    make_sched_bench,
    wait_for,
)

UTC = timezone.utc


def registry_rows(sched: SchedBench, site: str) -> dict[str, Any]:
    """Method name (last part) -> its ``scheduled_event`` row."""
    from bgcore.db.engines import database_for
    from bgcore.scheduler.registry import scheduled_event

    bench = sched.dir.bench()
    with database_for(bench, bench.site_config(site)).connect() as conn:
        return {row.method.rsplit(".", 1)[1]: row for row in conn.execute(sa.select(scheduled_event))}


def job_log_rows(sched: SchedBench, site: str) -> list[Any]:
    from bgcore.db.engines import database_for
    from bgcore.db.schema import job_log

    bench = sched.dir.bench()
    with database_for(bench, bench.site_config(site)).connect() as conn:
        return list(conn.execute(sa.select(job_log).order_by(job_log.c.id)))


def started_daemon(sched: SchedBench, clock: datetime) -> SchedulerDaemon:
    """A freshly started in-process daemon (as after a restart) that leads, its clock fixed.

    Taking the lease runs a first tick at ``clock``, as a real start does.
    """
    daemon = SchedulerDaemon(sched.dir.bench(), clock=lambda: clock)
    daemon.rescan()
    daemon.lease_step()
    assert daemon.leading
    return daemon


def queued(sched: SchedBench) -> int:
    from bgcore.jobs import queued_count

    return queued_count(sched.dir.bench(), "default")


@pytest.fixture
def minutely(bench_dir: BenchDir) -> SchedBench:
    """Sites a.test and b.test with one ``* * * * *`` event, migrated; no daemon yet.

    The daemons here are in-process and their clock is injected; only the lease is
    real time. A 60 s lease keeps a leader leading across a slow step (a burst
    worker on a loaded machine took longer than the default 2 s test lease, so a
    tick found its lease lapsed and did nothing: the old flakiness).
    """
    sched = make_sched_bench(bench_dir, ["every"], scheduler_lease_seconds=60)
    sched.hooks.write_text(cron_hooks_text(sched.app, {"* * * * *": ["every2"]}))
    sched.migrate()
    return sched


def next_minute_plus(seconds: int) -> datetime:
    return (datetime.now(UTC) + timedelta(minutes=2)).replace(second=seconds, microsecond=0)


@pytest.mark.parametrize(("job_id", "due"), [
    ("a_dtest__sched-0123abcd-1700000040", datetime(2023, 11, 14, 22, 14, tzinfo=UTC)),
    ("a_dtest__trigger-0123abcd-1700000040123", None),
    ("a_dtest__0123abcd", None),
    (None, None),
])
def test_the_due_time_of_a_scheduled_run_comes_from_its_job_id(job_id: str | None, due: datetime | None) -> None:
    assert due_of(job_id) == due


@pytest.mark.parametrize("loss", ["flushall", "older backup"])
def test_a_redis_flush_never_repeats_an_occurrence_that_ran(minutely: SchedBench, redis_client: redis.Redis,
                                                             loss: str) -> None:
    # Given a daemon that enqueued this minute's occurrence and a worker that ran it
    now = next_minute_plus(30)
    slot = now.replace(second=0)
    daemon = started_daemon(minutely, datetime.now(UTC))
    first = daemon.tick(1.0, now)
    assert sorted((o.site, o.due) for o in first) == [("a.test", slot.timestamp()), ("b.test", slot.timestamp())]
    minutely.dir.cli("worker", "--burst", check=True)
    assert len(minutely.records("a.test", "every2")) == 1
    # Then the site database holds the run: its due time, status and next run
    row = registry_rows(minutely, "a.test")["every2"]
    assert (row.last_execution, row.last_status, row.last_error) == (slot, "finished", None)
    assert row.next_run == slot + timedelta(minutes=1)
    # When Redis loses everything (claims, last runs, registry versions), or is restored
    # from a backup taken before the run ...
    redis_client.flushall()
    if loss == "older backup":
        bench = minutely.dir.bench()
        for site in ("a.test", "b.test"):
            redis_client.hset(keys.scheduler_last_run(bench.bench_id, site), row.event_id,
                              repr((slot - timedelta(minutes=5)).timestamp()))
    # ... then neither the running daemon, after its rescan, nor a restarted one enqueues it again
    daemon.rescan()
    assert daemon.lease.valid()  # so an empty tick means "nothing due", not "no longer leading"
    assert daemon.tick(1.0, now) == []
    daemon.lease.release()
    restarted = started_daemon(minutely, now)
    assert restarted.lease.valid()
    assert restarted.tick(1.0, now + timedelta(seconds=10)) == [] and queued(minutely) == 0
    # And the next minute runs as usual, once
    later = restarted.tick(1.0, now + timedelta(minutes=1))
    assert {o.due for o in later} == {(slot + timedelta(minutes=1)).timestamp()}
    restarted.lease.release()
    minutely.dir.cli("worker", "--burst", check=True)
    jobs = [r["job"] for r in minutely.records("a.test", "every2")]
    assert len(jobs) == 2 and len(set(jobs)) == 2


def test_a_run_that_started_is_durable_before_it_ends(minutely: SchedBench, redis_client: redis.Redis) -> None:
    # Given this minute's occurrence of an event whose work-horse dies mid-run
    minutely.hooks.write_text(cron_hooks_text(minutely.app, {"* * * * *": ["die"]}))
    minutely.migrate()
    now = next_minute_plus(20)
    slot = now.replace(second=0)
    daemon = started_daemon(minutely, datetime.now(UTC))
    assert len(daemon.tick(1.0, now)) == 2
    daemon.lease.release()
    # When a real worker runs it and the horse is SIGKILLed (no chance to write anything)
    minutely.dir.cli("worker", "--burst", check=True)
    assert len(minutely.records("a.test", "die")) == 1
    # Then the run is in the job log as a failure of its event, with the signal
    rows = [r for r in job_log_rows(minutely, "a.test") if r.method.endswith(".die")]
    assert len(rows) == 1
    assert rows[0].status == "failed" and rows[0].event and "signal 9" in rows[0].exception
    assert rows[0].started_at <= rows[0].ended_at
    # And the registry records it: due time (written when the run started), failed, the error
    row = registry_rows(minutely, "a.test")["die"]
    assert (row.last_execution, row.last_status) == (slot, "failed") and "signal 9" in row.last_error
    # And after a Redis flush the occurrence is not run again
    redis_client.flushall()
    restarted = started_daemon(minutely, now)
    assert restarted.tick(1.0, now) == [] and queued(minutely) == 0
    restarted.lease.release()


def test_a_triggered_run_reports_its_status_but_does_not_move_the_schedule(minutely: SchedBench) -> None:
    # Given a registered minutely event that never ran
    before = registry_rows(minutely, "a.test")["every2"]
    # When it is triggered by hand and run
    minutely.dir.cli("trigger-scheduler-event", f"{minutely.app}.tasks.every2", "--site", "a.test", check=True)
    minutely.dir.cli("worker", "--burst", check=True)
    # Then its status is recorded, its last execution (the schedule) is not
    after = registry_rows(minutely, "a.test")["every2"]
    assert after.last_status == "finished" and after.last_execution == before.last_execution


def test_a_run_whose_whole_worker_died_gets_its_row_when_the_scheduler_finds_it_abandoned(bench_dir: BenchDir) -> None:
    from bgcore.scheduler.overlap import blocked_events

    # Given a long scheduled run on a.test, started by a real worker
    sched = make_sched_bench(bench_dir, ["every"])
    sched.hooks.write_text(cron_hooks_text(sched.app, {"* * * * *": ["slow"]}))
    sched.add_site("a.test", slow_seconds=60)
    shutil.rmtree(bench_dir.sites / "b.test")
    sched.migrate()
    now = next_minute_plus(10)
    try:
        daemon = started_daemon(sched, datetime.now(UTC))
        (occ,) = daemon.tick(1.0, now)
        daemon.lease.release()
        worker = sched.worker()
        wait_for(lambda: sched.records("a.test", "slow-start"), 20, "the slow run to start")
        # When the whole worker is killed, pool parent first (so it cannot record its horse's death), then
        # the work-horse, so neither can write anything
        os.kill(worker.pid, signal.SIGKILL)
        sched.kill(worker)
        assert not job_log_rows(sched, "a.test")
        # And the scheduler's overlap check next looks at the event's last run
        blocked = blocked_events(sched.dir.bench(), {"a.test": [occ.event_id]}, now=datetime.now(UTC))
    finally:
        sched.stop_all()
    # Then the run no longer blocks its event
    assert blocked == set()
    # And the run is in the job log as a failure of its event, and its event records it
    (row,) = job_log_rows(sched, "a.test")
    assert (row.job_id, row.status, row.event) == (occ.rq_job_id, "failed", occ.event_id)
    assert "abandoned: worker" in row.exception and "died while running this job" in row.exception
    assert registry_rows(sched, "a.test")["slow"].last_status == "failed"
