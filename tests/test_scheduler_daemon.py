"""The scheduler daemon end to end: real ``bgcore schedule`` and ``bgcore worker``
processes on the session's real redis-server, 1 s ticks and a 2 s lease."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import BenchDir
from tests.test_scheduler_daemon_support import SchedBench, hooks_text, make_sched_bench, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def sched(bench_dir: BenchDir) -> Iterator[SchedBench]:
    bench = make_sched_bench(bench_dir, ["every"])
    yield bench
    bench.stop_all()


def more_ticks(sched: SchedBench, n: int) -> None:
    """Wait until a.test's ``every`` event (due on each 1 s tick) has run ``n`` more times: ``n`` ticks passed."""
    runs = len(sched.records("a.test", "every"))
    wait_for(lambda: len(sched.records("a.test", "every")) >= runs + n, 30, f"{n} more ticks")


def settled(sched: SchedBench, sites: tuple[str, ...], quiet: float = 2.0, timeout: float = 20) -> dict[str, int]:
    """Each site's record count once no site has gained a record for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    counts = {s: len(sched.records(s)) for s in sites}
    while True:
        time.sleep(quiet)
        now = {s: len(sched.records(s)) for s in sites}
        if now == counts:
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"sites kept running after their switch was turned on: {counts} -> {now}")
        counts = now


def job_log_rows(sched: SchedBench, site: str) -> list[sa.Row[object]]:
    from bgcore.db.engines import database_for
    from bgcore.db.schema import job_log

    bench = sched.dir.bench()
    with database_for(bench, bench.site_config(site)).connect() as conn:
        return list(conn.execute(sa.select(job_log)))


def test_events_fire_per_site_and_are_logged(bench_dir: BenchDir) -> None:
    sched = make_sched_bench(bench_dir, ["every", "fail"])
    try:
        _events_fire_per_site_and_are_logged(sched)
    finally:
        sched.stop_all()


def _events_fire_per_site_and_are_logged(sched: SchedBench) -> None:
    # Given two migrated sites and a daemon and a worker
    sched.migrate()
    sched.schedule()
    sched.worker()
    # Then each site's `all` event runs on every tick, in its own site
    for site in ("a.test", "b.test"):
        wait_for(lambda: len(sched.records(site, "every")) >= 3, 20, f"3 runs in {site}")
        assert {r["site"] for r in sched.records(site)} == {site}
    # And each run is in the site's job log with its event id
    rows = wait_for(lambda: [r for r in job_log_rows(sched, "a.test") if r.event], 10, "job log rows")
    assert all(r.duration_ms is not None and r.started_at and r.ended_at for r in rows)
    assert {r.status for r in rows if r.method.endswith(".tasks.every")} <= {"finished"}
    # And the failing `all` event's failures are recorded, not swallowed
    failed = wait_for(lambda: [r for r in job_log_rows(sched, "a.test") if r.status == "failed"], 10, "a failure row")
    assert failed[0].method.endswith(".tasks.fail") and "scheduled boom" in failed[0].exception
    # And `scheduler events` shows the last run, next run, last status and error
    listing = json.loads(sched.dir.cli("scheduler", "events", "--site", "a.test", "--format", "json", check=True).stdout)
    by_method = {row["method"].rsplit(".", 1)[1]: row for row in listing}
    assert set(by_method) == {"every", "fail"}
    assert all(row["last_run"] and row["next_run"] for row in listing)
    assert by_method["every"]["last_status"] in ("finished", "queued", "started")
    assert by_method["fail"]["last_status"] in ("failed", "queued", "started")
    if by_method["fail"]["last_status"] == "failed":
        assert "scheduled boom" in by_method["fail"]["last_error"]


def test_switches_stop_one_site_while_others_go_on(sched: SchedBench) -> None:
    # Given four sites, one per switch plus one left alone
    sched.add_site("c.test")
    sched.add_site("d.test")
    sched.migrate()
    sched.schedule()
    sched.worker()
    for site in ("a.test", "b.test", "c.test", "d.test"):
        wait_for(lambda: sched.records(site, "every"), 20, f"a first run in {site}")
    # When each switch is turned on for one site
    sched.dir.cli("scheduler", "disable", "--site", "a.test", check=True)
    sched.dir.cli("scheduler", "pause", "--site", "b.test", check=True)
    sched.dir.cli("set-maintenance-mode", "on", "--site", "c.test", check=True)
    counts = settled(sched, ("a.test", "b.test", "c.test"))  # runs queued before the switches drain
    d_before = len(sched.records("d.test"))
    # Then d.test goes on and the others stop
    wait_for(lambda: len(sched.records("d.test")) >= d_before + 3, 15, "d.test going on")
    assert {s: len(sched.records(s)) for s in counts} == counts
    # And status names the switch that stops each site, and the leader
    status = json.loads(sched.dir.cli("scheduler", "status", "--site", "all", "--format", "json", check=True).stdout)
    by_site = {row["site"]: row for row in status}
    assert by_site["a.test"]["stopped_by"] == "scheduler_disabled"
    assert by_site["b.test"]["stopped_by"] == "pause_scheduler"
    assert by_site["c.test"]["stopped_by"] == "maintenance_mode"
    assert by_site["d.test"]["stopped_by"] is None and by_site["d.test"]["active"]
    assert by_site["d.test"]["daemon_running"] and by_site["d.test"]["leader"]
    # And the strongest switch wins when several are on
    sched.dir.cli("scheduler", "disable", "--site", "c.test", check=True)
    status = json.loads(sched.dir.cli("scheduler", "status", "--site", "c.test", "--format", "json").stdout)
    assert status[0]["stopped_by"] == "maintenance_mode"
    # When the switches are turned off again, the sites run again without a restart
    sched.dir.cli("scheduler", "enable", "--site", "a.test", check=True)
    sched.dir.cli("scheduler", "resume", "--site", "b.test", check=True)
    for site in ("a.test", "b.test"):
        wait_for(lambda: len(sched.records(site)) > counts[site], 15, f"{site} running again")


def test_two_daemons_never_duplicate_and_standby_takes_over(sched: SchedBench) -> None:
    # Given two daemons on one bench
    sched.migrate()
    first = sched.schedule("schedule-1.log")
    wait_for(lambda: "scheduler leading" in sched.log("schedule-1.log"), 15, "first daemon leading")
    second = sched.schedule("schedule-2.log")
    wait_for(lambda: "scheduler starting" in sched.log("schedule-2.log"), 15, "second daemon up")
    sched.worker()
    wait_for(lambda: len(sched.records("a.test")) >= 4, 20, "runs under the first leader")
    assert "scheduler leading" not in sched.log("schedule-2.log")
    # When the leader is killed
    sched.kill(first)
    killed_at = time.monotonic()
    # Then the standby takes over within lease + lease/3 (2 s + 0.67 s), plus 1 s for polling
    wait_for(lambda: "scheduler leading" in sched.log("schedule-2.log"), 10, "standby taking over",
             interval=0.05)
    assert time.monotonic() - killed_at < 2 + 2 / 3 + 1
    before = len(sched.records("a.test"))
    wait_for(lambda: len(sched.records("a.test")) >= before + 3, 15, "runs under the new leader")
    # And no occurrence ever ran twice, on either site
    for site in ("a.test", "b.test"):
        jobs = Counter(r["job"] for r in sched.records(site))
        assert jobs and max(jobs.values()) == 1, jobs.most_common(3)
    assert second.poll() is None


def test_dead_worker_does_not_block_its_event(bench_dir: BenchDir) -> None:
    # Given an `all` event that runs for a long time, on one site
    sched = make_sched_bench(bench_dir, ["slow"])
    try:
        sched.add_site("a.test", slow_seconds=60)
        (bench_dir.sites / "b.test" / "site_config.json").unlink()
        (bench_dir.sites / "b.test").rmdir()
        sched.migrate()
        sched.schedule()
        worker = sched.worker("worker-1.log")
        first = wait_for(lambda: sched.records("a.test", "slow-start"), 20, "the slow run to start")
        # While it runs, the event is not queued again (no overlap): a tick held it back
        wait_for(lambda: "last run still queued or running" in sched.log("schedule.log"), 20,
                 "a tick that holds the running event back")
        pending = sched.dir.cli("show-pending-jobs", "--site", "a.test", "--format", "json", check=True).stdout
        assert json.loads(pending) == []
        assert len(sched.records("a.test", "slow-start")) == 1
        # When its worker dies mid-job and another worker comes up
        sched.kill(worker)
        sched.worker("worker-2.log")
        # Then the event runs again instead of being blocked forever
        again = wait_for(lambda: [r for r in sched.records("a.test", "slow-start") if r["job"] != first[0]["job"]],
                         20, "a new run after the worker died")
        assert again[0]["job"] != first[0]["job"]
        # (found by whichever looks first: the scheduler's overlap check or the new pool's recovery)
        assert ("abandoned by a dead worker" in sched.log("schedule.log")
                or "WorkerDied" in sched.log("worker-2.log"))
        # And the abandoned run is in the site's job log as a failure of its event
        rows = [r for r in job_log_rows(sched, "a.test") if r.status == "failed"]
        assert rows and rows[0].event and "worker" in rows[0].exception and "died" in rows[0].exception
    finally:
        sched.stop_all()


def save_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s content in one step (write a sibling, then rename it over)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_stale_hooks_warn_once_then_migrate_applies(sched: SchedBench) -> None:
    from bgcore.scheduler.watch import stale_hooks

    # Given a running daemon and migrated sites
    sched.migrate()
    sched.schedule()
    sched.worker()
    wait_for(lambda: sched.records("a.test", "every"), 20, "a first run")
    assert stale_hooks(sched.dir.bench()) == []
    # When hooks.py gains an event (saved whole, as editors do: a file caught half-written would
    # be a different, third version of the hooks, with a warning of its own)
    save_atomically(sched.hooks, hooks_text(sched.app, ["every", "every2"]))
    # Then the daemon warns once, naming the app, the file and the sites
    line = wait_for(lambda: [l for l in sched.log("schedule.log").splitlines() if "stale hooks" in l], 15,
                    "the stale-hooks warning")[0]
    assert "WARNING" in line and sched.app in line and str(sched.hooks) in line
    assert "a.test" in line and "b.test" in line and "bgcore migrate" in line
    found = stale_hooks(sched.dir.bench())
    assert [(s.app, s.sites) for s in found] == [(sched.app, ("a.test", "b.test"))]
    more_ticks(sched, 3)  # several rescans and ticks later ...
    assert sched.log("schedule.log").count("stale hooks") == 1
    # ... and the old registry is still what runs
    assert not sched.records("a.test", "every2")
    # When hooks.py is edited again, differently, before any migrate
    save_atomically(sched.hooks, hooks_text(sched.app, ["every2", "every"]))
    # Then that edit is warned about too, once
    wait_for(lambda: sched.log("schedule.log").count("stale hooks") == 2, 15, "a warning for the second edit")
    more_ticks(sched, 2)
    assert sched.log("schedule.log").count("stale hooks") == 2
    # When migrate runs, the new event runs and nothing is stale any more
    sched.migrate()
    wait_for(lambda: sched.records("a.test", "every2"), 20, "the new event running")
    assert stale_hooks(sched.dir.bench()) == []


def test_trigger_runs_an_event_now_and_logs_it(sched: SchedBench) -> None:
    # Given a migrated site and no daemon
    sched.migrate()
    # When an event is triggered by hand and a burst worker drains the queue
    result = sched.dir.cli("trigger-scheduler-event", f"{sched.app}.tasks.every", "--site", "a.test", check=True)
    assert "enqueued" in result.stdout
    sched.dir.cli("worker", "--burst", check=True)
    # Then it ran once in that site and its run is in the job log with the event
    assert len(sched.records("a.test", "every")) == 1
    assert not sched.records("b.test")
    assert [r.event for r in job_log_rows(sched, "a.test")][0]
    # And an unknown method is refused with the registered ones listed
    bad = sched.dir.cli("trigger-scheduler-event", f"{sched.app}.tasks.evrey", "--site", "a.test")
    assert bad.returncode == 1 and "did you mean" in bad.stderr


def test_new_and_deleted_sites_are_picked_up_without_restart(sched: SchedBench) -> None:
    import shutil

    # Given a running daemon serving a.test and b.test
    sched.migrate()
    sched.schedule()
    sched.worker()
    wait_for(lambda: sched.records("b.test", "every"), 20, "b.test running")
    # When a site is added (and migrated) and another deleted
    sched.add_site("new.test")
    sched.dir.cli("migrate", "--site", "new.test", check=True)
    shutil.rmtree(sched.dir.sites / "b.test")
    # Then the new site runs and the deleted one is dropped
    wait_for(lambda: sched.records("new.test", "every"), 20, "new.test running")
    wait_for(lambda: "site removed from the scheduler site=b.test" in sched.log("schedule.log"), 10, "b.test dropped")
    assert "Traceback" not in sched.log("schedule.log")


def test_cron_events_catch_up_once_and_a_restart_does_not_repeat_them(bench_dir: BenchDir,
                                                                      redis_client: object) -> None:
    from datetime import datetime, timedelta, timezone

    from bgcore.scheduler.daemon import SchedulerDaemon

    # Given an hourly event registered now (in-process daemons, the clock passed explicitly; a lease
    # long enough that the burst workers between ticks, slow under load, never let it lapse)
    sched = make_sched_bench(bench_dir, ["every"], scheduler_lease_seconds=60)
    text = sched.hooks.read_text().replace('{"all":', f'{{"hourly": ["{sched.app}.tasks.every2"], "all":')
    sched.hooks.write_text(text)
    before = datetime.now(timezone.utc)  # the daemons' own clock: nothing is due yet then
    sched.migrate()
    later = (datetime.now(timezone.utc) + timedelta(hours=5)).replace(minute=30, second=0, microsecond=0)
    daemon = SchedulerDaemon(sched.dir.bench(), clock=lambda: before)
    daemon.rescan()
    daemon.lease_step()
    # When the daemon ticks five hours later (four or five missed hourly slots)
    first = daemon.tick(1.0, later)
    # Then the hourly event runs once per site, for the latest slot, with the `all` event
    hourly = [o for o in first if o.method.endswith("every2")]
    assert sorted(o.site for o in hourly) == ["a.test", "b.test"]
    assert {o.due for o in hourly} == {later.replace(minute=0, second=0, microsecond=0).timestamp()}
    assert len(first) == 4
    sched.dir.cli("worker", "--burst", check=True)
    # And ten seconds later only the `all` event is due
    assert [o.method for o in daemon.tick(1.0, later + timedelta(seconds=10))] == [f"{sched.app}.tasks.every"] * 2
    sched.dir.cli("worker", "--burst", check=True)
    # And a restarted daemon (state from Redis) repeats neither that tick's bucket nor the hourly slot
    daemon.lease.release()
    again = SchedulerDaemon(sched.dir.bench(), clock=lambda: before)
    again.rescan()
    again.lease_step()
    assert again.lease.valid()  # an empty tick below means "nothing due", not "not leading"
    assert again.tick(1.0, later + timedelta(seconds=10)) == []
    assert [o.method for o in again.tick(1.0, later + timedelta(seconds=11))] == [f"{sched.app}.tasks.every"] * 2
    again.lease.release()
