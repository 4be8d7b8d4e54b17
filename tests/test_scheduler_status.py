"""``bgcore scheduler status`` tells the sites the daemon refuses from the active ones.

An in-process daemon (its rescan publishes load errors to the session's real
redis-server) and the real ``bgcore`` console script."""

from __future__ import annotations

import json
from typing import Any

import redis

from bgcore import keys
from bgcore.scheduler.daemon import SchedulerDaemon
from tests.conftest import BenchDir


def status(bench_dir: BenchDir) -> dict[str, dict[str, Any]]:
    out = bench_dir.cli("scheduler", "status", "--site", "all", "--format", "json", check=True).stdout
    return {row["site"]: row for row in json.loads(out)}


def test_status_shows_why_the_daemon_refuses_a_site_until_it_is_fixed(bench_dir: BenchDir,
                                                                        redis_client: redis.Redis) -> None:
    # Given migrated sites, one with a bad tick interval and one with an unknown time zone,
    # and a site that was never migrated
    bench_dir.add_site("tick.test", scheduler_tick_interval=0)
    bench_dir.add_site("zone.test", time_zone="Mars/Olympus_Mons")
    for site in ("a.test", "b.test", "tick.test"):
        bench_dir.cli("migrate", "--site", site, check=True)
    bench_dir.add_site("new.test")
    # When the daemon loads the bench
    daemon = SchedulerDaemon(bench_dir.bench())
    daemon.rescan()
    # Then status names each refused site's error and only the good one is active
    found = status(bench_dir)
    assert found["a.test"]["active"] and found["a.test"]["error"] is None
    assert not found["tick.test"]["active"] and "scheduler_tick_interval" in found["tick.test"]["error"]
    assert not found["zone.test"]["active"] and "Mars/Olympus_Mons" in found["zone.test"]["error"]
    assert not found["new.test"]["active"] and found["new.test"]["error"]
    # And the table says "error: ..." instead of "active"
    table = bench_dir.cli("scheduler", "status", "--site", "tick.test", check=True).stdout
    assert "error: " in table and "active" not in table
    published = redis_client.hkeys(keys.scheduler_site_errors(bench_dir.bench().bench_id))
    assert {k.decode() for k in published} >= {"tick.test", "zone.test", "new.test"}
    # When the sites are fixed (config edited, site migrated) and the daemon rescans
    bench_dir.add_site("tick.test", scheduler_tick_interval=30)
    bench_dir.cli("migrate", "--site", "new.test", check=True)
    daemon.rescan()
    # Then their errors are gone from Redis and from status
    found = status(bench_dir)
    assert found["tick.test"]["active"] and found["tick.test"]["error"] is None
    assert found["new.test"]["active"] and found["new.test"]["error"] is None
    published = redis_client.hkeys(keys.scheduler_site_errors(bench_dir.bench().bench_id))
    assert "tick.test" not in {k.decode() for k in published}


def test_a_switched_off_site_is_stopped_not_in_error(bench_dir: BenchDir) -> None:
    # Given a site with a bad tick interval that is also in maintenance mode
    bench_dir.add_site("tick.test", scheduler_tick_interval="often", maintenance_mode=1)
    # Then status reports the switch (the daemon does not load it at all)
    found = status(bench_dir)["tick.test"]
    assert found["stopped_by"] == "maintenance_mode" and found["error"] is None and not found["active"]
