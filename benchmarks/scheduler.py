"""Scheduler benchmark: ``python -m benchmarks.scheduler``.

Measures, in one run:

1. the cost of one tick over every site, for 100, 1,000 and 10,000 sites of
   10 cron events each, when nothing is due and when everything is due (the
   daemon's in-memory timetable, built directly: no site databases);
2. the midnight burst: 10,000 sites x 3 daily events = 30,000 occurrences
   claimed and enqueued through the daemon's real path (switch check, overlap
   check, atomic claim + ``bgcore.enqueue`` in pipelined transactions) into a
   private ``redis-server`` this benchmark starts and stops;
3. the resident memory of a daemon process holding 10,000 sites.

Targets: nothing-due tick at 10k sites < 50 ms; burst < 10 s; RSS < 300 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from benchmarks.jobs import FIXTURE_APPS, redis_server

UTC = timezone.utc
SIZES = (100, 1_000, 10_000)
CRONS = ("0 * * * *", "0 0 * * *", "30 1 * * *", "0 2 * * *", "0 0 * * 0", "0 0 1 * *",
         "*/15 * * * *", "0 */6 * * *", "45 3 * * *", "0 0 1 1 *")
NOW = datetime(2026, 3, 10, 12, 7, 30, tzinfo=UTC)  # a Tuesday, between every event's slots
BURST_SITES = 10_000
BURST_METHODS = ("testapp.tasks.noop", "testapp.tasks.echo", "testapp.tasks.heartbeat")


def build(n_sites: int, last: datetime) -> object:
    """A timetable of ``n_sites`` sites with 10 cron events each, all last run at ``last``."""
    from bgcore.scheduler.timetable import SiteState, TimedEvent, Timetable

    table = Timetable()
    for i in range(n_sites):
        events = {f"s{i}e{j}": TimedEvent(f"s{i}e{j}", f"app.tasks.m{j}", "default", cron)
                  for j, cron in enumerate(CRONS)}
        table.put_site(SiteState(name=f"site{i}.test", tz="UTC", interval=60.0, events=events,
                                 last={e: last.timestamp() for e in events}))
    return table


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tick_costs() -> None:
    print("tick cost over all sites (10 cron events per site; timetable built in memory)")
    print(f"{'sites':>7} {'events':>8} {'build ms':>9} {'nothing due':>13} {'everything due':>15} {'due events':>11}")
    for n in SIZES:
        started = time.perf_counter()
        table = build(n, NOW - timedelta(minutes=1))
        build_ms = (time.perf_counter() - started) * 1000
        rounds = 1000
        started = time.perf_counter()
        for _ in range(rounds):
            found = table.due(60.0, NOW)  # type: ignore[attr-defined]
        idle_us = (time.perf_counter() - started) / rounds * 1e6
        assert found == []
        table = build(n, NOW - timedelta(days=400))
        started = time.perf_counter()
        found = table.due(60.0, NOW)  # type: ignore[attr-defined]
        busy_ms = (time.perf_counter() - started) * 1000
        print(f"{n:>7} {n * 10:>8} {build_ms:>9.0f} {idle_us:>10.1f} us {busy_ms:>12.0f} ms {len(found):>11}")


def rss_probe(n_sites: int) -> None:
    """Run in a child process: RSS of a daemon holding ``n_sites`` sites x 10 events.

    The sites go through the daemon's own bookkeeping (stamps, registry
    snapshots, timetable) from in-memory load results: no site databases.
    """
    import logging

    from bgcore.bench import Bench
    from bgcore.scheduler.daemon import SchedulerDaemon
    from bgcore.scheduler.loader import LoadResult, RegistrySnapshot
    from bgcore.scheduler.timetable import SiteState, TimedEvent

    logging.disable(logging.INFO)
    before = rss_mb()
    with tempfile.TemporaryDirectory(prefix="bgcore-sched-rss-") as tmp:
        sites = Path(tmp) / "sites"
        sites.mkdir()
        (sites / "common_site_config.json").write_text(json.dumps({"redis_queue": "redis://127.0.0.1:1/0"}))
        daemon = SchedulerDaemon(Bench(tmp))
        last = (NOW - timedelta(minutes=1)).timestamp()
        for i in range(n_sites):
            name = f"site{i}.test"
            events = {f"s{i}e{j}": TimedEvent(f"s{i}e{j}", f"app.tasks.m{j}", "default", cron, app="app",
                                              frequency="cron")
                      for j, cron in enumerate(CRONS)}
            snapshot = RegistrySnapshot(version=b"1", events=events, seeds={e: last for e in events},
                                        fingerprints={"app": "0" * 64})
            state = SiteState(name=name, tz="UTC", interval=60.0, events=events, last=dict(snapshot.seeds),
                              stamp=(1, 1, b"1"), fingerprints=snapshot.fingerprints, apps=("app",))
            daemon._apply(LoadResult(name, state.stamp, state=state, snapshot=snapshot))
        after = rss_mb()
        print(json.dumps({"before": before, "after": after, "sites": len(daemon.timetable.sites)}))


def memory() -> None:
    print("daemon RSS (a fresh process per size; sites x 10 events in the daemon's own bookkeeping)")
    for n in SIZES:
        out = subprocess.run([sys.executable, "-m", "benchmarks.scheduler", "--rss-probe", str(n)],
                             capture_output=True, text=True, check=True).stdout
        probe = json.loads(out.strip().splitlines()[-1])
        print(f"{probe['sites']:>7} sites: {probe['after']:.0f} MB (imports alone {probe['before']:.0f} MB, "
              f"site state {probe['after'] - probe['before']:.1f} MB){'; target < 300 MB' if n == SIZES[-1] else ''}")


def burst() -> None:
    from bgcore.bench import Bench
    from bgcore.scheduler.daemon import SchedulerDaemon
    from bgcore.jobs import queued_count
    from bgcore.scheduler.loader import site_stamp
    from bgcore.scheduler.timetable import SiteState, TimedEvent, Timetable

    with tempfile.TemporaryDirectory(prefix="bgcore-sched-bench-") as tmp, redis_server(Path(tmp)) as url:
        sites = Path(tmp) / "bench" / "sites"
        sites.mkdir(parents=True)
        (sites / "common_site_config.json").write_text(json.dumps({"redis_queue": url,
                                                                   "apps_path": [str(FIXTURE_APPS)]}))
        own = json.dumps({"installed_apps": ["testapp"]})
        names = [f"site{i}.test" for i in range(BURST_SITES)]
        for name in names:
            (sites / name).mkdir()
            (sites / name / "site_config.json").write_text(own)
        bench = Bench(sites.parent)
        bench.activate_import_path()
        daemon = SchedulerDaemon(bench)
        midnight = datetime(2026, 3, 11, tzinfo=UTC)
        table = Timetable()
        for name in names:
            events = {f"d{j}": TimedEvent(f"d{j}", method, "default", "0 0 * * *")
                      for j, method in enumerate(BURST_METHODS)}
            table.put_site(SiteState(name=name, tz="UTC", interval=60.0, events=events,
                                     last={e: (midnight - timedelta(days=1)).timestamp() for e in events}))
        daemon.timetable = table
        now = midnight + timedelta(seconds=1)
        daemon.lease.try_acquire()  # the leader renews its lease between chunks of a long tick
        started = time.perf_counter()
        due = table.due(60.0, now)
        enqueued = daemon.fire(due, now, 60.0)
        seconds = time.perf_counter() - started
        queued = queued_count(bench, "default")
        print(f"midnight burst: {len(due):,} due -> {len(enqueued):,} enqueued ({queued:,} in the queue) "
              f"in {seconds:.2f} s = {len(enqueued) / seconds:,.0f} jobs/s (target < 10 s)")
        started = time.perf_counter()
        again = daemon.fire(due, now, 60.0)
        again_s = time.perf_counter() - started
        daemon.stamps = {n: site_stamp(bench, n, None) for n in names}
        daemon.timetable = Timetable()
        started = time.perf_counter()
        daemon.rescan()
        rescan_ms = (time.perf_counter() - started) * 1000
        print(f"same burst offered again (a second daemon / retried tick): {len(again)} enqueued "
              f"in {again_s:.2f} s")
        daemon.timetable = build(10_000, NOW - timedelta(minutes=1))  # type: ignore[assignment]
        started = time.perf_counter()
        for _ in range(1000):
            daemon.tick(60.0, NOW)
        tick_us = (time.perf_counter() - started) / 1000 * 1e6
        daemon.lease.release()
        print(f"daemon.tick with nothing due at 10,000 sites x 10 events (lease check, hooks check, "
              f"timetable): {tick_us:.1f} us (target < 50 ms)")
        print(f"rescan of {len(names):,} unchanged sites (list sites/, stat each config, MGET versions): "
              f"{rescan_ms:.0f} ms (runs every scheduler_rescan_seconds, default 10 s; not per tick)")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--rss-probe" in args:
        rss_probe(int(args[args.index("--rss-probe") + 1]))
        return 0
    print("== scheduler benchmark ==")
    tick_costs()
    memory()
    burst()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
