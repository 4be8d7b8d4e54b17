"""Delayed jobs (enqueue_in / enqueue_at) and retries, against the real redis-server fixture.

The protocol tests drive a Broker and an in-process horse with an injected
clock, so "an hour later" costs nothing; two tests run a real pool.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job

import bgcore
from bgcore import Retry, keys
from bgcore.bench import Bench
from bgcore.db import joblog
from bgcore.engine.broker import Broker
from bgcore.engine.horse import Horse, HorseLimits
from bgcore.engine.middleware import default_middleware
from bgcore.engine.slots import Slots
from bgcore.errors import ConfigError, DuplicateJob, InvalidArgument
from bgcore.jobs import pending_jobs, purge_jobs, queued_count
from bgcore.migrate import migrate_site
from bgcore.rqbridge import SERIALIZER

from tests.conftest import BenchDir
from tests.test_engine_pool import Pools, evidence, pools, wait_status, wait_until  # noqa: F401 - fixture

QUEUE = "default"
UTC = timezone.utc


class Clock:
    """A settable clock for the broker and the horse (epoch seconds)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def horse(bench: Bench, clock: Clock) -> Horse:
    """A burst horse in this process on ``default``, with ``clock``."""
    return Horse(bench, [bench.queues[QUEUE]], name="delay-horse", index=0, slots=Slots(1),
                 middleware=default_middleware(bench, timeouts=False), limits=HorseLimits(10**6, 10**6),
                 burst=True, clock=clock)


def fetch(bench: Bench, job_id: str) -> Job:
    return Job.fetch(job_id, connection=bench.redis(), serializer=SERIALIZER)


# -- delayed jobs -------------------------------------------------------------------------------------


def test_a_delayed_job_waits_as_scheduled_then_is_taken_once_its_time_has_come(bench_dir: BenchDir) -> None:
    # Given a job for an hour from now in a site whose zone is Berlin
    bench_dir.add_site("a.test", time_zone="Europe/Berlin")
    bench = bench_dir.bench()
    clock = Clock()
    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue_in(3600, "testapp.tasks.add", a=1, b=2)
    # Then it is listed as scheduled, not queued, with its time; nothing can be taken yet
    assert fetch(bench, job.id).get_status() == "scheduled"
    (pending,) = pending_jobs(bench, "a.test")
    assert pending.status == "scheduled" and pending.due is not None
    assert abs(pending.due.timestamp() - (time.time() + 3600)) < 60
    assert queued_count(bench, QUEUE) == 0
    broker = Broker(bench.redis(), bench.bench_id, clock=clock)
    assert broker.take("w", [(QUEUE, 300)]) is None
    assert broker.next_due is not None and abs(broker.next_due - pending.due.timestamp()) < 1
    # When the clock passes its time, the next take moves it and runs it
    clock.now += 3601
    assert horse(bench, clock).run() == 0
    assert fetch(bench, job.id).get_status() == "finished" and fetch(bench, job.id).return_value() == 3
    assert pending_jobs(bench, "a.test") == []


def test_show_pending_jobs_gives_a_delayed_jobs_time_in_the_sites_zone(bench_dir: BenchDir) -> None:
    bench_dir.add_site("a.test", time_zone="Asia/Kolkata")
    with bgcore.connect("a.test", bench_dir.bench()):
        bgcore.enqueue_at(datetime(2030, 1, 1, 12, 0, tzinfo=UTC), "testapp.tasks.noop")
    (row,) = json.loads(bench_dir.cli("show-pending-jobs", "--list", "--format", "json", check=True).stdout)
    assert row["status"] == "scheduled" and row["due"] == "2030-01-01T17:30:00.000000+05:30"
    table = bench_dir.cli("show-pending-jobs", "--list", "--site", "a.test", check=True).stdout
    assert "scheduled" in table and "17:30:00" in table
    counts = json.loads(bench_dir.cli("show-pending-jobs", "--format", "json", check=True).stdout)
    assert counts == [{"queue": "default", "site": "a.test", "count": 1}]


