"""Unit tests of the daemon's parts: lease, occurrences, timetable, overlap, stale hooks.

Anything touching Redis uses the session's real redis-server."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from rq.job import Job

from bgcore import keys
from bgcore.jobs import queued_count
from bgcore.rqbridge import SERIALIZER
from bgcore.scheduler.lease import Lease, current_holder, lease_seconds, new_holder
from bgcore.scheduler.occurrence import Occurrence, enqueue_occurrences, occurrence_id
from bgcore.scheduler.overlap import blocked_events, worker_alive
from bgcore.scheduler.timetable import SiteState, TimedEvent, Timetable
from bgcore.scheduler.watch import find_stale
from bgcore.errors import ConfigError
from tests.conftest import BenchDir

UTC = timezone.utc


# -- lease ---------------------------------------------------------------------
def test_one_holder_at_a_time_and_only_the_holder_renews_or_releases(redis_client: redis.Redis) -> None:
    first = Lease(redis_client, "b1", new_holder(), seconds=1.0)
    second = Lease(redis_client, "b1", new_holder(), seconds=1.0)
    assert first.try_acquire() and first.valid()
    assert not second.try_acquire() and not second.valid()
    assert current_holder(redis_client, "b1") == first.holder
    assert not second.renew() and not second.release()
    assert current_holder(redis_client, "b1") == first.holder
    assert first.renew()
    assert first.release() and current_holder(redis_client, "b1") is None
    assert second.try_acquire()


def test_a_lapsed_lease_goes_to_the_standby_and_the_old_holder_cannot_renew(redis_client: redis.Redis) -> None:
    old = Lease(redis_client, "b2", new_holder(), seconds=0.3)
    standby = Lease(redis_client, "b2", new_holder(), seconds=0.3)
    assert old.try_acquire()
    deadline = time.monotonic() + 3
    while not standby.try_acquire():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not old.renew() and not old.valid()
    assert current_holder(redis_client, "b2") == standby.holder


def test_lease_local_validity_ends_before_the_key_expires() -> None:
    lease = Lease(None, "b3", "h", seconds=10.0)
    lease._mark(100.0)
    assert lease.valid(108.9) and not lease.valid(109.1)
    assert lease.renew_every == pytest.approx(10 / 3)


@pytest.mark.parametrize("value", [0, -1, "15", True])
def test_bad_lease_length_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match="scheduler_lease_seconds"):
        lease_seconds({"scheduler_lease_seconds": value})


# -- occurrences -----------------------------------------------------------------
def occ(site: str, due: float, method: str = "testapp.tasks.noop", event: str = "ev1") -> Occurrence:
    return Occurrence(site=site, event_id=event, method=method, queue="default", due=due)


def test_occurrence_ids_are_deterministic() -> None:
    assert occurrence_id("abc", 1700000000.9) == "abc-1700000000"
    assert occ("a.test", 5.0).rq_job_id == keys.job_id("a.test", "sched-ev1-5")


def test_an_occurrence_is_enqueued_once_however_often_it_is_offered(bench_dir: BenchDir,
                                                                    redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    batch = [occ("a.test", 60.0), occ("b.test", 60.0)]
    first = enqueue_occurrences(bench, batch)
    again = enqueue_occurrences(bench, batch)
    assert first.enqueued == batch and not first.already_claimed
    assert again.already_claimed == batch and not again.enqueued
    job = Job.fetch(batch[0].rq_job_id, connection=redis_client, serializer=SERIALIZER)
    assert job.kwargs["log"] is True and job.kwargs["event"] == "ev1"
    assert redis_client.hget(keys.scheduler_last_run(bench.bench_id, "a.test"), "ev1") == b"60.0"


def test_racing_daemons_enqueue_each_occurrence_once(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    batch = [occ("a.test", float(60 * i)) for i in range(1, 41)]
    reports = []

    def run() -> None:
        reports.append(enqueue_occurrences(bench_dir.bench(), batch, batch_size=7))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    enqueued = [o for r in reports for o in r.enqueued]
    assert sorted(o.due for o in enqueued) == sorted(o.due for o in batch)
    assert queued_count(bench_dir.bench(), "default") == len(batch)


def test_a_refused_occurrence_is_reported_and_the_others_go_out(bench_dir: BenchDir) -> None:
    good, bad = occ("a.test", 60.0), occ("a.test", 60.0, method="testapp.tasks.gone", event="ev2")
    report = enqueue_occurrences(bench_dir.bench(), [bad, good])
    assert report.enqueued == [good]
    assert [o for o, _ in report.failed] == [bad] and "gone" in report.failed[0][1]


# -- overlap ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pid", "host", "alive"),
    [
        (None, None, False),                 # registration expired
        ("1", "elsewhere", True),            # another host: trust the registration
        ("999999999", "HERE", False),        # this host, pid gone
        (str(os.getpid()), "HERE", True),
    ],
)
def test_worker_liveness(pid: str | None, host: str | None, alive: bool) -> None:
    here = socket.gethostname()
    assert worker_alive(pid, here if host == "HERE" else host, this_host=here) is alive


def test_queued_runs_block_and_runs_of_dead_workers_are_failed(bench_dir: BenchDir,
                                                               redis_client: redis.Redis) -> None:
    bench = bench_dir.bench()
    queued, started = occ("a.test", 60.0, event="q"), occ("a.test", 60.0, event="s")
    enqueue_occurrences(bench, [queued, started])
    # the 's' run was taken by a worker that has since died (no registration key left)
    redis_client.hset(Job.key_for(started.rq_job_id), mapping={"status": "started", "worker_name": "ghost"})
    blocked = blocked_events(bench, {"a.test": ["q", "s", "never-ran"]}, now=datetime.now(UTC))
    assert blocked == {("a.test", "q")}
    assert redis_client.hget(Job.key_for(started.rq_job_id), "status") == b"failed"


# -- timetable ----------------------------------------------------------------------
def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def site(name: str, *events: TimedEvent, last: float, interval: float = 60.0, tz: str = "UTC") -> SiteState:
    return SiteState(name=name, tz=tz, interval=interval, events={e.event_id: e for e in events},
                     last={e.event_id: last for e in events})


HOURLY = TimedEvent("h", "app.tasks.hourly", "default", "0 * * * *")
EVERY = TimedEvent("e", "app.tasks.every", "default", None)


def test_nothing_is_due_before_the_next_slot_and_missed_slots_run_once() -> None:
    table = Timetable()
    table.put_site(site("a.test", HOURLY, last=at("2026-01-01T10:00:00").timestamp()))
    assert table.due(60.0, at("2026-01-01T10:59:59")) == []
    # after five hours of downtime: one run, for the latest missed slot
    found = table.due(60.0, at("2026-01-01T15:30:00"))
    assert [(o.event_id, o.due) for o in found] == [("h", at("2026-01-01T15:00:00").timestamp())]
    table.record(found)
    assert table.due(60.0, at("2026-01-01T15:59:00")) == []
    assert [o.due for o in table.due(60.0, at("2026-01-01T16:00:00"))] == [at("2026-01-01T16:00:00").timestamp()]


def test_all_events_are_due_once_per_tick_bucket() -> None:
    table = Timetable()
    table.put_site(site("a.test", EVERY, last=0.0, interval=10.0))
    first = table.due(10.0, at("2026-01-01T00:00:05"))
    assert [o.due for o in first] == [at("2026-01-01T00:00:00").timestamp()]
    table.record(first)
    assert table.due(10.0, at("2026-01-01T00:00:09")) == []
    assert len(table.due(10.0, at("2026-01-01T00:00:10"))) == 1
    assert table.due(60.0, at("2026-01-01T00:00:10")) == []  # other interval groups are not touched


def test_site_time_zone_is_used() -> None:
    daily = TimedEvent("d", "app.tasks.daily", "default", "0 0 * * *")
    table = Timetable()
    table.put_site(site("in.test", daily, last=at("2026-01-01T00:00:00").timestamp(), tz="Asia/Kolkata"))
    # midnight in Kolkata is 18:30 UTC
    assert table.due(60.0, at("2026-01-01T18:29:00")) == []
    assert [o.due for o in table.due(60.0, at("2026-01-01T18:31:00"))] == [at("2026-01-01T18:30:00").timestamp()]


def test_held_back_events_are_looked_at_again_and_dropped_sites_cost_nothing() -> None:
    table = Timetable()
    table.put_site(site("a.test", HOURLY, last=at("2026-01-01T10:00:00").timestamp()))
    table.put_site(site("b.test", HOURLY, last=at("2026-01-01T10:00:00").timestamp()))
    found = table.due(60.0, at("2026-01-01T11:00:30"))
    assert sorted(o.site for o in found) == ["a.test", "b.test"]
    table.retry([o for o in found if o.site == "a.test"], at("2026-01-01T11:01:30"))
    table.record([o for o in found if o.site == "b.test"])
    again = table.due(60.0, at("2026-01-01T11:01:30"))
    assert [(o.site, o.due) for o in again] == [("a.test", at("2026-01-01T11:00:00").timestamp())]
    table.drop_site("a.test")
    assert table.due(60.0, at("2026-01-01T13:00:00"))[0].site == "b.test"
    assert table.next_run_of("a.test", "h") is None


# -- stale hooks ----------------------------------------------------------------------
def test_stale_hooks_name_the_app_file_and_sites() -> None:
    paths = {"app1": Path("/x/app1/hooks.py"), "app2": Path("/x/app2/hooks.py")}
    current = {"app1": "new", "app2": "same"}
    stored = {"a": {"app1": "old", "app2": "same"}, "b": {"app1": "new"}, "c": {}}
    installed = {"a": ("app1", "app2"), "b": ("app1",), "c": ("app1",)}
    found = find_stale(paths, current, stored, installed)
    assert [(s.app, s.path, s.sites) for s in found] == [("app1", paths["app1"], ("a", "c"))]
    assert "bgcore migrate" in found[0].message() and "a, c" in found[0].message()




def test_reloading_sites_does_not_grow_the_heap_without_bound() -> None:
    table = Timetable()
    for _ in range(300):
        for name in ("a.test", "b.test", "c.test", "d.test", "e.test"):
            table.put_site(site(name, HOURLY, last=at("2026-01-01T10:00:00").timestamp()))
        table.compact()
    assert sum(len(h) for h in table._heaps.values()) <= 2 * 5 + 1024
    assert len(table.due(60.0, at("2026-01-01T11:00:00"))) == 5


def test_a_broken_site_does_not_stop_the_others(bench_dir: BenchDir, caplog: pytest.LogCaptureFixture) -> None:
    from bgcore.scheduler.daemon import SchedulerDaemon

    # Given a bench where one site has an unknown time zone and one was never migrated
    bench_dir.add_site("c.test", time_zone="Mars/Olympus_Mons")
    bench_dir.cli("migrate", check=False)
    bench_dir.add_site("d.test")
    daemon = SchedulerDaemon(bench_dir.bench())
    # When the daemon scans the sites
    daemon.rescan()
    # Then the good sites are scheduled, the others are reported and remembered (not retried each scan)
    assert sorted(daemon.timetable.sites) == ["a.test", "b.test"]
    assert set(daemon.stamps) == {"a.test", "b.test", "c.test", "d.test"}
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "site=c.test not scheduled" in messages and "Mars/Olympus_Mons" in messages
    assert "site=d.test not scheduled" in messages


def test_switches_and_config_edits_do_not_reopen_the_site_database(bench_dir: BenchDir,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import bgcore.scheduler.loader as loader
    from bgcore.scheduler.daemon import SchedulerDaemon
    from bgcore.scheduler.registry import bump_registry_version
    from bgcore.scheduler.switches import Switch, set_switch

    # Given a daemon that loaded two migrated sites
    bench_dir.cli("migrate", check=True)
    bench = bench_dir.bench()
    bump_registry_version(bench, "a.test")
    reads: list[str] = []
    real = loader.read_registry
    monkeypatch.setattr(loader, "read_registry", lambda b, c: reads.append(c.name) or real(b, c))
    daemon = SchedulerDaemon(bench)
    daemon.rescan()
    assert sorted(reads) == ["a.test", "b.test"]
    # When a.test is paused, resumed and its config edited
    set_switch(bench, "a.test", Switch.PAUSED, True)
    daemon.rescan()
    assert "a.test" not in daemon.timetable.sites
    set_switch(bench, "a.test", Switch.PAUSED, False)
    daemon.rescan()
    # Then it is back without another database read
    assert "a.test" in daemon.timetable.sites and sorted(reads) == ["a.test", "b.test"]
    # And a new registry version (bgcore migrate) is read from the database
    bump_registry_version(bench, "a.test")
    daemon.rescan()
    assert sorted(reads) == ["a.test", "a.test", "b.test"]


def test_a_tick_that_fails_midway_is_retried_on_the_next_tick(bench_dir: BenchDir,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import bgcore.scheduler.daemon as daemon_module
    from bgcore.scheduler.daemon import SchedulerDaemon

    # Given a daemon with an hourly event due
    daemon = SchedulerDaemon(bench_dir.bench())
    daemon.timetable.put_site(site("a.test", TimedEvent("h", "testapp.tasks.noop", "default", "0 * * * *"),
                                   last=at("2026-01-01T10:00:00").timestamp()))
    daemon.lease.try_acquire()

    def down(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    # When Redis fails during the tick
    monkeypatch.setattr(daemon_module, "enqueue_occurrences", down)
    with pytest.raises(redis.ConnectionError):
        daemon.tick(60.0, at("2026-01-01T11:00:05"))
    monkeypatch.undo()
    # Then the next tick enqueues the same slot
    found = daemon.tick(60.0, at("2026-01-01T11:01:05"))
    assert [(o.event_id, o.due) for o in found] == [("h", at("2026-01-01T11:00:00").timestamp())]
    daemon.lease.release()


CRON_CHOICES = ["*/7 * * * *", "0 * * * *", "30 2 * * *", "0 0 * * 0", "15 */3 * * *"]


@settings(max_examples=60, deadline=None)
@given(
    crons=st.lists(st.sampled_from(CRON_CHOICES), min_size=1, max_size=4),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata"]),
    steps=st.lists(st.integers(min_value=1, max_value=6 * 3600), min_size=1, max_size=25),
)
def test_the_heap_timetable_agrees_with_checking_every_event_every_tick(
    crons: list[str], tz: str, steps: list[int]
) -> None:
    from bgcore.scheduler.due import due_time

    # Given events last run at a start time, and a naive model that checks every event on every tick
    start = at("2026-03-28T20:00:00")
    events = [TimedEvent(f"e{i}", "app.tasks.m", "default", cron) for i, cron in enumerate(crons)]
    table = Timetable()
    table.put_site(site("a.test", *events, last=start.timestamp(), tz=tz))
    model_last = {e.event_id: start for e in events}
    now = start
    seen: set[tuple[str, float]] = set()
    for step in steps:
        now = now + timedelta(seconds=step)
        # When the timetable ticks
        found = table.due(60.0, now)
        table.record(found)
        # Then it emits exactly what the naive model finds due, each occurrence once
        expected = {}
        for event in events:
            slot = due_time(event.cron or "", model_last[event.event_id], now, tz)
            if slot is not None:
                expected[event.event_id] = slot.timestamp()
                model_last[event.event_id] = slot
        assert {o.event_id: o.due for o in found} == expected
        for occ in found:
            assert (occ.event_id, occ.due) not in seen
            seen.add((occ.event_id, occ.due))


def test_a_long_batch_stops_between_chunks_when_told_to(bench_dir: BenchDir) -> None:
    batch = [occ("a.test", float(60 * i)) for i in range(1, 11)]
    answers = iter([True, False])
    report = enqueue_occurrences(bench_dir.bench(), batch, batch_size=4, keep_going=lambda: next(answers))
    assert report.enqueued == batch[:8] and report.skipped == batch[8:]


def test_a_daemon_that_lost_its_lease_mid_tick_leaves_the_rest(bench_dir: BenchDir,
                                                               redis_client: redis.Redis) -> None:
    from bgcore.scheduler.daemon import SchedulerDaemon

    daemon = SchedulerDaemon(bench_dir.bench())
    daemon.lease_step()
    assert daemon.leading and daemon._keep_lease()
    redis_client.delete(keys.scheduler_lease(bench_dir.bench().bench_id))  # lapsed; another may take it
    daemon._renewed_at -= daemon.lease.renew_every
    assert not daemon._keep_lease() and not daemon.leading


def test_two_daemons_that_both_believe_they_lead_enqueue_a_due_slot_once(bench_dir: BenchDir,
                                                                          redis_client: redis.Redis) -> None:
    from bgcore.scheduler.daemon import SchedulerDaemon
    from tests.test_scheduler_daemon_support import cron_hooks_text, make_sched_bench

    # Given a minutely event on two migrated sites and two in-process daemons
    sched = make_sched_bench(bench_dir, ["every"])
    sched.hooks.write_text(cron_hooks_text(sched.app, {"* * * * *": ["every2"]}))
    sched.migrate()
    now = (datetime.now(UTC) + timedelta(minutes=2)).replace(second=30, microsecond=0)
    daemons = [SchedulerDaemon(sched.dir.bench()) for _ in range(2)]
    for daemon in daemons:
        daemon.rescan()
    # And both believe they lead (one holds the lease; the other's lapsed lease it has not noticed)
    assert daemons[0].lease.try_acquire()
    daemons[1].lease._mark(time.monotonic())
    assert all(d.lease.valid() for d in daemons)
    # When both tick the same due slot at the same moment
    start = threading.Barrier(2)
    found: list[list[Occurrence]] = [[], []]

    def tick(i: int) -> None:
        start.wait()
        found[i] = daemons[i].tick(1.0, now)

    threads = [threading.Thread(target=tick, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then each site's occurrence is enqueued exactly once between them
    enqueued = found[0] + found[1]
    assert sorted(o.site for o in enqueued) == ["a.test", "b.test"]
    assert {o.due for o in enqueued} == {now.replace(second=0).timestamp()}
    assert queued_count(sched.dir.bench(), "default") == 2
    daemons[0].lease.release()
