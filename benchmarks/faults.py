"""The fault suite: bgcore under kill -9, Redis restarts, leader kills, bad config and runaway jobs.

``python -m benchmarks.faults [--quick] [--only NAME,...]`` runs each scenario against real
processes (``bgcore worker``, ``bgcore start``, ``bgcore schedule``) and a real ``redis-server``
started here WITH its append-only file (``appendonly yes``, ``appendfsync always``: an enqueue
that returned is on disk before the answer; ``bgcore start``'s private Redis uses its own
settings, ``appendfsync everysec``, Redis's default). It prints one row per scenario.

Counting. Every job leaves evidence in a file (``testapp.engine_tasks.sleep_noted``: one JSON
line "started" and one "finished", with the job id, pid and time; appended lines, independent of
Redis). Only *acknowledged* enqueues count: an ``enqueue`` call that returned a job (an enqueue
that raised, e.g. while Redis was down, is counted in "enqueued" but not in "acked"). Per acked job:

- ran once: exactly one "started" and its "finished";
- ran twice (allowed): more than one start, every start but one cut off by the fault (no
  "finished"), and the job was enqueued with ``retry=2``: the at-least-once rerun of a job whose
  worker died while it ran (the kill scenarios enqueue the steady stream with ``retry=2``);
- ran twice (unexpected): any other second start;
- lost: no run finished by the end of the drain (after the fault the suite waits until every
  acked job has finished or failed for good, up to a deadline).

Seconds to recover, per scenario:

- horse / worker kill: from the SIGKILL until every job that was running in the killed
  processes has started again (its retry; these jobs run 0.2 s), and at least one job started
  after the kill; target <= 15 s (3 x ``worker_heartbeat_seconds``);
- Redis restart: from the moment Redis answers again until the first job starts after it;
  target <= 5 s; for ``bgcore start``, from the SIGKILL of its private Redis until a job starts
  again (its supervisor must restart Redis);
- private Redis kill -9: from the SIGKILL until a job starts again (same remark);
- scheduler: the longest gap between two runs of the ``all`` event (1 s ticks) across a leader
  kill; target lease + lease/3 + 2 ticks; cron ``* * * * *`` occurrences are counted exactly
  (each minute between the first and the last one must have one run);
- broken site config: from the fix of ``site_config.json`` (followed by ``bgcore jobs requeue
  --site S --all``) until every one of the broken site's failed jobs has run;
- swallowed timeout: from the job's deadline until its horse is gone and the job is recorded
  ``timeout``; target 1-2 s.

Targets (MISSED is printed next to a row that misses one): 0 acked jobs lost; 0 runs twice
except allowed reruns; recovery as above; 0 duplicate and 0 missed occurrences.

Every process is started in its own session and stopped by its PID / process group when its
scenario ends, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from rq.job import Job

import bgcore
from benchmarks.jobs import FIXTURE_APPS
from benchmarks.workers import Launched, launch
from bgcore.bench import Bench
from bgcore.processes import free_port, wait_for_redis
from bgcore.rqbridge import SERIALIZER

TASKS = "testapp.engine_tasks"
JOB_SECONDS = 0.2  # each job of the steady stream runs this long, so a kill cuts one off
STREAM_RATE = 8.0  # jobs/s enqueued by the steady stream (a pool of 2 runs up to 10/s)
DRAIN_SECONDS = 40.0
WORKER_RECOVERY_TARGET = 15.0
REDIS_RECOVERY_TARGET = 5.0
PRIVATE_REDIS_WAIT = 30.0
BACKLOG = 40  # queued jobs when the private Redis is killed (scenario 4)
SCHED_LEASE = 3
SCHED_TICK = 1


# -- processes -----------------------------------------------------------------------------------
def bgcore_argv(bench: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "bgcore.cli", "--bench", str(bench), *args]


class AofRedis:
    """A redis-server with its append-only file (fsync always), restartable on the same port and dir."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not on PATH; the fault suite needs a real Redis server")
        self.proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_for_redis(self.url, self.proc, 10):
            raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.dir / 'redis.log'}")

    def stop(self) -> None:
        """SIGTERM (Redis writes its AOF and exits) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def aof_redis(workdir: Path) -> Iterator[AofRedis]:
    server = AofRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def children(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children() if p.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` first (so it records nothing), then the children it had; the pids killed."""
    family = [pid, *children(pid)]
    for each in family:
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return family


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until truthy (its value) or ``timeout`` seconds passed (``None``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def pool(stack: ExitStack, bench: Path, logdir: Path, size: int = 2, name: str = "pool") -> Launched:
    """Start ``bgcore worker --pool size`` (stopped when ``stack`` closes) and wait for its horses."""
    launched = stack.enter_context(launch(name, [bgcore_argv(bench, "worker", "--pool", str(size))],
                                          os.environ, logdir))
    pid = launched.procs[0].pid
    if not wait_for(lambda: len(children(pid)) >= size or launched.procs[0].poll() is not None, 30):
        raise RuntimeError(f"{name}: horses did not start\n{launched.describe_logs()}")
    launched.check()
    return launched


# -- benches ------------------------------------------------------------------------------------------
def make_bench(root: Path, redis_url: str | None, sites: Sequence[str] = ("a.test", "b.test"),
               **common: Any) -> Path:
    """A migrated bench with ``sites`` running ``testapp``; on ``redis_url`` (None: ``bgcore start``'s own)."""
    bench = root / "bench"
    (bench / "sites").mkdir(parents=True)
    config: dict[str, Any] = {"apps_path": [str(FIXTURE_APPS)], "bench_id": "faults"}
    if redis_url:
        config["redis_queue"] = redis_url
    config.update(common)
    (bench / "sites" / "common_site_config.json").write_text(json.dumps(config, indent=2))
    for site in sites:
        (bench / "sites" / site).mkdir()
        (bench / "sites" / site / "site_config.json").write_text(json.dumps({"installed_apps": ["testapp"]}))
    subprocess.run(bgcore_argv(bench, "migrate"), check=True, capture_output=True)
    return bench


# -- evidence and counting ------------------------------------------------------------------------
def read_evidence(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The evidence lines of ``path`` by job id (complete lines only)."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").split("\n")[:-1]:
        if line.strip():
            record = json.loads(line)
            found[str(record.get("job"))].append(record)
    return found


def starts(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["tag"] == "started"]


@dataclass
class Tally:
    enqueued: int = 0
    acked: int = 0
    once: int = 0
    twice_allowed: int = 0
    twice_unexpected: int = 0
    lost: int = 0
    unacked_ran: int = 0
    lost_ids: list[str] = field(default_factory=list)
    unexpected_ids: list[str] = field(default_factory=list)


def tally(enqueued: int, acked: Sequence[str], evidence: dict[str, list[dict[str, Any]]],
          retried: bool) -> Tally:
    """Count runs of the acked jobs from their evidence (see the module docstring)."""
    result = Tally(enqueued=enqueued, acked=len(acked))
    for job_id in acked:
        lines = evidence.get(job_id, [])
        runs = len(starts(lines))
        finished = sum(1 for line in lines if line["tag"] == "finished")
        if finished == 0:
            result.lost += 1
            result.lost_ids.append(job_id)
        elif runs == 1:
            result.once += 1
        elif retried and runs - finished >= runs - 1 and finished == 1:
            result.twice_allowed += 1
        else:
            result.twice_unexpected += 1
            result.unexpected_ids.append(job_id)
    known = set(acked)
    result.unacked_ran = sum(1 for job_id, lines in evidence.items() if job_id not in known and starts(lines))
    return result


def unfinished(evidence_path: Path, job_ids: Sequence[str]) -> list[str]:
    """The jobs of ``job_ids`` that have no "finished" evidence line yet."""
    evidence = read_evidence(evidence_path)
    return [j for j in job_ids if not any(line["tag"] == "finished" for line in evidence.get(j, []))]


def job_status(client: redis.Redis, job_id: str) -> str:
    try:
        value = client.hget(f"rq:job:{job_id}", "status")
    except redis.RedisError:
        return "?"
    return value.decode() if isinstance(value, bytes) else str(value or "missing")


def drain(client_of: Callable[[], redis.Redis | None], acked: Sequence[str], evidence_path: Path,
          timeout: float = DRAIN_SECONDS) -> None:
    """Wait until every acked job has finished (evidence) or failed for good (status), or ``timeout``."""
    def settled() -> bool:
        pending = unfinished(evidence_path, acked)
        if not pending:
            return True
        client = client_of()
        if client is None:
            return False
        return all(job_status(client, j) in ("failed", "missing", "canceled", "stopped") for j in pending)
    wait_for(settled, timeout, 0.2)


class Stream(threading.Thread):
    """Enqueues ``sleep_noted`` jobs at a steady rate, round-robin over ``sites``, until stopped."""

    def __init__(self, bench: Path, sites: Sequence[str], evidence: Path, *, rate: float = STREAM_RATE,
                 seconds: float = JOB_SECONDS, retry: int | None = None, fresh_bench: bool = False) -> None:
        super().__init__(name="stream", daemon=True)
        self.bench_path, self.sites, self.evidence = bench, list(sites), evidence
        self.rate, self.seconds, self.retry, self.fresh_bench = rate, seconds, retry, fresh_bench
        self.stopping = threading.Event()
        self.enqueued = 0
        self.acked: list[str] = []
        self.errors: Counter[str] = Counter()
        self._bench = Bench(bench)

    def run(self) -> None:
        n = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            site = self.sites[n % len(self.sites)]
            n += 1
            self.enqueued += 1
            try:
                bench = Bench(self.bench_path) if self.fresh_bench else self._bench
                with bgcore.connect(site, bench):
                    job = bgcore.enqueue(f"{TASKS}.sleep_noted", path=str(self.evidence), seconds=self.seconds,
                                         retry=self.retry)
                self.acked.append(str(job.id))
            except Exception as exc:  # noqa: BLE001 - counted: an unacknowledged enqueue
                self.errors[type(exc).__name__] += 1
            next_at += 1.0 / self.rate
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def first_start_after(evidence_path: Path, t: float, jobs: set[str] | None = None) -> float | None:
    """The time of the first job start after ``t`` (of one of ``jobs`` when given)."""
    times = [line["t"] for job, lines in read_evidence(evidence_path).items() if jobs is None or job in jobs
             for line in starts(lines) if line["t"] > t]
    return min(times) if times else None


def running_jobs_of(evidence_path: Path, pids: set[int]) -> set[str]:
    """Jobs a run of one of ``pids`` started and that run never ended.

    A run is judged by its own process's lines, not by the job's latest line: a job cut off by a kill
    may already have been rerun (and finished) by another horse when this is asked on a busy machine.
    """
    found = set()
    for job, lines in read_evidence(evidence_path).items():
        open_runs: set[int] = set()
        for line in lines:
            if line["pid"] not in pids:
                continue
            if line["tag"] == "started":
                open_runs.add(line["pid"])
            else:
                open_runs.discard(line["pid"])
        if open_runs:
            found.add(job)
    return found


# -- rows ----------------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    tally: Tally | None
    recover: float | None
    target: float | None
    note: str = ""
    extra_missed: list[str] = field(default_factory=list)

    def missed(self) -> list[str]:
        reasons = list(self.extra_missed)
        if self.tally is not None:
            if self.tally.lost:
                reasons.append(f"{self.tally.lost} lost")
            if self.tally.twice_unexpected:
                reasons.append(f"{self.tally.twice_unexpected} ran twice unexpectedly")
        if self.target is not None and (self.recover is None or self.recover > self.target):
            reasons.append(f"recovery > {self.target:g} s" if self.recover is not None else "never recovered")
        return reasons


HEADER = (f"{'scenario':<42} {'enq':>5} {'acked':>5} {'once':>5} {'twice ok':>8} {'twice !':>7} "
          f"{'lost':>5} {'recover s':>9}  verdict / note")


def print_row(row: Row) -> None:
    t = row.tally
    cells = ([f"{t.enqueued:>5}", f"{t.acked:>5}", f"{t.once:>5}", f"{t.twice_allowed:>8}",
              f"{t.twice_unexpected:>7}", f"{t.lost:>5}"] if t else [f"{'-':>5}"] * 3 + [f"{'-':>8}", f"{'-':>7}",
                                                                                       f"{'-':>5}"])
    recover = f"{row.recover:9.2f}" if row.recover is not None else f"{'never':>9}"
    missed = row.missed()
    verdict = ("MISSED: " + "; ".join(missed)) if missed else "ok"
    print(f"{row.name:<42} {' '.join(cells)} {recover}  {verdict}", flush=True)
    if row.note:
        print(f"{'':<42}   note: {row.note}", flush=True)
    if t and (t.lost_ids or t.unexpected_ids):
        print(f"{'':<42}   lost: {t.lost_ids[:5]} unexpected: {t.unexpected_ids[:5]}", flush=True)


# -- scenarios -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    quick: bool

    @property
    def load_seconds(self) -> float:
        return 2.0 if self.quick else 4.0

    @property
    def sched_period(self) -> float:
        return 10.0 if self.quick else 30.0

    @property
    def sched_duration(self) -> float:
        return 60.0 if self.quick else 300.0


def _recovery_after_kill(evidence: Path, t_fault: float, interrupted: set[str]) -> float | None:
    def done() -> float | None:
        any_start = first_start_after(evidence, t_fault)
        if any_start is None:
            return None
        ends = [any_start]
        for job in interrupted:
            again = first_start_after(evidence, t_fault, {job})
            if again is None:
                return None
            ends.append(again)
        return max(ends)
    at = wait_for(done, 40, 0.1)
    return None if at is None else at - t_fault


def scenario_horse_kill(root: Path, settings: Settings) -> Row:
    with ExitStack() as stack:
        server = stack.enter_context(aof_redis(root))
        bench = make_bench(root, server.url)
        evidence = root / "evidence.jsonl"
        workers = pool(stack, bench, root)
        stream = Stream(bench, ["a.test", "b.test"], evidence, retry=2)
        stream.start()
        time.sleep(settings.load_seconds)
        horse = wait_for(lambda: next((p for p in children(workers.procs[0].pid)
                                       if running_jobs_of(evidence, {p})), None), 10, 0.005)
        if horse is None:
            horse = children(workers.procs[0].pid)[0]
        os.kill(horse, signal.SIGKILL)
        t_fault = time.time()
        wait_for(lambda: not alive(horse), 5, 0.005)
        interrupted = running_jobs_of(evidence, {horse})  # a dead horse writes no more lines
        recover = _recovery_after_kill(evidence, t_fault, interrupted)
        time.sleep(settings.load_seconds)
        stream.stop()
        drain(lambda: redis.Redis.from_url(server.url), stream.acked, evidence)
        workers.check()
        result = tally(stream.enqueued, stream.acked, read_evidence(evidence), retried=True)
    return Row("1 kill -9 of a horse (pool of 2)", result, recover, WORKER_RECOVERY_TARGET,
               f"stream enqueued with retry=2 (at least once); {len(interrupted)} job(s) running in the killed horse")


def scenario_worker_kill(root: Path, settings: Settings, survivor: bool) -> Row:
    with ExitStack() as stack:
        server = stack.enter_context(aof_redis(root))
        bench = make_bench(root, server.url)
        evidence = root / "evidence.jsonl"
        doomed = pool(stack, bench, root, name="doomed")
        if survivor:
            pool(stack, bench, root, name="survivor")
        stream = Stream(bench, ["a.test", "b.test"], evidence, retry=2)
        stream.start()
        time.sleep(settings.load_seconds)
        pid = doomed.procs[0].pid
        wait_for(lambda: running_jobs_of(evidence, set(children(pid))), 10, 0.005)
        horses = set(children(pid))
        kill_tree(pid)
        t_fault = time.time()
        doomed.procs[0].wait(10)
        interrupted = running_jobs_of(evidence, horses)
        if not survivor:
            pool(stack, bench, root, name="replacement")
        recover = _recovery_after_kill(evidence, t_fault, interrupted)
        time.sleep(settings.load_seconds)
        stream.stop()
        drain(lambda: redis.Redis.from_url(server.url), stream.acked, evidence)
        result = tally(stream.enqueued, stream.acked, read_evidence(evidence), retried=True)
    name = "2a kill -9 of a whole worker, survivor" if survivor else "2b kill -9 of a whole worker, new pool"
    return Row(name, result, recover, WORKER_RECOVERY_TARGET,
               f"stream with retry=2; {len(interrupted)} job(s) running in the killed pool; default heartbeat 5 s")


def scenario_redis_restart_standalone(root: Path, settings: Settings, down: float = 5.0) -> Row:
    with ExitStack() as stack:
        server = stack.enter_context(aof_redis(root))
        bench = make_bench(root, server.url)
        evidence = root / "evidence.jsonl"
        pools = [pool(stack, bench, root, name=f"pool{i}") for i in (1, 2)]
        stream = Stream(bench, ["a.test", "b.test"], evidence)
        stream.start()
        time.sleep(settings.load_seconds)
        server.stop()
        time.sleep(down)  # the fault itself: Redis is down this long
        server.start()
        t_back = time.time()
        at = wait_for(lambda: first_start_after(evidence, t_back), 30, 0.05)
        recover = None if at is None else at - t_back
        time.sleep(settings.load_seconds)
        stream.stop()
        drain(lambda: redis.Redis.from_url(server.url), stream.acked, evidence)
        exited = [p.procs[0].pid for p in pools if p.procs[0].poll() is not None]
        result = tally(stream.enqueued, stream.acked, read_evidence(evidence), retried=False)
    note = (f"Redis down {down:g} s (SIGTERM, same port and dir); no retry; enqueue errors while down: "
            f"{dict(stream.errors)}; unacked enqueues that ran: {result.unacked_ran}")
    row = Row("3a Redis restart, 2 x bgcore worker --pool 2", result, recover, REDIS_RECOVERY_TARGET, note)
    if exited:
        row.extra_missed.append(f"worker(s) {exited} exited")
    return row


def _private_redis(bench: Path) -> tuple[int, str] | None:
    state = Bench(bench).state_path / "redis.json"
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    pid, url = int(data.get("pid", 0)), str(data.get("url"))
    if not pid or not alive(pid):
        return None
    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError:
        return None
    return pid, url


def _start_bench(stack: ExitStack, root: Path) -> tuple[Path, Launched, int, str]:
    bench = make_bench(root, None, workers={"default": {"background_workers": 2}})
    started = stack.enter_context(launch("start", [bgcore_argv(bench, "start", "--no-scheduler", "--no-dashboard")], os.environ, root))
    found = wait_for(lambda: _private_redis(bench), 30, 0.1)
    if found is None:
        raise RuntimeError(f"bgcore start: no private Redis\n{started.describe_logs()}")
    return bench, started, found[0], found[1]


def _client_of_private(bench: Path) -> Callable[[], redis.Redis | None]:
    def client() -> redis.Redis | None:
        found = _private_redis(bench)
        return redis.Redis.from_url(found[1]) if found else None
    return client


def scenario_private_redis(root: Path, settings: Settings, under_load: bool) -> Row:
    with ExitStack() as stack:
        bench, started, redis_pid, url = _start_bench(stack, root)
        evidence = root / "evidence.jsonl"
        wait_for(lambda: any(children(p) for p in children(started.procs[0].pid) if p != redis_pid), 30, 0.1)
        stream = Stream(bench, ["a.test", "b.test"], evidence, fresh_bench=True)
        if under_load:
            stream.start()
            time.sleep(settings.load_seconds)
        else:  # a backlog of queued jobs and a few running, then the kill
            stream.rate = 1000.0
            stream.start()
            wait_for(lambda: len(stream.acked) >= BACKLOG, 30, 0.01)
            stream.stop()
            wait_for(lambda: first_start_after(evidence, 0), 10, 0.02)
        os.kill(redis_pid, signal.SIGKILL)
        t_fault = time.time()
        back = wait_for(lambda: (found := _private_redis(bench)) and found[0] != redis_pid and found,
                        PRIVATE_REDIS_WAIT, 0.05)
        t_back = time.time()
        recover = None
        if back:
            at = wait_for(lambda: first_start_after(evidence, t_fault), 30, 0.05)
            recover = None if at is None else at - t_fault
        if under_load:
            time.sleep(settings.load_seconds)
            stream.stop()
        drain(_client_of_private(bench), stream.acked, evidence, timeout=DRAIN_SECONDS if back else 5)
        result = tally(stream.enqueued, stream.acked, read_evidence(evidence), retried=False)
        start_alive = started.procs[0].poll() is None
        restarts = started.logs[0].read_text(errors="replace").count("restarting")
    what = (f"private Redis back after {t_back - t_fault:.2f} s, {'same' if back[1] == url else 'OTHER'} port"
            if back else f"private Redis NOT restarted within {PRIVATE_REDIS_WAIT:g} s")
    note = (f"SIGKILL of bgcore start's private Redis (appendfsync everysec); {what}; "
            f"start alive: {start_alive}; child restarts logged: {restarts}; enqueue errors: {dict(stream.errors)}")
    name = ("3b Redis restart under bgcore start (kill -9)" if under_load
            else "4  kill -9 of bgcore start's private Redis")
    return Row(name, result, recover, REDIS_RECOVERY_TARGET, note)


SCHED_TASKS = '''
import json, os, time
import bgcore

def _record(tag):
    line = {"site": bgcore.local.site, "tag": tag, "job": bgcore.local.job_id, "t": time.time(), "pid": os.getpid()}
    with open(bgcore.local.conf.get("evidence_file"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\\n")

def every():
    _record("all")

def minute():
    _record("cron")
'''


def scenario_scheduler(root: Path, settings: Settings) -> Row:
    app = "faultsched"
    with ExitStack() as stack:
        server = stack.enter_context(aof_redis(root))
        bench = root / "bench"
        (bench / "sites" / "s.test").mkdir(parents=True)
        package = root / "apps" / app
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "tasks.py").write_text(SCHED_TASKS)
        (package / "hooks.py").write_text(
            f'app_name = "{app}"\nscheduler_events = {{"all": ["{app}.tasks.every"], '
            f'"cron": {{"* * * * *": ["{app}.tasks.minute"]}}}}\n')
        evidence = root / "sched.jsonl"
        common = {"redis_queue": server.url, "bench_id": "faultsched", "apps_path": [str(root / "apps")],
                  "scheduler_tick_interval": SCHED_TICK, "scheduler_lease_seconds": SCHED_LEASE,
                  "scheduler_rescan_seconds": 1}
        (bench / "sites" / "common_site_config.json").write_text(json.dumps(common))
        (bench / "sites" / "s.test" / "site_config.json").write_text(
            json.dumps({"installed_apps": [app], "evidence_file": str(evidence)}))
        subprocess.run(bgcore_argv(bench, "migrate"), check=True, capture_output=True)
        pool(stack, bench, root)
        client = redis.Redis.from_url(server.url)
        daemons: list[Launched] = []

        def spawn() -> None:
            daemons.append(stack.enter_context(launch("schedule", [bgcore_argv(bench, "schedule")], os.environ, root)))

        for _ in range(3):
            spawn()

        def leader_pid() -> int | None:
            holder = client.get("bgcore:faultsched:scheduler:lease")
            if not holder:
                return None
            text = holder.decode() if isinstance(holder, bytes) else str(holder)
            pid = int(text.split(":")[1])
            return pid if any(d.procs[0].pid == pid and d.procs[0].poll() is None for d in daemons) else None

        if wait_for(leader_pid, 30, 0.1) is None:
            raise RuntimeError("no scheduler leader")
        t0 = time.time()
        kills: list[float] = []
        killed: list[int] = []
        skipped = 0
        while time.time() - t0 < settings.sched_duration:
            time.sleep(min(settings.sched_period, max(0.0, t0 + settings.sched_duration - time.time())))
            if time.time() - t0 >= settings.sched_duration - 0.5:
                break
            pid = wait_for(leader_pid, 15, 0.05)
            if pid is None:
                skipped += 1
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            kills.append(time.time())
            spawn()  # three daemons again
        t_end = time.time()
        time.sleep(SCHED_TICK * 2 + 1)  # let the last tick's jobs run
        killed_pids = set(killed)
        died = [(d.procs[0].pid, d.procs[0].returncode) for d in daemons
                if d.procs[0].poll() is not None and d.procs[0].pid not in killed_pids]
        no_leader = skipped
        lines = [json.loads(line) for line in evidence.read_text().splitlines() if line.strip()]
    jobs = Counter(line["job"] for line in lines)
    duplicates = sum(n - 1 for n in jobs.values() if n > 1)
    cron = sorted({line["job"] for line in lines if line["tag"] == "cron"})
    cron_epochs = sorted(int(j.rsplit("-", 1)[1]) for j in cron)
    expected = set()
    first_minute = int(t0 // 60 + 1) * 60
    minute = first_minute
    while minute <= t_end - 5:
        expected.add(minute)
        minute += 60
    missed_cron = sorted(expected - set(cron_epochs))
    all_times = sorted(line["t"] for line in lines if line["tag"] == "all" and t0 <= line["t"] <= t_end + 2)
    gaps = [b - a for a, b in itertools.pairwise(all_times)]
    bound = SCHED_LEASE * 4 / 3 + 2 * SCHED_TICK
    last = all_times[-1] if all_times else t0
    gaps.append(t_end - last)  # a silence at the end is a gap too
    long_gaps = [g for g in gaps if g > bound + 0.5]
    row = Row(f"5  3 schedulers, leader killed every {settings.sched_period:g} s", None, max(gaps, default=None),
              bound + 0.5,
              f"{len(kills)} leader kills in {settings.sched_duration:g} s; lease {SCHED_LEASE} s, tick {SCHED_TICK} s; "
              f"cron runs {len(cron)} (expected minutes {len(expected)}), missed {missed_cron}; "
              f"all runs {len(all_times)}, gaps over {bound + 0.5:g} s: {len(long_gaps)}, last run {t_end - last:.0f} s "
              f"before the end; duplicates {duplicates}; no leader found for 15 s: {no_leader}x; "
              f"daemons that exited by themselves: {died}")
    if duplicates:
        row.extra_missed.append(f"{duplicates} duplicate occurrence(s)")
    if long_gaps:
        row.extra_missed.append(f"{len(long_gaps)} gap(s) of the all event over {bound + 0.5:g} s")
    if missed_cron:
        row.extra_missed.append(f"{len(missed_cron)} missed cron occurrence(s)")
    return row


def scenario_broken_site(root: Path, settings: Settings, corruption: bytes, label: str) -> Row:
    with ExitStack() as stack:
        server = stack.enter_context(aof_redis(root))
        bench = make_bench(root, server.url, sites=("a.test", "b.test", "broken.test"))
        evidence = root / "evidence.jsonl"
        client = redis.Redis.from_url(server.url)
        pool(stack, bench, root)
        stream = Stream(bench, ["a.test", "b.test"], evidence)
        stream.start()
        config_file = bench / "sites" / "broken.test" / "site_config.json"
        good = config_file.read_bytes()
        broken_jobs = []
        with bgcore.connect("broken.test", Bench(bench)):
            for _ in range(5):
                broken_jobs.append(str(bgcore.enqueue_in(1.5, f"{TASKS}.sleep_noted", path=str(evidence),
                                                         seconds=JOB_SECONDS).id))
        config_file.write_bytes(corruption)
        failed = wait_for(lambda: all(job_status(client, j) == "failed" for j in broken_jobs), 20, 0.1)
        errors = set()
        for job in broken_jobs:
            latest = Job.fetch(job, connection=client, serializer=SERIALIZER).latest_result()
            exc = (latest.exc_string or "").strip().splitlines() if latest is not None else []
            errors.add(exc[-1].replace(str(bench), "<bench>")[:200] if exc else "?")
        time.sleep(settings.load_seconds)
        config_file.write_bytes(good)
        t_fix = time.time()
        requeue = subprocess.run(bgcore_argv(bench, "jobs", "requeue", "--site", "broken.test", "--all"),
                                 check=False, capture_output=True, text=True)
        done = wait_for(lambda: all(any(line["tag"] == "finished" for line in read_evidence(evidence).get(j, []))
                                    for j in broken_jobs), 20, 0.05)
        recover = (time.time() - t_fix) if done else None
        stream.stop()
        drain(lambda: client, [*stream.acked, *broken_jobs], evidence)
        result = tally(stream.enqueued + len(broken_jobs), [*stream.acked, *broken_jobs], read_evidence(evidence),
                       retried=False)
    row = Row(f"6  broken site_config.json ({label})", result, recover, None,
              f"broken site's 5 jobs failed while broken: {bool(failed)}, error: {sorted(errors)}; "
              f"requeue: {(requeue.stdout or requeue.stderr).strip()[:100]!r}; other sites: {len(stream.acked)} jobs")
    if not failed:
        row.extra_missed.append("broken site's jobs did not fail")
    return row


def scenario_swallowed_timeout(root: Path, settings: Settings, timeout: int = 2) -> Row:
    from bgcore.db.joblog import failures

    with ExitStack() as stack:
        server = stack.enter_context(aof_redis(root))
        bench = make_bench(root, server.url)
        evidence = root / "evidence.jsonl"
        runaway = root / "runaway.jsonl"
        client = redis.Redis.from_url(server.url)
        pool(stack, bench, root)
        stream = Stream(bench, ["a.test", "b.test"], evidence, rate=4.0)
        stream.start()
        with bgcore.connect("a.test", Bench(bench)):
            job = str(bgcore.enqueue(f"{TASKS}.swallow_forever", path=str(runaway), timeout=timeout).id)
        started = wait_for(lambda: read_evidence(runaway).get(job), 10, 0.01)
        horse = started[0]["pid"]
        deadline = started[0]["t"] + timeout
        gone = wait_for(lambda: not alive(horse) and job_status(client, job) == "failed", deadline - time.time() + 10,
                        0.01)
        t_gone = time.time()
        time.sleep(settings.load_seconds)
        stream.stop()
        drain(lambda: client, stream.acked, evidence)
        the_bench = Bench(bench)
        rows = [r for r in failures(the_bench, the_bench.site_config("a.test")) if r.job_id == job]
        result = tally(stream.enqueued, stream.acked, read_evidence(evidence), retried=False)
        meanwhile = sum(1 for lines in read_evidence(evidence).values() for line in starts(lines)
                        if started[0]["t"] < line["t"] < t_gone)
    caught = sum(1 for line in read_evidence(runaway).get(job, []) if line["tag"] == "caught")
    recover = (t_gone - deadline) if gone else None
    status = rows[0].status if rows else "no job-log row"
    row = Row(f"7  job swallowing its timeout ({timeout} s)", result, recover, 2.0,
              f"killed {recover if recover is None else round(recover, 2)} s after its deadline; caught the timeout "
              f"{caught}x; job log: {status}; {meanwhile} other jobs started while it looped")
    if not meanwhile:
        row.extra_missed.append("no other job ran while it looped")
    if status != "timeout":
        row.extra_missed.append(f"recorded {status!r}, not 'timeout'")
    if recover is not None and recover < 0.5:
        row.extra_missed.append("killed before deadline + 1 s")
    return row


SCENARIOS: dict[str, Callable[[Path, Settings], list[Row]]] = {
    "horse": lambda root, s: [scenario_horse_kill(root, s)],
    "worker": lambda root, s: [scenario_worker_kill(root / "a", s, True), scenario_worker_kill(root / "b", s, False)],
    "redis": lambda root, s: [scenario_redis_restart_standalone(root, s)],
    "start-redis": lambda root, s: [scenario_private_redis(root, s, under_load=True)],
    "private-redis": lambda root, s: [scenario_private_redis(root, s, under_load=False)],
    "scheduler": lambda root, s: [scenario_scheduler(root, s)],
    "config": lambda root, s: [scenario_broken_site(root / "json", s, b'{"installed_apps": ["testapp"', "invalid JSON"),
                               scenario_broken_site(root / "utf8", s, b'{"installed_apps": ["\xff\xfe\x80"]}',
                                                    "non-UTF-8 bytes")],
    "timeout": lambda root, s: [scenario_swallowed_timeout(root, s)],
}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter loads; scheduler leader killed every 10 s for 1 min")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--keep", metavar="DIR", help="work (benches, logs, evidence) in DIR and keep it")
    args = parser.parse_args(argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in only if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    settings = Settings(quick=args.quick)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"bgcore fault suite ({'quick' if args.quick else 'full'}); redis-server with appendonly yes, "
          f"appendfsync always (bgcore start's private Redis: appendonly yes, everysec)", flush=True)
    print(HEADER, flush=True)
    missed = 0
    with ExitStack() as workdir:
        if args.keep:
            tmp = str(Path(args.keep).resolve())
            Path(tmp).mkdir(parents=True, exist_ok=True)
        else:
            tmp = workdir.enter_context(tempfile.TemporaryDirectory(prefix="bgcore-faults-"))
        for name in only:
            root = Path(tmp) / name
            root.mkdir()
            try:
                rows = SCENARIOS[name](root, settings)
            except KeyboardInterrupt:
                print("interrupted; every process started was stopped", flush=True)
                return 130
            except Exception as exc:  # noqa: BLE001 - one broken scenario does not hide the others
                traceback.print_exc()
                rows = [Row(name, None, None, None, f"scenario failed: {type(exc).__name__}: {exc}",
                            ["scenario failed"])]
            for row in rows:
                print_row(row)
                missed += bool(row.missed())
    print(f"{missed} row(s) MISSED a target" if missed else "every row met its targets", flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