def test_a_due_job_is_moved_by_exactly_one_of_many_takers(bench_dir: BenchDir) -> None:
    # Given 50 delayed jobs that are all due
    bench = bench_dir.bench()
    clock = Clock()
    with bgcore.connect("a.test", bench):
        ids = [bgcore.enqueue_in(10, "testapp.tasks.noop").id for _ in range(50)]
    clock.now += 20
    # When several brokers take, interleaved
    brokers = [Broker(redis.Redis.from_url(bench_dir.redis_url), bench.bench_id, clock=clock) for _ in range(4)]
    taken: list[str] = []
    while True:
        got = [b.take(f"w{i}", [(QUEUE, 300)]) for i, b in enumerate(brokers)]
        if not any(got):
            break
        taken += [t.job_id for t in got if t is not None]
    # Then each job was taken exactly once
    assert sorted(taken) == sorted(ids)


@pytest.mark.parametrize("when, message", [
    (datetime(2030, 1, 1, 12, 0), "has no time zone; pass an aware datetime"),
    ("tomorrow", "needs a datetime"),
])
def test_enqueue_at_refuses_what_is_not_an_aware_datetime(bench_dir: BenchDir, when: Any, message: str) -> None:
    bench_dir.add_site("a.test", time_zone="Europe/Berlin")
    with bgcore.connect("a.test", bench_dir.bench()), pytest.raises(InvalidArgument, match=message) as err:
        bgcore.enqueue_at(when, "testapp.tasks.noop")
    if isinstance(when, datetime):
        assert "Europe/Berlin" in str(err.value)


@pytest.mark.parametrize("delay", [-1, math.inf, math.nan, "soon", True])
def test_enqueue_in_refuses_a_bad_delay(bench_dir: BenchDir, delay: Any) -> None:
    with bgcore.connect("a.test", bench_dir.bench()), pytest.raises(InvalidArgument, match="enqueue_in needs"):
        bgcore.enqueue_in(delay, "testapp.tasks.noop")


