"""Scheduler commands through the real ``bgcore`` console script, and migrate's Redis notice.

The session's real redis-server; no daemon process (nothing here is about one)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

import pytest
import redis

from bgcore import keys
from bgcore.bench import Bench
from bgcore.processes import free_port
from bgcore.scheduler.overlap import blocked_events
from bgcore.scheduler.registry import bump_registry_version
from tests.conftest import BenchDir
from tests.test_scheduler_daemon_support import SchedBench, make_sched_bench

UTC = timezone.utc


@pytest.fixture
def twice(bench_dir: BenchDir) -> SchedBench:
    """Site a.test whose app registers ``every`` both on every tick and hourly, migrated."""
    sched = make_sched_bench(bench_dir, ["every"])
    sched.hooks.write_text(
        f'scheduler_events = {{"all": ["{sched.app}.tasks.every"], "hourly": ["{sched.app}.tasks.every"]}}\n'
    )
    sched.migrate()
    return sched


def events_of(sched: SchedBench, site: str) -> list[dict[str, str]]:
    out = sched.dir.cli("scheduler", "events", "--site", site, "--format", "json", check=True).stdout
    return list(json.loads(out))


def test_triggering_an_ambiguous_method_lists_its_events_and_an_event_id_picks_one(
    twice: SchedBench, redis_client: redis.Redis
) -> None:
    method = f"{twice.app}.tasks.every"
    ids = {row["frequency"]: row["event_id"] for row in events_of(twice, "a.test")}
    # When the method is triggered by name
    bad = twice.dir.cli("trigger-scheduler-event", method, "--site", "a.test")
    # Then nothing is queued and the error lists both events with their frequencies
    assert bad.returncode == 1
    assert f"{ids['all']} (all)" in bad.stderr and f"{ids['hourly']} (hourly)" in bad.stderr
    assert "event id" in bad.stderr
    bench = twice.dir.bench()
    assert redis_client.hlen(keys.scheduler_last_job(bench.bench_id, "a.test")) == 0
    # When it is triggered by the hourly event's id
    good = twice.dir.cli("trigger-scheduler-event", ids["hourly"], "--site", "a.test", check=True)
    # Then that event's run is queued and is its last job, so the daemon holds the event back
    job_id = good.stdout.split()[1]  # printed as other commands take it: without the site prefix
    last_jobs = redis_client.hgetall(keys.scheduler_last_job(bench.bench_id, "a.test"))
    assert last_jobs == {ids["hourly"].encode(): keys.job_id("a.test", job_id).encode()}
    assert blocked_events(bench, {"a.test": [ids["hourly"], ids["all"]]}, now=datetime.now(UTC)) == {
        ("a.test", ids["hourly"])
    }


def test_events_show_times_in_the_site_time_zone(bench_dir: BenchDir) -> None:
    # Given a site in Asia/Kolkata with an event that ran once
    sched = make_sched_bench(bench_dir, ["every"])
    sched.add_site("a.test", time_zone="Asia/Kolkata")
    sched.migrate()
    sched.dir.cli("trigger-scheduler-event", f"{sched.app}.tasks.every", "--site", "a.test", check=True)
    bench = sched.dir.bench()
    bench.redis().hset(keys.scheduler_last_run(bench.bench_id, "a.test"),
                       events_of(sched, "a.test")[0]["event_id"], repr(datetime.now(UTC).timestamp() + 1))
    # When its events are listed
    (row,) = events_of(sched, "a.test")
    table = sched.dir.cli("scheduler", "events", "--site", "a.test", check=True).stdout
    # Then last and next run carry the site's offset
    assert row["last_run"].endswith("+05:30") and row["next_run"].endswith("+05:30")
    assert "times in Asia/Kolkata" in table


def test_migrate_without_any_redis_stays_quiet(bench_dir: BenchDir, caplog: pytest.LogCaptureFixture) -> None:
    # Given a bench with no redis_queue and no private Redis running (a first `make demo` migrate)
    config = json.loads((bench_dir.sites / "common_site_config.json").read_text())
    del config["redis_queue"]
    (bench_dir.sites / "common_site_config.json").write_text(json.dumps(config))
    # When a registry change is announced
    with caplog.at_level(logging.DEBUG, logger="bgcore.scheduler.registry"):
        assert bump_registry_version(Bench(bench_dir.path), "a.test") is None
    # Then nothing above DEBUG is logged (a daemon reads every registry when it starts)
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_migrate_with_redis_down_says_what_to_do(bench_dir: BenchDir, caplog: pytest.LogCaptureFixture) -> None:
    # Given a bench whose configured Redis does not answer
    bench_dir.write_common(redis_queue=f"redis://127.0.0.1:{free_port()}/0")
    # When a registry change is announced
    with caplog.at_level(logging.DEBUG, logger="bgcore.scheduler.registry"):
        assert bump_registry_version(Bench(bench_dir.path), "a.test") is None
    # Then one warning says a running scheduler keeps the old events, and how to fix that
    (record,) = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "restart the scheduler" in message and "migrate again once Redis is up" in message
    assert "fingerprints" not in message
