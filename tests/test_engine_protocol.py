"""The worker engine's Redis protocol, in process, against the real redis-server fixture.

Covers issue 7's protocol properties: fair shares across sites, queue priority
and ``at_front``, an O(1) take at 10,000 sites (counted in Redis commands, not
timed), RQ's job model and registries, one round trip per step, site isolation
inside one work-horse, exact and cheap per-site listings and purges, adoption
of RQ's plain lists, the engine's config keys and custom middleware, and
requeueing. No subprocess is started: the horse runs in this process.
"""

from __future__ import annotations

import importlib
import json
import math
import signal
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

import bgcore
from bgcore import keys
from bgcore.bench import Bench
from bgcore.db import engines, joblog
from bgcore.engine.broker import Broker, Taken
from bgcore.engine.horse import Horse, HorseExit, HorseLimits
from bgcore.engine.lifecycle import Middleware
from bgcore.engine.middleware import default_middleware
from bgcore.engine.settings import EngineSettings
from bgcore.engine.slots import Slots
from bgcore.enqueue import EXECUTE_JOB
from bgcore.errors import ConfigError
from bgcore.jobs import pending_jobs, purge_jobs, queued_count
from bgcore.migrate import migrate_site
from bgcore.rqbridge import SERIALIZER, broker, rq_queue

from tests.conftest import BenchDir

QUEUE = "default"
TIMEOUT = 300
WORKER = "protocol-worker"
Commands = Counter[str]


# -- helpers ----------------------------------------------------------------------------------------


def enqueue_jobs(bench: Bench, site: str, count: int, method: str = "testapp.tasks.noop", *,
                 user: str | None = None, queue: str = QUEUE, **kwargs: Any) -> list[str]:
    """Enqueue ``count`` calls of ``method`` in ``site`` through ``bgcore.enqueue``; their RQ job ids in order."""
    with bgcore.connect(site, bench, user=user):
        return [bgcore.enqueue(method, queue=queue, **kwargs).id for _ in range(count)]


def push_minimal_jobs(bench: Bench, sites: Sequence[str], queue: str = QUEUE, chunk: int = 2000) -> list[str]:
    """One queued no-op job per site, pushed by the broker in pipelines (no site directory needed)."""
    rq = rq_queue(bench, queue)
    the_broker = broker(bench)
    ids: list[str] = []
    for start in range(0, len(sites), chunk):
        with bench.redis().pipeline(transaction=False) as pipe:
            for site in sites[start:start + chunk]:
                job = rq.create_job(EXECUTE_JOB, kwargs={"site": site, "method": "testapp.tasks.noop", "kwargs": {}},
                                    job_id=keys.job_id(site, "only"), status=JobStatus.QUEUED, timeout=TIMEOUT)
                the_broker.push(job, site, queue, pipeline=pipe)
                ids.append(job.id)
            assert all(pipe.execute())
    return ids


def take_and_finish(the_broker: Broker, queues: Sequence[tuple[str, int]], *, worker: str = WORKER,
                    stop: Callable[[list[Taken]], bool] = lambda taken: False) -> list[Taken]:
    """Take (and finish, as a no-op) jobs until the queues are empty or ``stop(taken so far)``."""
    taken: list[Taken] = []
    while not stop(taken):
        job = the_broker.take(worker, queues)
        if job is None:
            break
        the_broker.finish(worker, job.job_id, job.queue, result=None, started=the_broker.clock())
        taken.append(job)
    return taken


def command_calls(client: redis.Redis) -> Commands:
    """Calls per Redis command so far (``INFO commandstats``), the INFO commands themselves left out."""
    stats: dict[str, dict[str, Any]] = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()
                    if not name.startswith("cmdstat_info")})


@dataclass
class Cost:
    """What a block of code cost in Redis: round trips its client sent, and commands the server ran."""

    sent: int = 0
    commands: Commands = field(default_factory=Counter)