def test_a_delayed_job_id_is_deduplicated_and_purge_removes_delayed_jobs(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        bgcore.enqueue_in(timedelta(minutes=5), "testapp.tasks.noop", job_id="nightly")
        with pytest.raises(DuplicateJob):
            bgcore.enqueue("testapp.tasks.noop", job_id="nightly")
        bgcore.enqueue_in(60, "testapp.tasks.noop")
    with bgcore.connect("b.test", bench):
        kept = bgcore.enqueue_in(60, "testapp.tasks.noop")
    report = purge_jobs(bench, "a.test")
    assert report.removed == 2
    assert [j.job_id for j in pending_jobs(bench)] == [keys.local_job_id(kept.id)]
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.noop", job_id="nightly")  # the id is free again


@pytest.mark.slow
def test_an_idle_pool_runs_a_delayed_job_about_on_time(pools: Pools, bench_dir: BenchDir,
                                                       redis_client: redis.Redis, tmp_path: Path) -> None:
    # Given an idle pool
    out = tmp_path / "ev.jsonl"
    pools.start_ready(pool=1)
    # When a job is enqueued to run 1 s from now
    with bgcore.connect("a.test", bench_dir.bench()):
        job = bgcore.enqueue_in(1.0, "testapp.engine_tasks.note", path=str(out), tag="late")
    due = time.time() + 1.0
    # Then it runs once, after its time and well within the idle wait (5 s) of a horse
    wait_status(redis_client, job.id, "finished")
    (row,) = evidence(out, "late")
    started = row["t"]
    assert due - 0.05 <= started < due + 2.5, (started - due)


# -- retries ------------------------------------------------------------------------------------------


def _log_rows(bench: Bench, site: str = "a.test") -> list[joblog.JobLogEntry]:
    import sqlalchemy as sa

    from bgcore.db.engines import database_for
    from bgcore.db.schema import job_log

    with database_for(bench, bench.site_config(site)).transaction() as conn:
        rows = conn.execute(sa.select(job_log).order_by(job_log.c.id)).mappings().all()
    return [joblog.JobLogEntry(**{k: r[k] for k in joblog.JobLogEntry.__dataclass_fields__}) for r in rows]


def test_a_failing_job_is_retried_with_its_id_and_only_the_last_attempt_is_its_failure(bench_dir: BenchDir) -> None:
    # Given a job that always fails, with two retries ten seconds apart
    bench = bench_dir.bench()
    migrate_site(bench, "a.test")
    clock = Clock()
    with bgcore.connect("a.test", bench, user="ann"):
        job = bgcore.enqueue("testapp.tasks.fail", message="nope", retry=Retry(max=2, intervals=[10]))
    # When a horse runs it: the first attempt fails and it waits as a delayed job
    horse(bench, clock).run()
    assert fetch(bench, job.id).get_status() == "scheduled"
    assert queued_count(bench, QUEUE) == 0
    # ... and the next attempts come once their time has come
    for _ in range(2):
        clock.now += 11
        horse(bench, clock).run()
    # Then the job failed for good after three attempts, under the same id
    final = fetch(bench, job.id)
    assert final.get_status() == "failed" and final.number_of_retries == 2
    assert "nope" in (final.latest_result().exc_string or "")
    # And the job log has one row per attempt; only the last is the failure
    rows = _log_rows(bench)
    assert [(r.job_id, r.status, r.attempt) for r in rows] == [
        (job.id, "retried", 1), (job.id, "retried", 2), (job.id, "failed", 3)]


def test_a_retry_that_succeeds_ends_the_job_finished(bench_dir: BenchDir, tmp_path: Path) -> None:
    bench = bench_dir.bench()
    migrate_site(bench, "a.test")
    marker = tmp_path / "flaky"
    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue("testapp.isolation_tasks.flaky", marker=str(marker), retry=1)
    horse(bench, Clock()).run()  # a retry with no interval goes back to the queue at once
    assert fetch(bench, job.id).get_status() == "finished"
    assert [r.status for r in _log_rows(bench)] == ["retried"]


def test_a_queues_default_retry_applies_and_a_jobs_own_wins(bench_dir: BenchDir) -> None:
    bench_dir.write_common(workers={"default": {"retry": {"max": 1}}})
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        by_queue = bgcore.enqueue("testapp.tasks.fail")
        own = bgcore.enqueue("testapp.tasks.fail", retry=Retry(max=0))
    horse(bench, Clock()).run()
    assert fetch(bench, by_queue.id).number_of_retries == 1
    assert fetch(bench, own.id).number_of_retries in (None, 0)
    assert fetch(bench, by_queue.id).get_status() == fetch(bench, own.id).get_status() == "failed"


@pytest.mark.parametrize("policy, message", [
    (dict(max=-1), "retry max must be an integer"),
    (dict(max=3, intervals=[1, math.nan]), "finite numbers of seconds"),
    (dict(max=3, backoff=0.5), "backoff must be a number >= 1"),
])
def test_a_bad_retry_policy_is_refused(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Retry(**policy)


@pytest.mark.parametrize("value", [{"max": 3, "every": 5}, "3", {"intervals": [1]}, {"max": "x"}])
def test_a_bad_queue_retry_in_the_config_is_a_config_error(bench_dir: BenchDir, value: Any) -> None:
    bench_dir.write_common(workers={"short": {"retry": value}})
    with pytest.raises(ConfigError, match="workers.short"):
        _ = bench_dir.bench().queues


def test_retry_delays_follow_intervals_backoff_and_jitter() -> None:
    assert [Retry(max=5, intervals=[10, 60]).delay(n) for n in (1, 2, 3)] == [10, 60, 60]
    assert [Retry(max=5, interval=2, backoff=3).delay(n) for n in (1, 2, 3)] == [2, 6, 18]
    assert Retry(max=1, interval=10, jitter=True).delay(1, rand=lambda: 0.0) == 5
    assert Retry(max=1, interval=10, jitter=True).delay(1, rand=lambda: 1.0) == 10


@pytest.mark.slow
def test_a_job_lost_with_its_horse_uses_an_attempt(pools: Pools, bench_dir: BenchDir,
                                                   redis_client: redis.Redis, tmp_path: Path) -> None:
    # Given a job that kills its horse, with one retry
    out = tmp_path / "ev.jsonl"
    pools.start_ready(pool=1)
    with bgcore.connect("a.test", bench_dir.bench()):
        job = bgcore.enqueue("testapp.engine_tasks.kill_self", path=str(out), retry=1)
    # Then it runs twice (the loss used the first attempt) and then fails for good
    final = wait_status(redis_client, job.id, "failed")
    assert final.number_of_retries == 1 and len(evidence(out, "dying")) == 2
    wait_until(lambda: len(_log_rows(bench_dir.bench())) == 2, "two job-log rows")
    assert [(r.status, r.attempt) for r in _log_rows(bench_dir.bench())] == [("retried", 1), ("failed", 2)]
