"""Capacity figures for sizing a bench: ``python -m benchmarks.capacity [--jobs N] [--sites N]``.

Measures, against a private ``redis-server`` it starts on a free port (and
stops by its PID):

1. Redis memory per queued job: ``INFO memory`` ``used_memory`` before and
   after enqueueing ``--jobs`` jobs spread over 100 sites (a small JSON
   payload, like a document job), and ``MEMORY USAGE`` of one job's hash; then
   the same once those jobs ran (finished jobs keep their hash and result
   for RQ's ``result_ttl``, 500 s) and once they failed (kept for
   ``failure_ttl``, 7 days by default).
2. Redis commands per job: ``INFO commandstats`` summed (commands run inside
   the engine's Lua scripts included) around the enqueues and around the
   drain, divided by the jobs.
3. The throughput of one worker process: ``bgcore worker --queue default
   --pool 1 --burst`` (one pool, one horse) as a real process, on no-op jobs
   and on jobs that sleep 10 ms; its start-up (a burst run on an empty queue)
   is measured apart.
4. Scheduler memory per site and per event: the daemon's own bookkeeping for
   N synthetic sites of E events each, in a fresh process per size, by
   ``tracemalloc`` (the Python objects held) and RSS; a fit of the sizes
   gives bytes per site and per event.
5. Redis commands per scheduler tick: a tick with nothing due, a tick where
   each of ``--sites`` sites has one event due (per due event), the leader's
   lease step and a rescan of unchanged sites; and the Redis memory a fired
   occurrence takes (its queued job and the scheduler's records).
6. With ``redis-benchmark`` on PATH: what the same redis-server does at most
   for plain SET/LPUSH/HSET on this machine (client-bound on a small one).

``docs/capacity.md`` turns these figures into a sizing table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from benchmarks.jobs import FIXTURE_APPS, redis_server

UTC = timezone.utc
QUEUE_SITES = 100
BGCORE = str(Path(sys.executable).parent / "bgcore")
CRONS = ("0 * * * *", "0 0 * * *", "30 1 * * *", "0 2 * * *", "0 0 * * 0", "0 0 1 * *",
         "*/15 * * * *", "0 */6 * * *", "45 3 * * *", "0 0 1 1 *")
NOW = datetime(2026, 3, 10, 12, 7, 30, tzinfo=UTC)
MEMORY_SIZES = ((2_000, 5), (2_000, 20), (10_000, 10))


# -- helpers ------------------------------------------------------------------------------------------


def make_bench(root: Path, url: str, n_sites: int) -> Path:
    bench = root / "bench"
    sites = bench / "sites"
    sites.mkdir(parents=True)
    (sites / "common_site_config.json").write_text(json.dumps({"redis_queue": url, "apps_path": [str(FIXTURE_APPS)],
                                                               "bench_id": "capacity"}))
    own = json.dumps({"installed_apps": ["testapp"]})
    for i in range(n_sites):
        (sites / f"site{i}.test").mkdir()
        (sites / f"site{i}.test" / "site_config.json").write_text(own)
    return bench


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def command_calls(client: Any) -> dict[str, int]:
    """``INFO commandstats`` as {command: calls}, without the INFO/CONFIG calls of this benchmark."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    for own in ("info", "config|resetstat", "config"):
        calls.pop(own, None)
    return calls