@contextmanager
def counted(client: redis.Redis) -> Iterator[Cost]:
    """Count what the block costs: client side round trips (``sent``), server side per command (``commands``).

    ``client`` must be the connection the code under test uses (``bench.redis()``): ``sent``
    counts the commands it sends; commands a Lua script runs inside the server show in
    ``commands`` only. The INFO calls that measure are made outside the counted window.
    """
    cost = Cost()
    original = client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        cost.sent += 1
        return original(*args, **options)

    before = command_calls(client)
    client.execute_command = counting  # type: ignore[method-assign]
    try:
        yield cost
    finally:
        del client.execute_command  # back to the class's own method
        cost.commands = command_calls(client) - before


def fetch(bench: Bench, job_id: str) -> Job:
    return Job.fetch(job_id, connection=bench.redis(), serializer=SERIALIZER)


def rq_name(bench: Bench, queue: str = QUEUE) -> str:
    return keys.queue_name(bench.bench_id, queue)


def ring(bench: Bench, queue: str = QUEUE) -> list[str]:
    return [s.decode() for s in bench.redis().lrange(keys.queue_ring(bench.bench_id, queue), 0, -1)]


def site_list(bench: Bench, site: str, queue: str = QUEUE) -> list[str]:
    return [i.decode() for i in bench.redis().lrange(keys.site_queue(bench.bench_id, queue, site), 0, -1)]


