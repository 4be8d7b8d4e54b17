"""The read models (bgcore.views) and the per-site failed index, on a real redis-server.

Listings read what one page shows: the number of round trips of a page does not
grow with the number of jobs (counted here, as a property of the code, not a timing).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis.connection

import bgcore
from bgcore import keys
from bgcore.bench import Bench
from bgcore.clock import utcnow
from bgcore.engine.horse import Horse, HorseLimits
from bgcore.engine.middleware import default_middleware
from bgcore.engine.pool import register
from bgcore.engine.slots import Slots
from bgcore.jobs import delete_failed, requeue_failed
from bgcore.migrate import migrate_site
from bgcore.retention import clear_failed, prune_failed_jobs
from bgcore.rqbridge import broker
from bgcore.views import joblist
from bgcore.views.joblist import JobFilter, job_page
from bgcore.views.queues import queue_counts
from bgcore.views.sites import site_rows
from bgcore.views.workers import live_workers, per_queue
from tests.conftest import BenchDir


def drain(bench: Bench) -> None:
    Horse(bench, [bench.queues["default"]], name="views-horse", index=0, slots=Slots(1),
          middleware=default_middleware(bench, timeouts=False), limits=HorseLimits(10**6, 10**6), burst=True).run()


def fail(bench: Bench, site: str, job_id: str) -> str:
    with bgcore.connect(site, bench):
        return str(bgcore.enqueue("testapp.tasks.fail", job_id=job_id).id)


def index(bench: Bench, site: str) -> list[str]:
    return [i.decode() for i in bench.redis().zrange(keys.site_failed(bench.bench_id, site), 0, -1)]


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the commands (or pipelines) sent to Redis: one per round trip."""
    count = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self: object, command: object, check_health: bool = True) -> None:
        count[0] += 1
        send(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    yield count


def test_the_failed_index_follows_failures_requeues_deletes_and_pruning(bench_dir: BenchDir) -> None:
    bench_dir.write_common(failure_ttl=3600)
    bench = bench_dir.bench()
    for site in ("a.test", "b.test"):
        migrate_site(bench, site)
    # Given failed jobs of a.test and b.test
    a1, a2, a3 = fail(bench, "a.test", "a1"), fail(bench, "a.test", "a2"), fail(bench, "a.test", "a3")
    b1 = fail(bench, "b.test", "b1")
    drain(bench)
    # Then each site's index holds its own failures only
    assert sorted(index(bench, "a.test")) == sorted([a1, a2, a3]) and index(bench, "b.test") == [b1]
    assert sorted(broker(bench).failed_ids("default", "a.test")) == sorted([a1, a2, a3])
    assert broker(bench).failed_ids("short", "a.test") == []
    # When one is requeued and one deleted, they leave the index
    assert requeue_failed(bench, "a.test", job="a1").jobs == ["a1"]
    assert delete_failed(bench, "a.test", job="a2").jobs == ["a2"]
    assert index(bench, "a.test") == [a3]
    # And a cleared site and pruned failures leave it too
    assert clear_failed(bench, "b.test", utcnow()).redis_jobs == 1 and index(bench, "b.test") == []
    assert prune_failed_jobs(bench, utcnow() + timedelta(hours=2)) == 1
    assert index(bench, "a.test") == []


def test_failures_from_before_the_index_are_indexed_once(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    # Given a failure in RQ's registry that no index knows (written by a version without it)
    fail(bench, "a.test", "old")
    drain(bench)
    redis_ = bench.redis()
    redis_.delete(keys.site_failed(bench.bench_id, "a.test"))
    assert broker(bench).failed_ids("default", "a.test") == []
    # When a pool starts (it indexes each queue's earlier failures), then once more
    assert broker(bench).index_failed("default") == 1
    assert broker(bench).index_failed("default") == 0
    # Then the site's failures are found again
    assert [keys.local_job_id(i) for i in broker(bench).failed_ids("default", "a.test")] == ["old"]


def test_a_retried_attempt_is_not_a_failure_until_its_last(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        rq_id = bgcore.enqueue("testapp.tasks.fail", retry=bgcore.Retry(max=1, intervals=[0])).id
    drain(bench)
    assert index(bench, "a.test") == [rq_id]  # after its second (last) attempt only, once


def test_queue_counts_count_every_state_of_every_queue(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.noop", queue="short")
        bgcore.enqueue_in(600, "testapp.tasks.noop", queue="long")
    with bgcore.connect("b.test", bench):
        bgcore.enqueue("testapp.tasks.noop", queue="short")
        bgcore.enqueue("testapp.tasks.noop", queue="short")
    fail(bench, "a.test", "x")
    drain(bench)
    found = {q.name: q for q in queue_counts(bench)}
    assert (found["short"].queued, found["short"].per_site) == (3, {"a.test": 1, "b.test": 2})
    assert (found["default"].failed, found["long"].scheduled, found["long"].queued) == (1, 1, 0)


def test_job_pages_walk_site_lists_in_order_and_read_only_the_page(bench_dir: BenchDir,
                                                                   round_trips: list[int]) -> None:
    bench = bench_dir.bench()
    # Given 3 jobs of a.test and 5 of b.test on default, 1 of a.test on short
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.noop", queue="short", job_id="as")
        for n in range(3):
            bgcore.enqueue("testapp.tasks.noop", job_id=f"a{n}")
    with bgcore.connect("b.test", bench):
        for n in range(5):
            bgcore.enqueue("testapp.tasks.noop", job_id=f"b{n}")
    # Then pages cut across queues and sites in priority and turn order
    pages = [[r.job_id for r in job_page(bench, JobFilter(), offset, 4).rows] for offset in (0, 4, 8)]
    assert pages == [["as", "a0", "a1", "a2"], ["b0", "b1", "b2", "b3"], ["b4"]]
    assert job_page(bench, JobFilter(), 0, 4).total == 9
    # And a page costs the same round trips with many more jobs waiting
    round_trips[0] = 0
    job_page(bench, JobFilter(), 4, 4)
    few = round_trips[0]
    with bgcore.connect("b.test", bench):
        for n in range(300):
            bgcore.enqueue("testapp.tasks.noop")
    round_trips[0] = 0
    job_page(bench, JobFilter(), 4, 4)
    assert round_trips[0] == few
    round_trips[0] = 0
    job_page(bench, JobFilter(site="b.test"), 100, 4)
    assert round_trips[0] <= few


def test_a_method_filter_stops_at_its_scan_bound_and_says_so(bench_dir: BenchDir,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        for n in range(30):
            bgcore.enqueue("testapp.tasks.noop")
        bgcore.enqueue("testapp.tasks.add", a=1, b=2, job_id="late")
    assert [r.job_id for r in job_page(bench, JobFilter(method="testapp.tasks.add")).rows] == ["late"]
    monkeypatch.setattr(joblist, "METHOD_SCAN_LIMIT", 20)
    monkeypatch.setattr(joblist, "CHUNK", 7)
    page = job_page(bench, JobFilter(method="testapp.tasks.add"))
    assert (page.rows, page.total, page.scanned) == ([], None, 20)


def test_live_workers_name_each_busy_horses_job_and_skip_dead_ones(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    host = socket.gethostname()
    with bgcore.connect("a.test", bench):
        rq_id = bgcore.enqueue("testapp.tasks.noop", queue="short", job_name="the report").id
    register(bench.redis(), "busy", [bench.queues["short"]], bench.bench_id, host, ttl=60)
    register(bench.redis(), "idle", [bench.queues["short"], bench.queues["long"]], bench.bench_id, host, ttl=60)
    register(bench.redis(), "dead", [bench.queues["short"]], bench.bench_id, host, ttl=60, pid=2**22 + 7)
    assert broker(bench).take("busy", [("short", 300)]) is not None
    found = {w.name: w for w in live_workers(bench)}
    assert set(found) == {"busy", "idle"}
    assert (found["busy"].job, found["busy"].site, found["busy"].job_id) == ("the report", "a.test",
                                                                             keys.local_job_id(rq_id))
    assert found["busy"].started_at is not None and found["idle"].job_id is None
    assert per_queue(list(found.values())) == {"short": 2, "long": 1}
    assert os.getpid()  # the live ones are this process's registrations


def test_site_rows_pages_and_sorts_without_reading_every_site_for_the_default_view(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    for n in range(12):
        bench_dir.add_site(f"s{n:02d}.test", **({"scheduler_disabled": True} if n % 3 == 0 else {}))
    fail(bench, "s05.test", "f1")
    fail(bench, "s05.test", "f2")
    fail(bench, "s07.test", "f3")
    drain(bench)
    page = site_rows(bench, sort="failed", descending=True, limit=3)
    assert [(r.site, r.failed) for r in page.rows] == [("s05.test", 2), ("s07.test", 1), ("a.test", 0)]
    assert page.total == 14
    disabled = site_rows(bench, scheduler="disabled")
    assert [r.site for r in disabled.rows] == ["s00.test", "s03.test", "s06.test", "s09.test"]
    assert [r.site for r in site_rows(bench, offset=12, limit=5).rows] == ["s10.test", "s11.test"]
