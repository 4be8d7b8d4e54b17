"""The dashboard's pages and ``/metrics`` on a big bench: server time and Redis round trips.

``python -m benchmarks.dashboard [--sites 1000] [--queued 100000] [--failed 10000] [--repeat 10]``

Builds a bench of ``--sites`` site directories on a private ``redis-server``
(``benchmarks.jobs.redis_server``: a free loopback port, stopped by its PID at the
end) and fills it through bgcore's own enqueue, in pipelines (a hundred jobs per
round trip): ``--queued`` jobs waiting (nine in ten in ``default``, one in ten in
``long``) and ``--failed`` jobs that failed on ``short`` (each taken and finished
with an error through the engine's take/finish protocol). Then, for each target:

* ``/metrics`` (:func:`bgcore.metrics.render`), without and with ``metrics_site_labels``;
* the dashboard's overview (``/``), sites page (``/sites``) and jobs page filtered by
  one site (``/jobs?site=...``), through Starlette's in-process test client (when
  the dashboard is installed);

it prints the median server time of ``--repeat`` calls (after two warm-up calls)
and the Redis round trips of one call. Round trips are counted by the bench's own
Redis client: a connection class that counts each request it sends (one command,
one pipeline or one script call = one round trip). The same targets are measured
first on a bench with the same sites and a tenth of the jobs, and the growth is
printed: what grows with the number of jobs shows there.
Target: each under 200 ms here, growing with the page size, not with the jobs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

import bgcore
from bgcore.bench import Bench
from bgcore.metrics import render
from bgcore.rqbridge import broker
from benchmarks.jobs import FIXTURE_APPS, redis_server

TARGET_MS = 200.0
PUSH_BATCH = 100


class CountingConnection(redis.Connection):
    """A Redis connection that counts the requests it sends (a pipeline is one)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        super().send_packed_command(command, check_health)


def site_name(index: int) -> str:
    return f"s{index:04d}.bench.test"


def build(root: Path, url: str, *, sites: int, queued: int, failed: int) -> tuple[Bench, float]:
    """A bench of ``sites`` sites with ``queued`` waiting and ``failed`` failed jobs; seconds it took."""
    started = time.perf_counter()
    (root / "sites").mkdir(parents=True)
    (root / "sites" / "common_site_config.json").write_text(json.dumps(
        {"redis_queue": url, "apps_path": [str(FIXTURE_APPS)]}))
    for i in range(sites):
        (root / "sites" / site_name(i)).mkdir()
        (root / "sites" / site_name(i) / "site_config.json").write_text('{"installed_apps": ["testapp"]}')
    bench = Bench(root)
    client = bench.redis()
    plan = [(site_name(n % sites), "long" if n % 10 == 9 else "default") for n in range(queued)]
    plan += [(site_name(n % sites), "short") for n in range(failed)]
    plan.sort(key=lambda entry: entry[0])
    by_site: dict[str, list[str]] = {}
    for site, queue in plan:
        by_site.setdefault(site, []).append(queue)
    for site, queues in by_site.items():
        with bgcore.connect(site, bench=bench):
            for start in range(0, len(queues), PUSH_BATCH):
                with client.pipeline(transaction=False) as pipe:
                    for queue in queues[start:start + PUSH_BATCH]:
                        kwargs = {"message": "boom"} if queue == "short" else {}
                        method = "testapp.tasks.fail" if queue == "short" else "testapp.tasks.noop"
                        bgcore.enqueue(method, queue=queue, _pipeline=pipe, **kwargs)
                    pipe.execute()
    engine = broker(bench)
    for _ in range(failed):
        taken = engine.take("benchmark-horse", [("short", 300)])
        assert taken is not None, "fewer failed jobs than asked for"
        engine.finish("benchmark-horse", taken.job_id, "short", error="RuntimeError: boom (benchmarks.dashboard)")
    return bench, time.perf_counter() - started


def counting_bench(path: Path, url: str) -> Bench:
    """A fresh Bench object on ``path`` whose Redis client counts its round trips."""
    bench = Bench(path)
    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    bench._redis = redis.Redis(connection_pool=pool)  # the benchmark's counting client, not the default one
    return bench