def redis_cpu_us(client: Any) -> float:
    """CPU time the redis-server process has used (``INFO cpu``, user + system), in microseconds.

    Unlike the commandstats' usec it counts a script once (not the script and each command in it
    again) and includes reading and writing the clients' sockets.
    """
    cpu = client.info("cpu")
    return (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6


def reset_stats(client: Any) -> None:
    client.config_resetstat()


def top(calls: dict[str, int], per: float, n: int = 6) -> str:
    ranked = sorted(calls.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {count / per:.2f}" for name, count in ranked)


def enqueue_jobs(bench: Any, n: int, method: str = "testapp.tasks.echo", **kwargs: Any) -> None:
    import bgcore

    per_site = n // QUEUE_SITES
    for i in range(QUEUE_SITES):
        with bgcore.connect(f"site{i}.test", bench):
            for j in range(per_site):
                bgcore.enqueue(method, queue="default", **({"doc": f"SINV-{i:04d}-{j:06d}", "action": "submit"}
                                                           if not kwargs else kwargs))


def burst_worker(bench_path: Path) -> float:
    """Seconds a real ``bgcore worker --queue default --pool 1 --burst`` takes to drain and exit."""
    started = time.perf_counter()
    subprocess.run([BGCORE, "--bench", str(bench_path), "worker", "--queue", "default", "--pool", "1", "--burst",
                    "--quiet"], check=True, capture_output=True)
    return time.perf_counter() - started


# -- 1-3: jobs -----------------------------------------------------------------------------------------


def jobs_part(root: Path, url: str, n_jobs: int) -> None:
    import bgcore
    from bgcore.jobs import queued_count

    bench_path = make_bench(root, url, QUEUE_SITES)
    bench = bgcore.Bench(bench_path)
    bench.activate_import_path()
    client = bench.redis()
    client.flushdb()
    print(f"== Redis memory and commands per job ({n_jobs:,} jobs over {QUEUE_SITES} sites, queue default) ==")
    base = used_memory(client)
    reset_stats(client)
    cpu = redis_cpu_us(client)
    started = time.perf_counter()
    enqueue_jobs(bench, n_jobs)
    enqueue_s = time.perf_counter() - started
    enq_calls = command_calls(client)
    enq_usec = redis_cpu_us(client) - cpu
    queued = used_memory(client)
    one_job = next(iter(client.scan_iter(match="rq:job:*", count=1000)))
    job_hash = client.memory_usage(one_job, samples=0) or 0
    per_queued = (queued - base) / n_jobs
    print(f"queued: {per_queued:,.0f} bytes of used_memory per job (MEMORY USAGE of one job hash: {job_hash} bytes; "
          f"the rest: its entry in its site's list and the ring)")
    print(f"enqueue: {sum(enq_calls.values()) / n_jobs:.2f} Redis commands per job "
          f"({top(enq_calls, n_jobs)}); Redis CPU {enq_usec / n_jobs:.1f} us per job; "
          f"{n_jobs / enqueue_s:,.0f} enqueues/s from one process")

    reset_stats(client)
    cpu = redis_cpu_us(client)
    burst_worker(bench_path)
    drain_calls = command_calls(client)
    drain_usec = redis_cpu_us(client) - cpu
    left = queued_count(bench, "default")
    finished = used_memory(client)
    print(f"worker: {sum(drain_calls.values()) / n_jobs:.2f} Redis commands per job "
          f"({top(drain_calls, n_jobs)}); Redis CPU {drain_usec / n_jobs:.1f} us per job; left in lists: {left}")
    print(f"finished (kept for result_ttl 500 s): {(finished - base) / n_jobs:,.0f} bytes per job")

    client.flushdb()
    base = used_memory(client)
    enqueue_jobs(bench, n_jobs // 10, "testapp.tasks.fail", message="boom " * 20)
    burst_worker(bench_path)
    failed = used_memory(client)
    print(f"failed (kept for failure_ttl, 7 days by default, with the traceback): "
          f"{(failed - base) / (n_jobs // 10):,.0f} bytes per job")

    print()
    print("== throughput of one worker process (bgcore worker --pool 1 --burst, a real process) ==")
    client.flushdb()
    startup = min(burst_worker(bench_path) for _ in range(3))
    for label, method, kwargs, n in (("no-op jobs", "testapp.tasks.noop", {}, n_jobs // 2),
                                     ("10 ms jobs", "testapp.tasks.sleep", {"seconds": 0.01}, 500)):
        client.flushdb()
        if kwargs:
            enqueue_jobs(bench, n, method, **kwargs)
        else:
            _enqueue_plain(bench, n, method)
        wall = burst_worker(bench_path)
        work = max(wall - startup, 1e-9)
        print(f"{label}: {n:,} jobs in {wall:.2f} s with start-up, {n / work:,.0f} jobs/s after it "
              f"({work / n * 1000:.2f} ms per job); start-up of a burst worker {startup:.2f} s")


def _enqueue_plain(bench: Any, n: int, method: str) -> None:
    import bgcore

    per_site = n // QUEUE_SITES
    for i in range(QUEUE_SITES):
        with bgcore.connect(f"site{i}.test", bench):
            for _ in range(per_site):
                bgcore.enqueue(method, queue="default")


# -- 4: scheduler memory --------------------------------------------------------------------------------


def memory_probe(n_sites: int, n_events: int) -> None:
    """In a fresh process: the Python memory the daemon holds for ``n_sites`` sites of ``n_events`` events."""
    import logging

    from bgcore.bench import Bench
    from bgcore.scheduler.daemon import SchedulerDaemon
    from bgcore.scheduler.loader import LoadResult, RegistrySnapshot
    from bgcore.scheduler.timetable import SiteState, TimedEvent

    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="bgcore-capacity-") as tmp:
        sites = Path(tmp) / "sites"
        sites.mkdir()
        (sites / "common_site_config.json").write_text(json.dumps({"redis_queue": "redis://127.0.0.1:1/0"}))
        daemon = SchedulerDaemon(Bench(tmp))
        last = (NOW - timedelta(minutes=1)).timestamp()
        rss_before = _rss()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n_sites):
            events = {f"s{i}e{j}": TimedEvent(f"s{i}e{j}", f"app{j % 3}.tasks.method_{j}", "default",
                                              CRONS[j % len(CRONS)], app=f"app{j % 3}", frequency="cron")
                      for j in range(n_events)}
            snapshot = RegistrySnapshot(version=b"1", events=events, seeds={e: last for e in events},
                                        fingerprints={"app0": "0" * 64, "app1": "1" * 64, "app2": "2" * 64})
            state = SiteState(name=f"site{i}.example.com", tz="Europe/Berlin", interval=60.0, events=events,
                              last=dict(snapshot.seeds), stamp=(1, 1, b"1"), fingerprints=snapshot.fingerprints,
                              apps=("app0", "app1", "app2"))
            daemon._apply(LoadResult(state.name, state.stamp, state=state, snapshot=snapshot))
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        print(json.dumps({"sites": n_sites, "events": n_events, "bytes": held, "rss_mb": (_rss() - rss_before)}))


def _rss() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scheduler_memory() -> None:
    print("== scheduler memory (the daemon's bookkeeping: registry snapshot, timetable, stamps) ==")
    found = {}
    for n_sites, n_events in MEMORY_SIZES:
        out = subprocess.run([sys.executable, "-m", "benchmarks.capacity", "--memory-probe", str(n_sites),
                              str(n_events)], capture_output=True, text=True, check=True).stdout
        probe = json.loads(out.strip().splitlines()[-1])
        found[(n_sites, n_events)] = probe["bytes"]
        print(f"{n_sites:>7,} sites x {n_events:>2} events: {probe['bytes'] / 2**20:7.1f} MiB traced "
              f"(RSS grew {probe['rss_mb']:.0f} MiB, tracemalloc's own overhead included)")
    (s, e_low), (_, e_high) = MEMORY_SIZES[0], MEMORY_SIZES[1]
    per_event = (found[(s, e_high)] - found[(s, e_low)]) / (s * (e_high - e_low))
    per_site = found[(s, e_low)] / s - e_low * per_event
    n, e = MEMORY_SIZES[2]
    predicted = n * (per_site + e * per_event)
    print(f"fit: {per_site:,.0f} bytes per site + {per_event:,.0f} bytes per event; predicts "
          f"{predicted / 2**20:.1f} MiB for {n:,} x {e} (measured {found[(n, e)] / 2**20:.1f} MiB)")


# -- 5: Redis commands per scheduler tick ---------------------------------------------------------------


def scheduler_commands(root: Path, url: str, n_sites: int) -> None:
    import logging

    from bgcore.bench import Bench
    from bgcore.scheduler.daemon import SchedulerDaemon
    from bgcore.scheduler.loader import site_stamp
    from bgcore.scheduler.timetable import SiteState, TimedEvent, Timetable

    logging.getLogger("bgcore").setLevel(logging.WARNING)
    print(f"== Redis commands per scheduler tick ({n_sites:,} sites) ==")
    bench = Bench(make_bench(root / "sched", url, n_sites))
    bench.activate_import_path()
    client = bench.redis()
    client.flushdb()
    daemon = SchedulerDaemon(bench)
    names = [f"site{i}.test" for i in range(n_sites)]
    table = Timetable()
    slot = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)
    for name in names:
        events = {"every": TimedEvent("every", "testapp.tasks.noop", "default", "* * * * *"),
                  **{f"c{j}": TimedEvent(f"c{j}", "testapp.tasks.noop", "default", cron)
                     for j, cron in enumerate(CRONS[:9])}}
        table.put_site(SiteState(name=name, tz="UTC", interval=60.0, events=events,
                                 last={e: (slot - timedelta(minutes=1)).timestamp() if e == "every"
                                       else slot.timestamp() for e in events}))
    daemon.timetable = table
    daemon.lease_step()  # takes the lease: from now on each step is the leader's steady renewal
    now = slot + timedelta(seconds=1)
    reset_stats(client)
    before = used_memory(client)
    cpu = redis_cpu_us(client)
    fired = daemon.tick(60.0, now)
    busy = command_calls(client)
    busy_usec = redis_cpu_us(client) - cpu
    grown = used_memory(client) - before
    reset_stats(client)
    rounds = 100
    for _ in range(rounds):
        daemon.tick(60.0, now + timedelta(seconds=2))
    idle = command_calls(client)
    reset_stats(client)
    for _ in range(rounds):
        daemon.lease_step()
    lease = command_calls(client)
    daemon.stamps = {n: site_stamp(bench, n, None) for n in names}
    reset_stats(client)
    daemon.rescan()
    rescan = command_calls(client)
    daemon.lease.release()
    total = sum(busy.values())
    print(f"tick with one event due in each site ({len(fired):,} enqueued of 10 events per site): {total:,} "
          f"commands = {total / max(len(fired), 1):.2f} per due event ({top(busy, max(len(fired), 1))}); "
          f"Redis CPU {busy_usec / max(len(fired), 1):.1f} us per due event")
    print(f"Redis memory per fired occurrence (its queued job, its claim and last-run records): "
          f"{grown / max(len(fired), 1):,.0f} bytes")
    print(f"tick with nothing due: {sum(idle.values()) / rounds:.2f} commands")
    print(f"leader's lease step (renewal and presence, every lease/3 = 5 s): {sum(lease.values()) / rounds:.2f} commands")
    print(f"rescan of {n_sites:,} unchanged sites (every scheduler_rescan_seconds, 10 s): "
          f"{sum(rescan.values()):,} commands ({top(rescan, 1, 3)})")


# -- the Redis itself ----------------------------------------------------------------------------------


def redis_ceiling(url: str) -> None:
    """What this machine's redis-server does at most, with ``redis-benchmark`` (when it is installed)."""
    import shutil

    exe = shutil.which("redis-benchmark")
    if exe is None:
        print("redis-benchmark is not installed: no ceiling measured")
        return
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run([exe, "-p", port, "-q", "-n", "200000", "-c", "20", "-t", "set,lpush,hset"],
                         capture_output=True, text=True, timeout=600).stdout
    print()
    print("== the ceiling of one redis-server on this machine (redis-benchmark, 20 clients, no pipelining) ==")
    for line in out.replace("\r", "\n").splitlines():
        if "requests per second" in line:
            print(line.strip())


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs for the Redis memory and command counts")
    parser.add_argument("--sites", type=int, default=1_000, help="sites for the scheduler's command counts")
    parser.add_argument("--memory-probe", nargs=2, type=int, metavar=("SITES", "EVENTS"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        memory_probe(*args.memory_probe)
        return 0
    if args.jobs < QUEUE_SITES * 10:
        raise SystemExit(f"--jobs must be at least {QUEUE_SITES * 10}")
    with tempfile.TemporaryDirectory(prefix="bgcore-capacity-") as tmp, redis_server(Path(tmp)) as url:
        import redis

        version = redis.Redis.from_url(url).info("server")["redis_version"]
        print(f"capacity benchmark: private redis-server {version} at {url}, Python {sys.version.split()[0]}")
        print()
        jobs_part(Path(tmp), url, args.jobs)
        print()
        scheduler_commands(Path(tmp), url, args.sites)
        redis_ceiling(url)
    print()
    scheduler_memory()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