def make_horse(bench: Bench, queues: Sequence[str] = (QUEUE,), *,
               middleware: Sequence[Middleware] | None = None) -> Horse:
    """A burst work-horse in this process (its loop returns once its queues are empty)."""
    return Horse(bench, [bench.queues[name] for name in queues], name="test-horse", index=0, slots=Slots(1),
                 middleware=middleware if middleware is not None else default_middleware(bench, timeouts=True),
                 limits=HorseLimits(1000, 4096), burst=True)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """A horse installs SIGTERM/SIGINT handlers and the timeout middleware SIGALRM: restore pytest's."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


# -- 1. fairness --------------------------------------------------------------------------------------


def test_quiet_sites_are_served_before_the_noisy_sites_200th_job(bench_dir: BenchDir) -> None:
    # Given a noisy site that enqueued 5,000 jobs, then 10 quiet sites that enqueued 3 each
    quiet_sites = [f"q{n}.test" for n in range(10)]
    for site in ["noisy.test", *quiet_sites]:
        bench_dir.add_site(site)
    bench = bench_dir.bench()
    noisy = enqueue_jobs(bench, "noisy.test", 5000)
    quiet = {site: enqueue_jobs(bench, site, 3) for site in quiet_sites}
    quiet_ids = {job_id for ids in quiet.values() for job_id in ids}

    # When one worker takes and finishes jobs until it reaches the noisy site's 200th job
    def reached_200th_noisy(taken: list[Taken]) -> bool:
        return bool(taken) and taken[-1].site == "noisy.test" and sum(t.site == "noisy.test" for t in taken) == 200

    taken = take_and_finish(broker(bench), [(QUEUE, TIMEOUT)], stop=reached_200th_noisy)
    order = [t.job_id for t in taken]

    # Then every quiet job was taken before the noisy site's 200th job
    assert quiet_ids <= set(order)
    assert max(order.index(job_id) for job_id in quiet_ids) < len(order) - 1
    # And the sites took turns: noisy, q0..q9, noisy, q0..q9, ... (round robin, in arrival order)
    rounds = [[t.site for t in taken[r * 11:(r + 1) * 11]] for r in range(3)]
    assert rounds == [["noisy.test", *quiet_sites]] * 3
    # And within each site the jobs were taken first in, first out
    assert [t.job_id for t in taken if t.site == "noisy.test"] == noisy[:200]
    assert broker(bench).queued_ids(QUEUE, "noisy.test") == noisy[200:]
    for site, ids in quiet.items():
        assert [t.job_id for t in taken if t.site == site] == ids
    # And with one global FIFO (arrival order) every quiet job would have waited behind all 5,000
    fifo = noisy + [job_id for site in quiet_sites for job_id in quiet[site]]
    assert min(fifo.index(job_id) for job_id in quiet_ids) == 5000


# -- 2. priority between queues, at_front within a site ---------------------------------------------


def test_a_higher_priority_queue_is_drained_first_and_at_front_leads_its_site(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    # Given default jobs of two sites, then short jobs of both
    default = enqueue_jobs(bench, "a.test", 2) + enqueue_jobs(bench, "b.test", 2)
    short = enqueue_jobs(bench, "b.test", 2, queue="short") + enqueue_jobs(bench, "a.test", 1, queue="short")
    queues = [("short", TIMEOUT), (QUEUE, TIMEOUT)]
    the_broker = broker(bench)

    # When a worker serving short,default takes one job, and another short job arrives meanwhile
    first = the_broker.take(WORKER, queues)
    assert first is not None
    late_short = enqueue_jobs(bench, "a.test", 1, queue="short")
    rest = take_and_finish(the_broker, queues)

    # Then every short job (the late one too) is taken before any default job
    taken = [first, *rest]
    assert [t.queue for t in taken] == ["short"] * 4 + [QUEUE] * 4
    assert {t.job_id for t in taken[:4]} == set(short + late_short)
    assert {t.job_id for t in taken[4:]} == set(default)

    # Given a site with two queued jobs, then a third enqueued at_front, and another site's job
    first_two = enqueue_jobs(bench, "a.test", 2)
    other = enqueue_jobs(bench, "b.test", 1)
    with bgcore.connect("a.test", bench):
        urgent = bgcore.enqueue("testapp.tasks.noop", at_front=True).id
    # When they are taken
    order = [t.job_id for t in take_and_finish(the_broker, [(QUEUE, TIMEOUT)])]
    # Then the at_front job leads its site; the sites still take turns
    assert order == [urgent, other[0], *first_two]


# -- 3. O(1) take in the number of sites --------------------------------------------------------------


def test_a_take_costs_the_same_commands_at_10000_sites_as_at_one(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    the_broker = broker(bench)
    # Given 10,000 sites with one queued job each on default, and one site with one job on short
    many = push_minimal_jobs(bench, [f"s{n}.test" for n in range(10_000)])
    [single] = push_minimal_jobs(bench, ["lone.test"], queue="short")
    assert len(ring(bench)) == 10_000
    # And the take script already loaded (a first EVALSHA on a fresh server also sends SCRIPT LOAD)
    assert the_broker.take("warm-up", [("long", TIMEOUT)]) is None

    # When one job is taken from each queue
    with counted(bench.redis()) as at_many:
        taken_many = the_broker.take(WORKER, [(QUEUE, TIMEOUT)])
    with counted(bench.redis()) as at_one:
        taken_one = the_broker.take(WORKER, [("short", TIMEOUT)])

    # Then each take is one round trip and the same small, fixed set of Redis commands
    assert taken_many is not None and taken_many.job_id == many[0]
    assert taken_one is not None and taken_one.job_id == single
    assert at_many.commands == at_one.commands
    assert at_many.commands["evalsha"] == 1
    inner = {name: n for name, n in at_many.commands.items() if name != "evalsha"}
    assert sum(inner.values()) <= 12 and max(inner.values()) <= 2, inner
    assert not {"lrange", "lrem", "lpos", "scan", "keys", "smembers", "zrange"} & set(inner)
    # And nothing walks the ring: the other 9,999 sites are still queued, in turn order
    assert len(ring(bench)) == 9_999 and ring(bench)[0] == "s1.test"


# -- 4. RQ's job model and the round trips per job ----------------------------------------------------


def test_rq_sees_started_finished_and_failed_jobs_with_results_and_tracebacks(
        bench_dir: BenchDir, restore_signals: None) -> None:
    bench = bench_dir.bench()
    migrate_site(bench, "a.test")
    name = rq_name(bench)
    started, finished, failed = (cls(name, connection=bench.redis(), serializer=SERIALIZER)
                                 for cls in (StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry))
    # Given a job that returns a value and one that raises
    [good] = enqueue_jobs(bench, "a.test", 1, "testapp.tasks.add", a=2, b=3)
    [bad] = enqueue_jobs(bench, "a.test", 1, "testapp.tasks.fail", message="kaput")
    assert fetch(bench, good).get_status() == JobStatus.QUEUED
    horse = make_horse(bench)

    # When a horse takes the first one
    taken = horse.broker.take(horse.name, horse.queues)
    assert taken is not None and taken.job_id == good
    # Then RQ sees it started by that worker, in the started registry
    job = fetch(bench, good)
    assert job.get_status() == JobStatus.STARTED and job.worker_name == horse.name
    assert good in started
    assert horse.broker.processing(horse.name) == [good]

    # When it runs it, then the other one
    horse.run_one(taken)
    second = horse.broker.take(horse.name, horse.queues)
    assert second is not None and second.job_id == bad
    horse.run_one(second)

    # Then the first is finished with its result, in the finished registry
    done = fetch(bench, good)
    assert done.get_status() == JobStatus.FINISHED and done.return_value() == 5
    assert good in finished.get_job_ids() and good not in started
    # And the second is failed with its traceback, in the failed registry and the site's job log
    broken = fetch(bench, bad)
    assert broken.get_status() == JobStatus.FAILED
    result = broken.latest_result()
    assert result is not None and result.exc_string is not None
    assert "Traceback" in result.exc_string and "RuntimeError: kaput" in result.exc_string
    assert bad in failed.get_job_ids() and bad not in started and bad not in finished.get_job_ids()
    [entry] = joblog.failures(bench, bench.site_config("a.test"))
    assert entry.job_id == bad and entry.exception == "RuntimeError: kaput"
    # And the horse holds nothing any more
    assert horse.broker.processing(horse.name) == [] and started.get_job_ids() == []


def test_cancelled_and_deleted_jobs_are_never_taken_even_when_more_than_a_take_looks_at(
        bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    the_broker = broker(bench)
    # Given one site whose 250 oldest jobs were cancelled or deleted the RQ way, then one live job
    dead = enqueue_jobs(bench, "a.test", 250)
    for n, job_id in enumerate(dead):
        job = fetch(bench, job_id)
        if n % 2:
            job.cancel()
        else:
            job.delete()
    [live] = enqueue_jobs(bench, "a.test", 1)

    # When a worker takes from the queue
    with counted(bench.redis()) as cost:
        taken = the_broker.take(WORKER, [(QUEUE, TIMEOUT)])

    # Then it gets the live job: the dead ones are dropped, never run and never "the queue is empty"
    assert taken is not None and taken.job_id == live
    # And each round trip looked at a bounded number of ids (at most 100), not at all 251 at once
    assert cost.sent == 3 and cost.commands["evalsha"] == 3
    assert fetch(bench, dead[1]).get_status() == JobStatus.CANCELED
    assert the_broker.depth(QUEUE) == 0 and ring(bench) == []
    assert the_broker.take(WORKER, [(QUEUE, TIMEOUT)]) is None


def test_enqueue_take_and_finish_of_a_noop_job_are_one_round_trip_each(
        bench_dir: BenchDir, restore_signals: None) -> None:
    bench = bench_dir.bench()
    horse = make_horse(bench)
    # Given a warm bench: one job already went through (scripts loaded, connection open)
    enqueue_jobs(bench, "a.test", 1)
    assert horse.run() == HorseExit.STOPPED

    with bgcore.connect("a.test", bench):
        # When a no-op job is enqueued, taken and run to its end, step by step
        with counted(bench.redis()) as enqueue_cost:
            job_id = bgcore.enqueue("testapp.tasks.noop").id
    with counted(bench.redis()) as take_cost:
        taken = horse.broker.take(horse.name, horse.queues)
    assert taken is not None and taken.job_id == job_id
    with counted(bench.redis()) as finish_cost:
        run = horse.run_one(taken)

    # Then each step was exactly one round trip: one EVALSHA and nothing else from the client
    assert run.error is None
    for cost in (enqueue_cost, take_cost, finish_cost):
        assert cost.sent == 1, cost
        assert cost.commands["evalsha"] == 1, cost
        assert not {"eval", "script|load", "multi", "exec", "watch"} & set(cost.commands), cost
    assert fetch(bench, job_id).get_status() == JobStatus.FINISHED


# -- 5. site isolation in one horse -------------------------------------------------------------------


def test_alternating_sites_in_one_horse_never_see_each_others_state(
        bench_dir: BenchDir, tmp_path: Path, restore_signals: None) -> None:
    bench = bench_dir.bench()
    for site in ("a.test", "b.test"):
        migrate_site(bench, site)
    out = str(tmp_path / "seen.jsonl")
    method = "testapp.isolation_tasks.visit"
    # Given jobs alternating between two sites (different users): A writes and commits, B looks,
    # A writes and fails, B writes and commits, A looks, B looks
    plan: list[tuple[str, str, dict[str, Any]]] = [
        ("a.test", "alice", {"insert": "a-kept"}),
        ("b.test", "bob", {}),
        ("a.test", "alice", {"insert": "a-doomed", "fail": True}),
        ("b.test", "bob", {"insert": "b-kept"}),
        ("a.test", "alice", {}),
        ("b.test", "bob", {}),
    ]
    ids = [enqueue_jobs(bench, site, 1, method, user=user, path=out, **kwargs)[0] for site, user, kwargs in plan]

    # When one in-process horse runs them all, one after another
    assert make_horse(bench).run() == HorseExit.STOPPED

    # Then they ran in that order, in this one process
    seen = lines(Path(out))
    assert [s["job_id"] for s in seen] == ids
    assert len({s["pid"] for s in seen}) == 1
    for s, (site, user, _) in zip(seen, plan):
        # And each job saw only its own site, config, user and job
        assert (s["site"], s["conf_name"], s["user"]) == (site, site, user)
        assert keys.site_of_job(s["job_id"]) == site
        # And nothing a previous job left in its site context
        assert s["leftover"] is None
    # And the failed job's write was rolled back; B never saw A's rows (nor A B's)
    assert [s["rows"] for s in seen] == [[], [], ["a-kept"], [], ["a-kept"], ["b-kept"]]
    statuses = [fetch(bench, job_id).get_status() for job_id in ids]
    assert statuses == [JobStatus.FINISHED] * 2 + [JobStatus.FAILED] + [JobStatus.FINISHED] * 3
    # And nothing of the last job's site is current once the horse is done
    assert bgcore.local.site is None

    # And each site kept one engine (one pool) across its jobs, the one the bench's engine cache holds
    for site, indexes in (("a.test", (0, 2, 4)), ("b.test", (1, 3, 5))):
        cached = engines.ENGINES.get(bench, bench.site_config(site))
        assert {seen[i]["engine"] for i in indexes} == {id(cached)}
        assert {seen[i]["pool"] for i in indexes} == {id(cached.pool)}
        # And a later job of the site reused a pooled connection instead of opening a new one
        assert seen[indexes[-1]]["dbapi_connection"] in {seen[i]["dbapi_connection"] for i in indexes[:-1]}
    assert seen[0]["engine"] != seen[1]["engine"]


# -- 6. per-site listings and purges ------------------------------------------------------------------


def test_pending_jobs_counts_and_purge_are_exact_per_site_and_read_only_that_site(bench_dir: BenchDir) -> None:
    bench_dir.add_site("erp")
    bench_dir.add_site("erp2")
    bench = bench_dir.bench()
    # Given sites erp and erp2 (a prefix of each other's name) with jobs, and 200 other sites with jobs
    erp = enqueue_jobs(bench, "erp", 3)
    erp_short = enqueue_jobs(bench, "erp", 1, queue="short")
    erp2 = enqueue_jobs(bench, "erp2", 2)
    others = push_minimal_jobs(bench, [f"o{n}.test" for n in range(200)])

    # When erp's pending jobs and depths are read
    with counted(bench.redis()) as listing:
        pending = pending_jobs(bench, "erp")
    with counted(bench.redis()) as depth:
        count = queued_count(bench, QUEUE, "erp")

    # Then exactly erp's jobs are listed (never erp2's), each queue in priority order
    assert [(p.queue, p.site) for p in pending] == [("short", "erp")] + [(QUEUE, "erp")] * 3
    assert [keys.job_id("erp", p.job_id) for p in pending] == erp_short + erp
    assert [keys.job_id("erp2", p.job_id) for p in pending_jobs(bench, "erp2")] == erp2
    assert count == 3 and queued_count(bench, QUEUE, "erp2") == 2 and queued_count(bench, "short", "erp") == 1
    assert queued_count(bench, QUEUE) == 3 + 2 + 200
    # And cheaply: one length per queue, one list read per queue erp has jobs in, one hash read per erp job,
    # one LLEN for the depth (the listing is the dashboard's: bgcore.views.joblist)
    assert listing.commands["llen"] == len(bench.queues)
    assert listing.commands["lrange"] == 2
    assert listing.commands["hmget"] == 4
    assert depth.commands == Counter({"llen": 1})

    # Given a worker took erp's first job
    taken = broker(bench).take(WORKER, [(QUEUE, TIMEOUT)])
    assert taken is not None and taken.job_id == erp[0]
    # When erp's queued jobs are purged
    report = purge_jobs(bench, "erp")
    # Then exactly erp's queued jobs are gone, their hashes too; the taken one is left alone
    assert report.removed == 3 and report.queues == list(bench.queues)
    assert pending_jobs(bench, "erp") == [] and queued_count(bench, QUEUE, "erp") == 0
    assert all(not Job.exists(job_id, connection=bench.redis()) for job_id in erp[1:] + erp_short)
    assert fetch(bench, erp[0]).get_status() == JobStatus.STARTED
    # And no ring holds the purged site any more
    assert all("erp" not in ring(bench, name) for name in bench.queues)
    # And every other site's job is still taken, and none of erp's
    rest = take_and_finish(broker(bench), [("short", TIMEOUT), (QUEUE, TIMEOUT)])
    assert sorted(t.job_id for t in rest) == sorted(erp2 + others)
    # And erp can enqueue again afterwards
    again = enqueue_jobs(bench, "erp", 1)
    assert ring(bench) == ["erp"] and broker(bench).queued_ids(QUEUE) == again


# -- 7. adopting jobs from RQ's plain list ------------------------------------------------------------


def test_jobs_on_rqs_plain_list_move_to_their_sites_and_are_taken(bench_dir: BenchDir,
                                                                   restore_signals: None) -> None:
    bench = bench_dir.bench()
    # Given a bgcore job and a foreign job pushed onto RQ's own list of the queue, the RQ way
    plain = Queue(rq_name(bench), connection=bench.redis(), serializer=SERIALIZER)
    legacy = plain.create_job(EXECUTE_JOB, job_id=keys.job_id("a.test", "legacy-1"), timeout=TIMEOUT, kwargs={
        "site": "a.test", "method": "testapp.tasks.add", "kwargs": {"a": 20, "b": 22}, "user": None, "job_name": None})
    plain.enqueue_job(legacy)
    foreign = plain.create_job("testapp.tasks.noop", job_id="not-a-bgcore-job")
    plain.enqueue_job(foreign)
    legacy_key = keys.rq_legacy_queue(rq_name(bench))
    assert bench.redis().lrange(legacy_key, 0, -1) == [legacy.id.encode(), b"not-a-bgcore-job"]
    the_broker = broker(bench)
    assert the_broker.take(WORKER, [(QUEUE, TIMEOUT)]) is None  # not in any site's list yet

    # When the queue's legacy list is adopted
    moved = the_broker.adopt_legacy(QUEUE)

    # Then the bgcore job is on its site's list; the foreign id stays where it was
    assert moved == 1
    assert site_list(bench, "a.test") == [legacy.id] and ring(bench) == ["a.test"]
    assert bench.redis().lrange(legacy_key, 0, -1) == [b"not-a-bgcore-job"]
    assert [p.job_id for p in pending_jobs(bench, "a.test")] == ["legacy-1"]
    # And a horse takes and runs it as any other job
    assert make_horse(bench).run() == HorseExit.STOPPED
    done = fetch(bench, legacy.id)
    assert done.get_status() == JobStatus.FINISHED and done.return_value() == 42


# -- 8. engine settings and custom middleware ---------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("max_jobs_per_horse", 0), ("max_jobs_per_horse", "x"), ("max_jobs_per_horse", 1.5),
    ("max_jobs_per_horse", True), ("max_horse_memory_mb", 8), ("max_horse_memory_mb", "512"),
    ("max_horse_memory_mb", 100.5), ("worker_heartbeat_seconds", math.nan), ("worker_heartbeat_seconds", -1),
    ("worker_heartbeat_seconds", None), ("shutdown_grace_seconds", -1), ("shutdown_grace_seconds", "30"),
    ("shutdown_grace_seconds", math.inf),
])
def test_a_bad_engine_setting_is_a_config_error_naming_file_key_and_value(bench_dir: BenchDir, key: str,
                                                                         value: Any) -> None:
    # Given a bench config with one bad engine key
    bench_dir.write_common(**{key: value})
    # When the engine reads its settings
    with pytest.raises(ConfigError) as caught:
        EngineSettings.from_bench(bench_dir.bench())
    # Then the error names the file, the key and the value found
    message = str(caught.value)
    assert str(bench_dir.sites / "common_site_config.json") in message
    assert key in message and f"found {value!r}" in message


def test_good_engine_settings_are_read_and_defaults_apply(bench_dir: BenchDir) -> None:
    # Given two keys set and two left out
    bench_dir.write_common(max_jobs_per_horse=7, worker_heartbeat_seconds=0.5)
    # When the engine reads its settings
    settings = EngineSettings.from_bench(bench_dir.bench())
    # Then the set ones are used and the others are the documented defaults
    assert settings == EngineSettings(max_jobs_per_horse=7, max_horse_memory_mb=1024,
                                      worker_heartbeat_seconds=0.5, shutdown_grace_seconds=30.0,
                                      max_payload_bytes=2**20, max_result_bytes=2**20)
    assert settings.registration_ttl == 1  # two heartbeats, at least a second


@pytest.mark.parametrize(("names", "says"), [
    (["testapp.no_such_module.Thing"], "cannot be imported"),
    (["testapp.isolation_tasks.NoSuchClass"], "cannot be imported"),
    (["testapp.isolation_tasks.NotMiddleware"], "is not a bgcore.engine.Middleware subclass"),
    (["testapp.tasks.noop"], "is not a bgcore.engine.Middleware subclass"),
    ("testapp.isolation_tasks.RecordingMiddleware", "must be a list of dotted class paths"),
    ([42], "must be a list of dotted class paths"),
])
def test_a_bad_worker_middleware_is_a_config_error(bench_dir: BenchDir, names: Any, says: str) -> None:
    # Given worker_middleware naming something that is not a usable Middleware class
    bench_dir.write_common(worker_middleware=names)
    bench = bench_dir.bench()
    bench.activate_import_path()
    # When the middleware chain is built
    with pytest.raises(ConfigError) as caught:
        default_middleware(bench, timeouts=True)
    # Then the error names the file, the key and what is wrong
    message = str(caught.value)
    assert str(bench_dir.sites / "common_site_config.json") in message
    assert "worker_middleware" in message and says in message


def test_custom_middleware_sees_every_hook_and_its_retry_decision_runs_the_job_again(
        bench_dir: BenchDir, tmp_path: Path, restore_signals: None) -> None:
    # Given a bench whose worker_middleware names a recording middleware that retries flaky jobs once
    bench_dir.write_common(worker_middleware=["testapp.isolation_tasks.RecordingMiddleware"])
    bench = bench_dir.bench()
    bench.activate_import_path()
    recording_cls = importlib.import_module("testapp.isolation_tasks").RecordingMiddleware
    chain = default_middleware(bench, timeouts=True)
    [recorder] = [m for m in chain if isinstance(m, recording_cls)]
    # And a job that succeeds, one that fails, and one that fails only on its first attempt
    [ok] = enqueue_jobs(bench, "a.test", 1, "testapp.tasks.add", a=1, b=1)
    [bad] = enqueue_jobs(bench, "b.test", 1, "testapp.tasks.fail")
    [flaky] = enqueue_jobs(bench, "a.test", 1, "testapp.isolation_tasks.flaky", marker=str(tmp_path / "tried"))

    # When one horse with that chain runs them
    assert make_horse(bench, middleware=chain).run() == HorseExit.STOPPED

    # Then the middleware saw each job's hooks, inside the job's site, with the attempt number
    def hooks_of(job_id: str) -> list[tuple[str, int, str | None]]:
        return [(hook, attempt, site) for hook, seen_id, attempt, site in recorder.events if seen_id == job_id]

    assert hooks_of(ok) == [("before_job", 1, "a.test"), ("after_success", 1, "a.test"), ("after_job", 1, "a.test")]
    assert hooks_of(bad) == [("before_job", 1, "b.test"), ("after_retry_decision:none", 1, "b.test"),
                             ("after_failure", 1, "b.test"), ("after_job", 1, "b.test")]
    assert hooks_of(flaky) == [("before_job", 1, "a.test"), ("after_retry_decision:retry", 1, "a.test"),
                               ("after_success", 2, "a.test"), ("after_job", 2, "a.test")]
    # And the outcomes are what the hooks say: the retried job succeeded on attempt 2
    assert fetch(bench, ok).get_status() == JobStatus.FINISHED
    assert fetch(bench, bad).get_status() == JobStatus.FAILED
    retried = fetch(bench, flaky)
    assert retried.get_status() == JobStatus.FINISHED and retried.return_value() == "second attempt"


# -- 9. requeue ---------------------------------------------------------------------------------------


def test_a_requeued_job_goes_back_to_the_head_of_its_site_list(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    the_broker = broker(bench)
    started = StartedJobRegistry(rq_name(bench), connection=bench.redis(), serializer=SERIALIZER)
    # Given site A with two queued jobs and site B with one
    a_ids = enqueue_jobs(bench, "a.test", 2)
    [b_id] = enqueue_jobs(bench, "b.test", 1)

    # When a worker takes A's first job and puts it back (taken, never started)
    taken = the_broker.take(WORKER, [(QUEUE, TIMEOUT)])
    assert taken is not None and taken.job_id == a_ids[0]
    assert taken.job_id in started and the_broker.processing(WORKER) == [a_ids[0]]
    assert the_broker.requeue(WORKER, taken.job_id, taken.queue) is True

    # Then it is queued again at the head of A's list, out of the started registry and the worker's list
    assert site_list(bench, "a.test") == a_ids
    job = fetch(bench, a_ids[0])
    assert job.get_status() == JobStatus.QUEUED and not job.worker_name
    assert a_ids[0] not in started and the_broker.processing(WORKER) == []
    # And requeueing it again is refused: it is not this worker's any more
    assert the_broker.requeue(WORKER, taken.job_id, taken.queue) is False
    assert site_list(bench, "a.test") == a_ids

    # When B's only job is taken (B leaves the ring) and put back
    b_taken = the_broker.take(WORKER, [(QUEUE, TIMEOUT)])
    assert b_taken is not None and b_taken.job_id == b_id and ring(bench) == ["a.test"]
    assert the_broker.requeue(WORKER, b_taken.job_id, b_taken.queue) is True
    # Then B is back in the ring, first, and every job is taken once, A's in order
    assert ring(bench) == ["b.test", "a.test"]
    order = [t.job_id for t in take_and_finish(the_broker, [(QUEUE, TIMEOUT)])]
    assert order == [b_id, a_ids[0], a_ids[1]]
    assert all(fetch(bench, job_id).get_status() == JobStatus.FINISHED for job_id in order)


def test_a_held_sites_jobs_stay_queued_while_the_others_run_and_run_once_released(bench_dir: BenchDir) -> None:
    from bgcore.holds import set_hold, sync_holds

    # Given jobs of two sites, and a.test holding its jobs (bgcore hold-jobs on)
    bench = bench_dir.bench()
    held = enqueue_jobs(bench, "a.test", 3)
    free = enqueue_jobs(bench, "b.test", 2)
    set_hold(bench, "a.test", True)
    # When a burst horse drains what it may take
    horse = Horse(bench, [bench.queues[QUEUE]], name=WORKER, index=0, slots=Slots(1),
                  middleware=default_middleware(bench, timeouts=False), limits=HorseLimits(1000, 4096), burst=True)
    assert horse.run() == HorseExit.STOPPED
    # Then b.test's jobs ran and a.test's are still queued, in order
    assert [status_of(bench, i) for i in free] == ["finished", "finished"]
    assert broker(bench).queued_ids(QUEUE, "a.test") == held
    # When the hold is released by a hand edit of site_config.json, a pool's sync sees it
    bench_dir.add_site("a.test")  # rewrites the file without hold_jobs
    assert sync_holds(bench) == set()
    assert horse.run() == HorseExit.STOPPED
    assert [status_of(bench, i) for i in held] == ["finished"] * 3


def status_of(bench: Bench, job_id: str) -> str:
    return str(Job.fetch(job_id, connection=bench.redis(), serializer=SERIALIZER).get_status().value)