def measure(call: Callable[[], Any], repeat: int) -> tuple[float, int]:
    """(median milliseconds of ``repeat`` calls after two warm-ups, round trips of the last call)."""
    for _ in range(2):
        call()
    times = []
    trips = 0
    for _ in range(repeat):
        before = CountingConnection.sent
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
        trips = CountingConnection.sent - before
    return statistics.median(times), trips


def pages(bench: Bench, one_site: str) -> list[tuple[str, Callable[[], Any]]]:
    """The dashboard's pages to measure (none, with a note, when the dashboard is not installed)."""
    try:
        with warnings.catch_warnings():  # Starlette's note that its test client would rather have httpx2
            warnings.simplefilter("ignore")
            from starlette.testclient import TestClient

        from bgcore.dashboard.app import create_app
    except ImportError as exc:
        print(f"  (dashboard pages not measured: {exc})")
        return []
    client = TestClient(create_app(bench))

    def page(path: str) -> Callable[[], Any]:
        def call() -> Any:
            answer = client.get(path)
            assert answer.status_code == 200, f"{path}: HTTP {answer.status_code}"
        return call

    return [("dashboard overview /", page("/")), ("dashboard sites /sites", page("/sites")),
            (f"dashboard jobs /jobs?site={one_site}", page(f"/jobs?site={one_site}"))]


def run_size(workdir: Path, url: str, *, sites: int, queued: int, failed: int,
             repeat: int) -> list[tuple[str, float, int]]:
    """Build a bench of that size and measure every target on it; the rows printed."""
    redis.Redis.from_url(url).flushall()
    root = workdir / f"bench-{sites}-{queued}"
    _, seconds = build(root, url, sites=sites, queued=queued, failed=failed)
    print(f"bench of {sites:,} sites, {queued:,} queued and {failed:,} failed jobs built in {seconds:.1f}s")
    bench = counting_bench(root, url)
    config = bench.sites_path / "common_site_config.json"
    common = dict(bench.common_config)

    def metrics() -> Any:
        body, _ = render(bench)
        assert b"bgcore_jobs" in body

    rows = []

    def row(name: str, call: Callable[[], Any]) -> None:
        ms, trips = measure(call, repeat)
        rows.append((name, ms, trips))
        verdict = "ok" if ms < TARGET_MS else f"OVER {TARGET_MS:g} ms"
        print(f"  {name:<46} {ms:8.1f} ms  {trips:5d} round trips  {verdict}")

    row("/metrics", metrics)
    config.write_text(json.dumps({**common, "metrics_site_labels": True}))
    row("/metrics (metrics_site_labels: true)", metrics)
    config.write_text(json.dumps(common))
    for name, call in pages(bench, site_name(sites // 2)):
        row(name, call)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per target (median shown)")
    args = parser.parse_args(argv)
    if min(args.sites, args.queued, args.failed, args.repeat) < 1:
        parser.error("--sites, --queued, --failed and --repeat must be at least 1")
    print(f"dashboard benchmark: python {sys.version.split()[0]}; server time = median of {args.repeat} calls "
          "in this process (the pages through Starlette's test client); round trips of one call")
    with tempfile.TemporaryDirectory(prefix="bgcore-dashboard-bench-") as tmp, redis_server(Path(tmp)) as url:
        small = run_size(Path(tmp), url, sites=args.sites, queued=max(1, args.queued // 10),
                         failed=max(1, args.failed // 10), repeat=args.repeat)
        full = run_size(Path(tmp), url, sites=args.sites, queued=args.queued, failed=args.failed, repeat=args.repeat)
    print("growth from a tenth of the jobs to all of them, same sites (time x, round trips x):")
    for (name, ms_small, trips_small), (_, ms_full, trips_full) in zip(small, full):
        print(f"  {name:<46} x{ms_full / ms_small:5.2f}  x{trips_full / max(1, trips_small):5.2f}")
    over = [name for name, ms, _ in full if ms >= TARGET_MS]
    print(f"target: each under {TARGET_MS:g} ms on the full bench: " + ("met" if not over else f"MISSED ({', '.join(over)})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
