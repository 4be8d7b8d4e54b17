"""Job throughput: bgcore against plain RQ, on the same no-op job.

Two measurements, each repeated for ``--rounds`` rounds. In a round each
contender handles the round's jobs in ``--slices`` slices, run alternately
with the other's (ABAB.., the next round BABA..), so that on a busy machine
both see the same load; a round's rate is its jobs over the sum of its slice
times. The reported rate of each is the MEDIAN of its rounds, and the ratio is
median(bgcore) / median(rq).

enqueue
    ``bgcore.enqueue("testapp.tasks.noop")`` inside a
    ``with bgcore.connect(site, bench)`` block, against plain
    ``rq.Queue.enqueue(testapp.tasks.noop)`` (RQ defaults: pickle serializer).
    Only the loop of enqueue calls is timed (``--jobs`` per round).

drain
    The slice's jobs are enqueued first (bgcore's spread over two sites), then
    only the burst worker run is timed (``--drain-jobs`` per round): ``bgcore.worker.run_worker(bench,
    "default", burst=True, quiet=True)`` (bgcore's engine: a pool of one long-lived
    work-horse, forked once) against a plain forking ``rq.Worker`` on one queue with
    ``work(burst=True, logging_level="WARNING")`` (one work horse forked per job), both
    logging at the same level. Every job must end in the finished registry, or the run is reported as broken.

Redis is a private ``redis-server`` (from PATH) on a free loopback port,
flushed before every timed run and stopped by its PID at the end (also on
Ctrl-C). The bench is a temporary directory whose apps path is the repo's
``fixtures/apps``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from bgcore.processes import free_port, wait_for_redis

REPO = Path(__file__).resolve().parent.parent
FIXTURE_APPS = REPO / "fixtures" / "apps"
SITES = ("site1.bench.test", "site2.bench.test")
METHOD = "testapp.tasks.noop"
PLAIN_QUEUE = "plainrq"

ENQUEUE_TARGET = 0.80
DRAIN_TARGET = 0.90
WARMUP_JOBS = 200


# -- a private redis-server -----------------------------------------------------
@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Run ``redis-server`` from PATH on a free loopback port; yield its URL; stop it by PID."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH; the benchmark needs a real Redis server")
    port = free_port()
    data = workdir / "redis"
    data.mkdir()
    # Own session: a Ctrl-C in the terminal reaches only us; we stop the server ourselves.
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        if not wait_for_redis(url, proc):
            raise SystemExit(f"redis-server on port {port} did not start")
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- a temporary bench -----------------------------------------------------------
def make_bench(root: Path, redis_url: str) -> Path:
    """A bench directory with two sites running ``testapp``, on ``redis_url``."""
    bench = root / "bench"
    sites = bench / "sites"
    sites.mkdir(parents=True)
    common = {"redis_queue": redis_url, "apps_path": [str(FIXTURE_APPS)]}
    (sites / "common_site_config.json").write_text(json.dumps(common, indent=2))
    for site in SITES:
        (sites / site).mkdir()
        (sites / site / "site_config.json").write_text(json.dumps({"installed_apps": ["testapp"]}, indent=2))
    return bench


# -- signals -----------------------------------------------------------------------
def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _own_signals() -> Iterator[None]:
    """Give SIGINT/SIGTERM back to us after an RQ worker installed its own handlers.

    A Ctrl-C during a burst run makes RQ stop warmly and return normally; RQ
    then has swapped in its ``request_force_stop`` handler, which is how we
    notice and turn it into a ``KeyboardInterrupt`` here.
    """
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        stopped = getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "request_force_stop"
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
    if stopped:
        raise KeyboardInterrupt


# -- one timed run each ----------------------------------------------------------------
class Timing(NamedTuple):
    """Wall-clock seconds of a run, and the CPU seconds it used (ours plus reaped children's)."""

    wall: float
    cpu: float

    def __add__(self, other: object) -> Timing:
        if not isinstance(other, Timing):
            return NotImplemented
        return Timing(self.wall + other.wall, self.cpu + other.cpu)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the work horses, once reaped
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(run: Callable[[], Any]) -> Timing:
    gc.collect()
    cpu = _cpu()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    return Timing(wall, _cpu() - cpu)


class Contenders:
    """bgcore and plain RQ on the same Redis, with the objects each run reuses."""

    def __init__(self, bench_path: Path, redis_url: str) -> None:
        import redis
        from rq import Queue

        import bgcore
        from bgcore import keys

        self.bgcore = bgcore
        self.bench = bgcore.Bench(bench_path)
        self.bench.activate_import_path()
        self.noop = importlib.import_module("testapp.tasks").noop
        self.client = self.bench.redis()
        self.bg_queue_name = keys.queue_name(self.bench.bench_id, "default")
        self.plain_redis = redis.Redis.from_url(redis_url)
        self.plain_queue = Queue(PLAIN_QUEUE, connection=self.plain_redis)

    def flush(self) -> None:
        self.client.flushdb()

    # enqueue ---------------------------------------------------------------------
    def enqueue_bgcore(self, n: int, site: str = SITES[0]) -> Timing:
        enqueue = self.bgcore.enqueue
        with self.bgcore.connect(site, self.bench):
            def run() -> None:
                for _ in range(n):
                    enqueue(METHOD)
            return _timed(run)

    def enqueue_rq(self, n: int) -> Timing:
        enqueue, noop = self.plain_queue.enqueue, self.noop

        def run() -> None:
            for _ in range(n):
                enqueue(noop)
        return _timed(run)

    # drain -------------------------------------------------------------------------
    def drain_bgcore(self, n: int) -> Timing:
        from bgcore.worker import run_worker

        self.flush()
        half = n // 2
        self.enqueue_bgcore(half, SITES[0])
        self.enqueue_bgcore(n - half, SITES[1])
        self._check_queued(self.bg_queue_name, n)
        with _own_signals():
            timing = _timed(lambda: run_worker(self.bench, "default", burst=True, quiet=True))
        self._check_drained(self.bg_queue_name, n, "bgcore")
        return timing

    def drain_rq(self, n: int) -> Timing:
        from rq import Worker

        self.flush()
        self.enqueue_rq(n)
        self._check_queued(PLAIN_QUEUE, n)

        def run() -> None:
            Worker([self.plain_queue], connection=self.plain_redis).work(burst=True, logging_level="WARNING")

        with _own_signals():
            timing = _timed(run)
        self._check_drained(PLAIN_QUEUE, n, "rq")
        return timing

    def _queue(self, name: str) -> Any:
        from rq import Queue

        return Queue(name, connection=self.client)

    def _waiting(self, name: str) -> int:
        """Jobs waiting in RQ queue ``name``: bgcore's per-site lists for the bench's queue, RQ's list otherwise."""
        from bgcore.jobs import queued_count

        if name == self.bg_queue_name:
            return queued_count(self.bench, "default")
        return int(self._queue(name).count)

    def _check_queued(self, name: str, n: int) -> None:
        count = self._waiting(name)
        if count != n:
            raise RuntimeError(f"queue {name}: {count} jobs queued, expected {n}")

    def _check_drained(self, name: str, n: int, who: str) -> None:
        from rq.registry import FailedJobRegistry, FinishedJobRegistry

        queue = self._queue(name)
        left = self._waiting(name)
        if left:
            raise RuntimeError(f"{who} worker left {left} of {n} jobs queued")
        finished = FinishedJobRegistry(queue=queue).count
        failed = FailedJobRegistry(queue=queue)
        if finished != n:
            detail = ""
            ids = failed.get_job_ids(0, 0)
            if ids:
                job = queue.fetch_job(ids[0])
                detail = f"; first failure:\n{job.latest_result().exc_string if job else ids[0]}"
            raise RuntimeError(
                f"{who} worker finished {finished} of {n} jobs ({failed.count} failed){detail}"
            )


# -- reporting -----------------------------------------------------------------------------
def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _fmt(rate: float) -> str:
    return f"{rate:,.0f}"


def _line(label: str, n: int, timings: list[Timing], cpu_what: str) -> float:
    """Print the median rate of the rounds (and each round's, and CPU per job); return the median."""
    rates = [_rate(n, t.wall) for t in timings]
    median = statistics.median(rates)
    rounds = " / ".join(_fmt(r) for r in rates)
    cpu_ms = sum(t.cpu for t in timings) / (n * len(timings)) * 1000
    print(f"  {label:<20} {_fmt(median):>7} jobs/s  (rounds: {rounds})  cpu {cpu_ms:.3f} ms/job {cpu_what}")
    return median


def _ratio(name: str, bg: float, rq: float, target: float) -> None:
    ratio = bg / rq
    mark = "" if ratio >= target else " MISSED"
    print(f"{name} ratio bgcore/rq = {ratio:.2f} (target >= {target:.2f}){mark}")


def _slices(total: int, slices: int) -> list[int]:
    """``total`` jobs split into ``slices`` near-equal parts (none empty)."""
    slices = max(1, min(slices, total))
    base, extra = divmod(total, slices)
    return [base + (1 if i < extra else 0) for i in range(slices)]


def _rounds(
    rounds: int, total: int, slices: int, first: Callable[[int], Timing], second: Callable[[int], Timing]
) -> tuple[list[Timing], list[Timing]]:
    """Time ``total`` jobs of each contender per round; return the per-round times of both.

    A round runs the two alternately, ``slices`` times each on a share of the
    jobs (ABAB..., then BABA... in the next round), and sums each one's times:
    on a busy machine both then see the same load.
    """
    a: list[Timing] = []
    b: list[Timing] = []
    for index in range(rounds):
        ta = tb = Timing(0.0, 0.0)
        for part, n in enumerate(_slices(total, slices)):
            if (index + part) % 2 == 0:
                ta += first(n)
                tb += second(n)
            else:
                tb += second(n)
                ta += first(n)
        a.append(ta)
        b.append(tb)
    return a, b


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="enqueue calls per round and contender (default 5000)")
    parser.add_argument("--drain-jobs", type=int, default=1000, help="jobs drained per round and contender (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement (default 3)")
    parser.add_argument(
        "--slices", type=int, default=5,
        help="alternating slices the jobs of a round are split into (default 5)",
    )
    args = parser.parse_args(argv)
    for name in ("jobs", "drain_jobs", "rounds", "slices"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="bgcore-bench-") as tmp:
            root = Path(tmp)
            with redis_server(root) as url:
                _run(args, make_bench(root, url), url)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    return 0


def _run(args: argparse.Namespace, bench_path: Path, url: str) -> None:
    import rq

    c = Contenders(bench_path, url)
    server = c.client.info("server")["redis_version"]
    print(
        f"job benchmark: bgcore vs plain RQ {rq.__version__} on redis-server {server} ({url}), "
        f"python {platform.python_version()}, pid {os.getpid()}"
    )
    print(
        f"no-op job: {METHOD}; each rate below is the MEDIAN of {args.rounds} rounds; "
        "cpu = CPU time per job over all rounds (less sensitive to other load on the machine)"
    )

    # Warm up both paths (imports, connections, caches) outside the timed runs.
    c.flush()
    c.enqueue_bgcore(WARMUP_JOBS)
    c.enqueue_rq(WARMUP_JOBS)

    def bg_enqueue(n: int) -> Timing:
        c.flush()
        return c.enqueue_bgcore(n)

    def rq_enqueue(n: int) -> Timing:
        c.flush()
        return c.enqueue_rq(n)

    print(f"\nenqueue: {args.jobs:,} jobs per round and contender, in {args.slices} alternating slices")
    bg_times, rq_times = _rounds(args.rounds, args.jobs, args.slices, bg_enqueue, rq_enqueue)
    bg = _line("bgcore.enqueue", args.jobs, bg_times, "(client)")
    plain = _line("rq Queue.enqueue", args.jobs, rq_times, "(client)")
    _ratio("enqueue", bg, plain, ENQUEUE_TARGET)
    sys.stdout.flush()

    print(
        f"\ndrain: {args.drain_jobs:,} pre-enqueued jobs per round and contender, in {args.slices} "
        "alternating slices; burst workers (bgcore: a pool of one horse; rq: a fork per job), log level WARNING, only the worker run timed"
    )
    bg_times, rq_times = _rounds(args.rounds, args.drain_jobs, args.slices, c.drain_bgcore, c.drain_rq)
    bg = _line("bgcore run_worker", args.drain_jobs, bg_times, "(worker + horses)")
    plain = _line("rq Worker", args.drain_jobs, rq_times, "(worker + horses)")
    _ratio("drain", bg, plain, DRAIN_TARGET)
    c.flush()
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
