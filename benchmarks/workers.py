"""Worker engines: the bgcore pool against RQ, Huey, Celery and Dramatiq.

``python -m benchmarks.workers [--jobs N] [--procs P] [--only a,b] [--quick]``

Everything runs on one private ``redis-server`` (``benchmarks.jobs.redis_server``:
a free loopback port, no persistence), flushed before every measurement. Every
worker is a real subprocess started in its own session (process group); it is
stopped by signalling that group (SIGTERM, then SIGKILL after a grace period)
and any descendant left over is killed by PID, also on Ctrl-C or SIGTERM.

throughput
    The same N no-op jobs for every system, all enqueued first (in this
    process), then P worker processes are started; the time runs from the start
    of the workers until the N-th job is done, so it includes each system's
    start-up (also printed on its own, with the rate from the first completed
    job on). Completions are counted in RQ's finished (and failed) registry for
    bgcore and RQ, and by an ``INCR`` inside the task for the peers, which keep
    no registry; this process polls the count every few milliseconds.

    ============ ==========================================================
    bgcore       ``bgcore worker --queue default --pool P --quiet``,
                 job ``testapp.tasks.noop`` spread over two sites
    rq-fork      P ``rq worker`` (forking ``rq.Worker``), pickle serializer
    rq-simple    P ``rq worker -w rq.worker.SimpleWorker``
    rq-pool      ``rq worker-pool -n P`` (its default worker class, ``rq.Worker``)
    huey         ``huey_consumer -k process -w P``, ``RedisHuey(results=False)``
    celery       ``celery worker --pool prefork -c P``, Redis broker, no result
                 backend, ``ignore_result``; gossip, mingle and heartbeat off
    dramatiq     ``dramatiq -p P -t 1``, ``RedisBroker``, default middleware
    ============ ==========================================================

Redis commands per job
    ``INFO commandstats`` right before the workers start and right after the
    last job is done (the enqueue is excluded); the calls of every command
    summed, minus this benchmark's own polling and ``INFO``, and minus the
    peers' one ``INCR`` per job, divided by N. Redis counts the commands run
    inside Lua scripts and inside ``MULTI``/``EXEC`` too, so this is work done
    by Redis, not round trips.

round trips per job (bgcore and rq-fork)
    A second, smaller drain whose workers reach Redis through a TCP relay in
    this process. The relay counts a round trip each time a client connection
    sends after it last received (a pipeline or a script call is one; a
    blocking ``BLPOP`` is one), and the connections opened. (A request split
    over several TCP segments while Redis already answers its first part
    would count twice; with these small requests that does not happen.)

idle latency (bgcore and RQ ``SimpleWorker``)
    P workers are running and idle; one job at a time is enqueued; the job
    writes ``time.time()`` first thing (``RPUSH``); latency = that time minus
    the time just before the enqueue call (the enqueue call's own duration is
    printed too). Each job is waited for (its stamp and its entry in the
    finished registry), then the workers idle a few ms. The first jobs
    (warm-up: imports, connections) are not counted.

memory
    The bgcore pool (its parent and every descendant) against P plain
    single-process workers (RQ ``SimpleWorker``, JSON serializer) that run the
    same bgcore jobs (``bgcore.worker.execute_job`` with
    ``benchapp.tasks.stamp``), each after running jobs;
    ``psutil.Process.memory_full_info()`` USS, PSS and RSS summed over the
    processes.

fairness
    With the workers stopped, one noisy site enqueues 5,000 jobs, then 10 quiet
    sites enqueue 3 each; then P workers start. Every job records its start
    (site and ``time.time()``). Reported for the 30 quiet jobs: their position
    in start order (median, worst) and their wait, measured from the start of
    the drain's first job (so the workers' start-up is not counted). For RQ:
    a plain ``rq.Queue`` (one FIFO list) and P ``SimpleWorker``s, with a job
    that records the site it is given.

With ``--only``, the extra sections follow the systems chosen: bgcore's side
of each needs ``bgcore`` (memory only runs with it); RQ's commands and round
trips come from ``rq-fork``, RQ's latency and FIFO fairness from ``rq-simple``.
A system that fails (a worker dies, a drain stalls, a peer is not installed)
is reported as FAILED with the tail of its log, and the run goes on.

bgcore jobs that record their start cannot live in this package (bgcore runs
only methods of installed apps), so the benchmark writes a tiny app,
``benchapp`` (``noop()``, ``stamp(key)``), into a temporary apps directory and
installs it on every site of the temporary bench.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import redis

from benchmarks.jobs import FIXTURE_APPS, METHOD, REPO, SITES, _interrupt, make_bench, redis_server
from benchmarks.peers import DONE_KEY, REDIS_ENV
from bgcore.processes import die_with_parent

SYSTEMS = ("bgcore", "rq-fork", "rq-simple", "rq-pool", "huey", "celery", "dramatiq")

BENCH_ID = "workersbench"
BGCORE_QUEUE = "default"
RQ_QUEUE = "benchq"  # the plain RQ runs
PLAIN_QUEUE = "bench-plain"  # plain SimpleWorkers running bgcore jobs (memory)
NOISY_SITE = "noisy.bench.test"
QUIET_SITES = tuple(f"quiet{i:02d}.bench.test" for i in range(1, 11))
BENCHAPP = "benchapp"
STAMP = f"{BENCHAPP}.tasks.stamp"

POLL_SECONDS = 0.005  # progress polling during a timed drain
STOP_GRACE = 10.0  # SIGTERM -> SIGKILL
HUEY_TARGET = 1.0
RQ_FORK_TARGET = 20.0
LATENCY_TARGET_MS = 2.0

BENCHAPP_HOOKS = 'app_name = "benchapp"\n'
BENCHAPP_TASKS = '''\
"""Jobs of the benchmark-only app written by ``benchmarks.workers``."""

from __future__ import annotations

import os
import time

import redis

import bgcore

_clients: dict[int, redis.Redis] = {}


def _client() -> redis.Redis:
    pid = os.getpid()
    found = _clients.get(pid)
    if found is None:
        found = _clients[pid] = redis.Redis.from_url(os.environ["BENCH_REDIS"])
    return found


def noop() -> None:
    return None


def stamp(key: str) -> None:
    """Record this job's start: ``RPUSH key "<site> <pid> <time.time()>"``."""
    started = time.time()
    _client().rpush(key, f"{bgcore.local.site} {os.getpid()} {started!r}")
'''


# -- settings -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What one run measures, from the command line."""

    jobs: int
    procs: int
    only: tuple[str, ...]
    quick: bool
    latency_samples: int
    noisy_jobs: int
    quiet_jobs: int
    memory_jobs: int
    relay_jobs: int

    def timeout(self, jobs: int) -> float:
        """Seconds a drain of ``jobs`` may take before the run is declared stuck."""
        return 60.0 + jobs / 10.0


def parse_args(argv: Sequence[str] | None) -> Settings:
    """Parse the command line into :class:`Settings`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.workers", description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--jobs", type=int, default=None,
                        help="no-op jobs per system in the throughput run (default 2000; 200 with --quick)")
    parser.add_argument("--procs", type=int, default=2, help="worker processes per system (default 2)")
    parser.add_argument("--only", default="", metavar="NAME,...",
                        help=f"run only these systems: {','.join(SYSTEMS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="a small smoke run: fewer jobs, latency samples and fairness jobs")
    args = parser.parse_args(argv)
    only = tuple(name.strip() for name in args.only.split(",") if name.strip()) or SYSTEMS
    unknown = [name for name in only if name not in SYSTEMS]
    if unknown:
        parser.error(f"--only: unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    jobs = args.jobs if args.jobs is not None else (200 if args.quick else 2000)
    if jobs < 1 or args.procs < 1:
        parser.error("--jobs and --procs must be at least 1")
    quick = bool(args.quick)
    return Settings(
        jobs=jobs,
        procs=args.procs,
        only=tuple(name for name in SYSTEMS if name in only),
        quick=quick,
        latency_samples=20 if quick else 200,
        noisy_jobs=300 if quick else 5000,
        quiet_jobs=3,
        memory_jobs=20 if quick else 100,
        relay_jobs=min(jobs, 100 if quick else 500),
    )


# -- subprocesses ---------------------------------------------------------------------------
class WorkerFailed(RuntimeError):
    """A system's workers died, or did not finish in time."""


_log_numbers = itertools.count(1)


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in text[-lines:]) or "    | (empty log)"


@dataclass
class Launched:
    """Worker processes of one system, each the leader of its own process group."""

    name: str
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    started: float  # time.perf_counter() right before the first process was started

    def check(self) -> None:
        """Raise :class:`WorkerFailed` if a worker exited; they run until this benchmark stops them."""
        for proc, log in zip(self.procs, self.logs):
            code = proc.poll()
            if code is not None:
                raise WorkerFailed(f"{self.name}: worker pid {proc.pid} exited with status {code}; {log}:\n{_tail(log)}")

    def describe_logs(self) -> str:
        return "\n".join(f"  {log}:\n{_tail(log)}" for log in self.logs)

    def tree(self) -> list[psutil.Process]:
        """Every process of this system now: the leaders and all their descendants."""
        found: list[psutil.Process] = []
        for proc in self.procs:
            try:
                leader = psutil.Process(proc.pid)
                found.append(leader)
                found.extend(leader.children(recursive=True))
            except psutil.Error:
                continue
        return found


def _alive(process: psutil.Process) -> bool:
    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _group_members(pgids: set[int]) -> list[psutil.Process]:
    """Live processes (not zombies) whose process group is one of ``pgids`` (groups we created)."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in pgids and _alive(process):
                members.append(process)
        except (OSError, psutil.Error):
            continue
    return members


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while we stop our processes, so a second Ctrl-C cannot strand them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], grace: float = STOP_GRACE) -> None:
    """Stop processes we started, each the leader of its own group, and everything they started.

    SIGTERM to each group; after ``grace`` seconds SIGKILL to whatever is left
    in those groups and to any descendant that left its group (found by PID
    before signalling). Only our groups and our descendants are touched.
    """
    pgids = {proc.pid for proc in procs}  # start_new_session: each leader's pid is its group id
    family: list[psutil.Process] = []
    for proc in procs:
        try:
            family.extend(psutil.Process(proc.pid).children(recursive=True))
        except psutil.Error:
            pass
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace
    while True:
        leaders_done = all(proc.poll() is not None for proc in procs)
        if leaders_done and not any(_alive(p) for p in family) and not _group_members(pgids):
            break
        if time.monotonic() > deadline:
            for process in {*_group_members(pgids), *(p for p in family if _alive(p))}:
                try:
                    process.kill()  # psutil checks the process is still the one we saw (no PID reuse)
                except psutil.Error:
                    pass
            break
        time.sleep(0.05)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def launch(name: str, argvs: Sequence[Sequence[str]], env: Mapping[str, str], logdir: Path) -> Iterator[Launched]:
    """Start one process per argv (cwd: the repository; output to a log file); stop them all on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    files = []
    started = time.perf_counter()
    try:
        for argv in argvs:
            log = logdir / f"{next(_log_numbers):03d}-{name}.log"
            fh = open(log, "wb")
            files.append(fh)
            logs.append(log)
            # preexec_fn is only safe while this process has no other thread (the relay starts later).
            preexec = die_with_parent if threading.active_count() == 1 else None
            procs.append(subprocess.Popen(
                list(argv), cwd=REPO, env=dict(env), stdin=subprocess.DEVNULL, stdout=fh,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec,
            ))
        yield Launched(name, procs, logs, started)
    finally:
        with _signals_deferred():
            stop_processes(procs)
            for fh in files:
                fh.close()


def _script(name: str) -> str:
    """The console script ``name`` of this virtualenv (next to ``sys.executable``)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    raise WorkerFailed(f"{name} is not installed next to {sys.executable}; run: .venv/bin/pip install -e '.[bench]'")


# -- Redis helpers ----------------------------------------------------------------------------
def commandstats(client: redis.Redis) -> dict[str, int]:
    """``INFO commandstats`` as {command: calls} (``client|setinfo`` style names for subcommands)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(values["calls"]) for name, values in stats.items()}


def command_delta(before: Mapping[str, int], after: Mapping[str, int], own: Mapping[str, int]) -> dict[str, int]:
    """Calls per command between two snapshots, without the ``own`` calls this benchmark made."""
    delta = {}
    for name, calls in after.items():
        count = calls - before.get(name, 0) - own.get(name, 0)
        if count > 0:
            delta[name] = count
    return delta


class RoundTripRelay:
    """A TCP relay in front of Redis that counts request/response round trips.

    A round trip is counted when a client connection sends data after it last
    received some (or for the first time): a pipeline, a script call or a
    blocking ``BLPOP`` is one. Bind happens at construction, forwarding only
    after :meth:`start`, so workers may be started (and connect; the kernel
    queues them) while this process still has a single thread.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = int(self._listener.getsockname()[1])
        self.round_trips = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        for sock in [self._listener, *self._sockets]:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._sockets.extend((client, server))
            replied = [True]  # True: the client's next send starts a new round trip
            threading.Thread(target=self._pump, args=(client, server, replied, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, replied, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replied: list[bool], from_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_client:
                    if replied[0]:
                        replied[0] = False  # before forwarding: the reply cannot overtake this
                        with self._lock:
                            self.round_trips += 1
                else:
                    replied[0] = True
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# -- the bench ----------------------------------------------------------------------------------
def write_benchapp(apps_dir: Path) -> None:
    """The benchmark-only app ``benchapp``: ``noop()`` and ``stamp(key)``."""
    package = apps_dir / BENCHAPP
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(BENCHAPP_HOOKS)
    (package / "tasks.py").write_text(BENCHAPP_TASKS)


def prepare_bench(root: Path, redis_url: str, apps_dir: Path) -> Path:
    """``benchmarks.jobs.make_bench`` plus benchapp, a fixed bench id, and the noisy and quiet sites."""
    bench = make_bench(root, redis_url)
    sites = bench / "sites"
    common_path = sites / "common_site_config.json"
    common = json.loads(common_path.read_text())
    common.update(bench_id=BENCH_ID, apps_path=[str(FIXTURE_APPS), str(apps_dir)])
    common_path.write_text(json.dumps(common, indent=2))
    for site in (*SITES, NOISY_SITE, *QUIET_SITES):
        (sites / site).mkdir(exist_ok=True)
        (sites / site / "site_config.json").write_text(json.dumps({"installed_apps": ["testapp", BENCHAPP]}))
    return bench


class Stamp(NamedTuple):
    """One job's start as recorded by a stamp job."""

    tag: str
    pid: int
    time: float


def parse_stamps(raw: Sequence[bytes | str]) -> list[Stamp]:
    """Parse ``"<tag> <pid> <time>"`` entries of a stamp list."""
    stamps = []
    for item in raw:
        text = item.decode() if isinstance(item, bytes) else item
        tag, pid, when = text.rsplit(" ", 2)
        stamps.append(Stamp(tag, int(pid), float(when)))
    return stamps


# -- the systems ------------------------------------------------------------------------------
@dataclass
class System:
    """One contender of the throughput run."""

    name: str
    label: str
    enqueue: Callable[[int], None]  # put n no-op jobs on its queue (workers not running)
    argvs: Callable[[str], list[list[str]]]  # worker commands, given the Redis URL they use
    progress: Callable[[], tuple[int, int]]  # (done, failed) so far
    poll_cost: Mapping[str, int]  # Redis commands one progress() call sends
    job_cost: int = 0  # Redis commands the job itself sends (the peers' INCR)


@dataclass
class Drain:
    """One timed drain: N jobs from the start of the workers until the last is done."""

    jobs: int
    wall: float
    first: float  # seconds from the start of the workers to the first completion seen
    done_at_first: int
    failed: int
    commands: dict[str, int] = field(default_factory=dict)  # calls per command, own calls removed
    job_cost: int = 0

    @property
    def rate(self) -> float:
        return self.jobs / self.wall

    @property
    def steady_rate(self) -> float:
        rest = self.jobs - self.done_at_first
        span = self.wall - self.first
        return rest / span if span > 0 and rest > 0 else float("nan")

    @property
    def commands_per_job(self) -> float:
        return (sum(self.commands.values()) - self.job_cost * self.jobs) / self.jobs


class Lab:
    """The bench, the Redis, the settings and the systems of one run."""

    def __init__(self, settings: Settings, root: Path, redis_url: str) -> None:
        import bgcore
        from bgcore import keys

        self.settings = settings
        self.root = root
        self.url = redis_url
        self.logdir = root / "logs"
        self.logdir.mkdir()
        self.apps_dir = root / "apps"
        write_benchapp(self.apps_dir)
        self.bench_path = prepare_bench(root, redis_url, self.apps_dir)
        self._relay_benches: dict[str, Path] = {redis_url: self.bench_path}
        self.bgcore = bgcore
        self.bench = bgcore.Bench(self.bench_path)
        self.bench.activate_import_path()
        self.client = redis.Redis.from_url(redis_url)
        self.waiter = redis.Redis.from_url(redis_url)  # for blocking reads
        self.client.ping()
        self.waiter.ping()
        self.bg_queue = keys.queue_name(self.bench.bench_id, BGCORE_QUEUE)
        pythonpath = os.pathsep.join([str(REPO), str(FIXTURE_APPS), str(self.apps_dir)])
        # BGCORE_BENCH: for plain RQ workers running bgcore jobs (bgcore's own workers get --bench).
        self.env = {**os.environ, REDIS_ENV: redis_url, "PYTHONPATH": pythonpath, "BGCORE_BENCH": str(self.bench_path)}
        os.environ[REDIS_ENV] = redis_url  # the peers' task modules read it when imported here

    def flush(self) -> None:
        self.client.flushall()

    # -- bgcore ---------------------------------------------------------------------------
    def bench_for(self, url: str) -> Path:
        """The bench whose workers use Redis at ``url`` (same bench id, sites and apps)."""
        found = self._relay_benches.get(url)
        if found is None:
            found = prepare_bench(self.root / f"relay-bench-{len(self._relay_benches)}", url, self.apps_dir)
            self._relay_benches[url] = found
        return found

    def bgcore_argvs(self, url: str) -> list[list[str]]:
        """``bgcore worker --pool P``: one pool of P work-horses."""
        return [[sys.executable, "-m", "bgcore.cli", "--bench", str(self.bench_for(url)), "worker",
                 "--queue", BGCORE_QUEUE, "--quiet", "--pool", str(self.settings.procs)]]

    def bgcore_label(self) -> str:
        return f"bgcore worker --pool {self.settings.procs}"

    def bgcore_enqueue(self, n: int, method: str = METHOD, **kwargs: Any) -> None:
        """``n`` jobs of ``method``, alternately in the two sites of ``benchmarks.jobs``."""
        half = n // 2
        for site, count in ((SITES[0], half), (SITES[1], n - half)):
            with self.bgcore.connect(site, self.bench):
                for _ in range(count):
                    self.bgcore.enqueue(method, **kwargs)

    def registry_progress(self, queue_name: str) -> tuple[Callable[[], tuple[int, int]], dict[str, int]]:
        """A (finished, failed) counter over RQ's registries of ``queue_name``: one ZCARD each."""
        from rq.registry import FailedJobRegistry, FinishedJobRegistry

        finished = FinishedJobRegistry(queue_name, connection=self.client).key
        failed = FailedJobRegistry(queue_name, connection=self.client).key
        client = self.client

        def progress() -> tuple[int, int]:
            pipe = client.pipeline(transaction=False)
            pipe.zcard(finished)
            pipe.zcard(failed)
            done, broken = pipe.execute()
            return int(done), int(broken)

        return progress, {"zcard": 2}

    def finished_count(self, queue_name: str) -> Callable[[], int]:
        progress, _ = self.registry_progress(queue_name)
        return lambda: sum(progress())

    # -- plain RQ ---------------------------------------------------------------------------
    def rq_queue(self, name: str = RQ_QUEUE, json_serializer: bool = False) -> Any:
        from rq import Queue
        from rq.serializers import JSONSerializer

        if json_serializer:
            return Queue(name, connection=self.client, serializer=JSONSerializer)
        return Queue(name, connection=self.client)

    def rq_enqueue(self, n: int) -> None:
        from benchmarks.peers import rq_tasks

        enqueue = self.rq_queue().enqueue
        for _ in range(n):
            enqueue(rq_tasks.noop)

    def rq_workers(self, url: str, worker_class: str | None = None, queue: str = RQ_QUEUE,
                   serializer: str | None = None) -> list[list[str]]:
        argv = [_script("rq"), "worker", "-u", url, "--logging_level", "WARNING"]
        if worker_class:
            argv += ["-w", worker_class]
        if serializer:
            argv += ["-S", serializer]
        return [[*argv, queue] for _ in range(self.settings.procs)]

    # -- peers --------------------------------------------------------------------------------
    def peer_progress(self) -> tuple[int, int]:
        return int(self.client.get(DONE_KEY) or 0), 0

    def systems(self) -> dict[str, System]:
        p = str(self.settings.procs)
        bg_progress, bg_cost = self.registry_progress(self.bg_queue)
        rq_progress, rq_cost = self.registry_progress(RQ_QUEUE)

        def huey_enqueue(n: int) -> None:
            from benchmarks.peers import huey_tasks
            for _ in range(n):
                huey_tasks.noop()

        def celery_enqueue(n: int) -> None:
            from benchmarks.peers import celery_tasks
            for _ in range(n):
                celery_tasks.noop.delay()

        def dramatiq_enqueue(n: int) -> None:
            from benchmarks.peers import dramatiq_tasks
            for _ in range(n):
                dramatiq_tasks.noop.send()

        def peer(name: str, label: str, enqueue: Callable[[int], None], script: str, *args: str) -> System:
            return System(name, label, enqueue, lambda url: [[_script(script), *args]], self.peer_progress,
                          {"get": 1}, job_cost=1)

        return {
            "bgcore": System("bgcore", self.bgcore_label(), self.bgcore_enqueue, self.bgcore_argvs,
                             bg_progress, bg_cost),
            "rq-fork": System("rq-fork", f"rq Worker x{p} (fork/job)", self.rq_enqueue,
                              lambda url: self.rq_workers(url), rq_progress, rq_cost),
            "rq-simple": System("rq-simple", f"rq SimpleWorker x{p}", self.rq_enqueue,
                                lambda url: self.rq_workers(url, "rq.worker.SimpleWorker"), rq_progress, rq_cost),
            "rq-pool": System("rq-pool", f"rq worker-pool -n {p}", self.rq_enqueue,
                              lambda url: [[_script("rq"), "worker-pool", "-n", p, "-u", url,
                                            "--logging-level", "WARNING", RQ_QUEUE]],
                              rq_progress, rq_cost),
            # The peers' workers read the Redis URL from $BENCH_REDIS (they are never relayed).
            "huey": peer("huey", f"huey -k process -w {p}", huey_enqueue,
                         "huey_consumer", "benchmarks.peers.huey_tasks.huey", "-k", "process", "-w", p, "-q"),
            "celery": peer("celery", f"celery prefork -c {p}", celery_enqueue,
                           "celery", "-A", "benchmarks.peers.celery_tasks", "worker", "--pool", "prefork",
                           "-c", p, "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                           "--without-heartbeat", "-n", f"bench-{os.getpid()}@%h"),
            "dramatiq": peer("dramatiq", f"dramatiq -p {p} -t 1", dramatiq_enqueue,
                             "dramatiq", "benchmarks.peers.dramatiq_tasks", "-p", p, "-t", "1"),
        }

    # -- jobs that record their start ------------------------------------------------------------
    def bgcore_stamp(self, key: str) -> None:
        """One ``benchapp.tasks.stamp`` job in the current site (the caller is inside ``bgcore.connect``)."""
        self.bgcore.enqueue(STAMP, key=key)

    def bgcore_stamps(self, key: str, n: int) -> None:
        self.bgcore_enqueue(n, STAMP, key=key)

    def plain_stamps(self, key: str, n: int) -> None:
        """The same bgcore jobs for plain RQ workers: ``bgcore.worker.execute_job`` on a plain JSON queue."""
        enqueue_call = self.rq_queue(PLAIN_QUEUE, json_serializer=True).enqueue_call
        for i in range(n):
            enqueue_call("bgcore.worker.execute_job",
                         kwargs={"site": SITES[i % 2], "method": STAMP, "kwargs": {"key": key}})

    def rq_stamp(self, key: str) -> None:
        from benchmarks.peers import rq_tasks

        self.rq_queue().enqueue(rq_tasks.stamp, key, "rq")

    def bgcore_fair(self, key: str) -> None:
        """The noisy site's jobs, then the quiet sites' (bgcore.enqueue in each site)."""
        with self.bgcore.connect(NOISY_SITE, self.bench):
            for _ in range(self.settings.noisy_jobs):
                self.bgcore.enqueue(STAMP, key=key)
        for site in QUIET_SITES:
            with self.bgcore.connect(site, self.bench):
                for _ in range(self.settings.quiet_jobs):
                    self.bgcore.enqueue(STAMP, key=key)

    def rq_fair(self, key: str) -> None:
        """The same on one plain RQ queue; the job is told its site."""
        from benchmarks.peers import rq_tasks

        enqueue = self.rq_queue().enqueue
        for _ in range(self.settings.noisy_jobs):
            enqueue(rq_tasks.stamp, key, NOISY_SITE)
        for site in QUIET_SITES:
            for _ in range(self.settings.quiet_jobs):
                enqueue(rq_tasks.stamp, key, site)

    # -- measurements ---------------------------------------------------------------------------
    def drain(self, system: System, n: int, relay: RoundTripRelay | None = None) -> Drain:
        """Enqueue ``n`` no-op jobs, start the workers, time them until all ``n`` are done.

        With ``relay`` the workers reach Redis through it (round trips are counted there).
        """
        self.flush()
        system.enqueue(n)
        url = relay.url if relay else self.url
        argvs = system.argvs(url)
        polls = 0
        before = commandstats(self.client)
        with launch(system.name, argvs, self.env, self.logdir) as group:
            if relay:
                relay.start()
            deadline = group.started + self.settings.timeout(n)
            first: float | None = None
            done_at_first = 0
            while True:
                done, failed = system.progress()
                polls += 1
                now = time.perf_counter()
                if first is None and done + failed > 0:
                    first, done_at_first = now - group.started, done + failed
                if done + failed >= n:
                    break
                group.check()
                if now > deadline:
                    raise WorkerFailed(f"{system.label}: only {done} of {n} jobs done ({failed} failed) after "
                                       f"{now - group.started:.0f} s; logs:\n{group.describe_logs()}")
                time.sleep(POLL_SECONDS)
            wall = now - group.started
            after = commandstats(self.client)
        own = {name: cost * polls for name, cost in system.poll_cost.items()}
        own["info"] = own.get("info", 0) + 1  # the "before" INFO shows in the "after" snapshot
        return Drain(n, wall, first or wall, done_at_first, failed, command_delta(before, after, own), system.job_cost)

    def round_trips(self, system: System, n: int) -> tuple[Drain, RoundTripRelay]:
        """A drain of ``n`` jobs through a :class:`RoundTripRelay`; the relay holds the counts."""
        relay = RoundTripRelay(("127.0.0.1", int(self.client.connection_pool.connection_kwargs["port"])))
        try:
            return self.drain(system, n, relay), relay
        finally:
            relay.close()

    def idle_latency(self, name: str, argvs: list[list[str]], enqueue_stamp: Callable[[str], None],
                     finished: Callable[[], int]) -> Latency:
        """Enqueue-to-start latencies: one job at a time, to idle running workers.

        ``enqueue_stamp(key)`` enqueues one job that ``RPUSH``es its start to
        ``key``; ``finished()`` counts finished jobs. The first ``3 * procs``
        jobs warm the workers up and are not counted.
        """
        key = "bench:latency"
        warmup = 3 * self.settings.procs
        result = Latency([], [], 0)
        self.flush()
        with launch(name, argvs, self.env, self.logdir) as group:
            for index in range(warmup + self.settings.latency_samples):
                before = time.time()
                enqueue_stamp(key)
                returned = time.time()
                got = self.waiter.blpop([key], timeout=60 if index < warmup else 10)
                if got is None:
                    group.check()
                    raise WorkerFailed(f"{name}: job {index + 1} did not start; logs:\n{group.describe_logs()}")
                started = parse_stamps([got[1]])[0].time
                # Wait until the job is finished too (not only started), so the next one finds idle workers.
                deadline = time.monotonic() + 2.0
                while finished() < index + 1:
                    if time.monotonic() > deadline:
                        result = result._replace(unfinished=result.unfinished + 1)
                        break
                    time.sleep(0.0005)
                time.sleep(0.005)
                if index >= warmup:
                    result.start_ms.append((started - before) * 1000.0)
                    result.enqueue_ms.append((returned - before) * 1000.0)
        return result

    def memory(self, name: str, argvs: list[list[str]], enqueue_stamps: Callable[[str, int], None],
               n: int) -> tuple[Memory, int]:
        """Memory of a running system after it ran ``n`` stamp jobs; also how many processes ran them."""
        key = "bench:memory"
        self.flush()
        with launch(name, argvs, self.env, self.logdir) as group:
            enqueue_stamps(key, n)
            deadline = time.monotonic() + self.settings.timeout(n)
            while self.client.llen(key) < n:
                group.check()
                if time.monotonic() > deadline:
                    raise WorkerFailed(f"{name}: only {self.client.llen(key)} of {n} jobs ran; logs:\n"
                                       f"{group.describe_logs()}")
                time.sleep(0.02)
            time.sleep(0.5)  # let the last jobs finish and the processes settle
            ran_in = len({stamp.pid for stamp in parse_stamps(self.client.lrange(key, 0, -1))})
            return measure_memory(group.tree()), ran_in

    def fairness(self, name: str, argvs: list[list[str]], enqueue_all: Callable[[str], None]) -> Fairness:
        """Quiet sites' wait behind a noisy site: everything enqueued first, then the workers start."""
        key = "bench:fair"
        total = self.settings.noisy_jobs + self.settings.quiet_jobs * len(QUIET_SITES)
        quiet_total = self.settings.quiet_jobs * len(QUIET_SITES)
        self.flush()
        enqueue_all(key)
        stamps: list[Stamp] = []
        with launch(name, argvs, self.env, self.logdir) as group:
            deadline = group.started + self.settings.timeout(total)
            while True:
                stamps.extend(parse_stamps(self.client.lrange(key, len(stamps), -1)))
                quiet_seen = sum(1 for s in stamps if s.tag in QUIET_SITES)
                if quiet_seen >= quiet_total or len(stamps) >= total:
                    break
                group.check()
                if time.perf_counter() > deadline:
                    raise WorkerFailed(f"{name}: {len(stamps)} of {total} jobs started after "
                                       f"{self.settings.timeout(total):.0f} s; logs:\n{group.describe_logs()}")
                time.sleep(0.02)
        return Fairness.of(stamps, total, quiet_total, self.settings.noisy_jobs)


class Latency(NamedTuple):
    """Idle-latency samples in ms: enqueue call to job start, and the enqueue call alone."""

    start_ms: list[float]
    enqueue_ms: list[float]
    unfinished: int  # jobs not seen in the finished registry within 2 s of their start


class Memory(NamedTuple):
    """Memory summed over a set of processes, in bytes."""

    processes: int
    uss: int
    pss: int
    rss: int


def measure_memory(processes: Sequence[psutil.Process]) -> Memory:
    """USS, PSS and RSS (``memory_full_info``) summed over ``processes``."""
    uss = pss = rss = count = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        count += 1
        uss += info.uss
        pss += getattr(info, "pss", 0)
        rss += info.rss
    return Memory(count, uss, pss, rss)


@dataclass
class Fairness:
    """Where the quiet sites' jobs started in the drain."""

    total: int
    quiet: int
    positions: list[int]  # 1-based, in start order
    waits_ms: list[float]  # from the start of the drain's first job
    noisy_mark: int | None  # start position of the noisy site's mark-th job
    mark: int  # 200, or fewer when the noisy site has fewer jobs
    started: int

    @classmethod
    def of(cls, stamps: Sequence[Stamp], total: int, quiet: int, noisy_jobs: int) -> Fairness:
        ordered = sorted(stamps, key=lambda s: s.time)
        first = ordered[0].time if ordered else 0.0
        positions = [i for i, s in enumerate(ordered, 1) if s.tag in QUIET_SITES]
        waits = [(s.time - first) * 1000.0 for s in ordered if s.tag in QUIET_SITES]
        mark_at = min(200, noisy_jobs)
        noisy = [i for i, s in enumerate(ordered, 1) if s.tag == NOISY_SITE]
        return cls(total, quiet, positions, waits, noisy[mark_at - 1] if len(noisy) >= mark_at else None,
                   mark_at, len(ordered))

    def line(self) -> str:
        if not self.positions:
            return "no quiet job started"
        mark = self.mark
        before_mark = ("yes" if self.noisy_mark is None or max(self.positions) < self.noisy_mark else
                       f"no (the noisy site's {mark}th job started at position {self.noisy_mark})")
        missing = "" if len(self.positions) == self.quiet else f" ONLY {len(self.positions)} of {self.quiet} STARTED"
        return (f"quiet jobs' position median {statistics.median(self.positions):,.0f} "
                f"(worst {max(self.positions):,}) of {self.total:,}; wait median "
                f"{statistics.median(self.waits_ms):,.0f} ms (worst {max(self.waits_ms):,.0f} ms); "
                f"all before the noisy site's {mark}th job: {before_mark}{missing}")


# -- reporting ------------------------------------------------------------------------------------
def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _rate(value: float) -> str:
    return "-" if value != value else f"{value:,.0f}"  # NaN -> "-"


def _breakdown(drain: Drain, top: int = 10) -> str:
    items = sorted(drain.commands.items(), key=lambda item: -item[1])
    shown = ", ".join(f"{name} {calls / drain.jobs:.2f}" for name, calls in items[:top])
    rest = sum(calls for _, calls in items[top:])
    return shown + (f", others {rest / drain.jobs:.2f}" if rest else "")


def _percentile(values: Sequence[float], pct: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def _failed(label: str, exc: BaseException | str) -> None:
    print(f"  {label:<34} FAILED: {exc}")


def _ratio(name: str, ours: float, theirs: float, target: float) -> None:
    ratio = ours / theirs
    mark = "" if ratio >= target else " MISSED"
    shown = f"{target:.1f}" if target < 10 else f"{target:g}"
    print(f"ratio {name} = {ratio:.2f} (target >= {shown}){mark}")


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def _versions() -> str:
    found = []
    for package in ("bgcore", "rq", "huey", "celery", "dramatiq", "redis"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


# -- the run -------------------------------------------------------------------------------------------
def report_throughput(lab: Lab, systems: Mapping[str, System]) -> dict[str, Drain]:
    """Drain the same N no-op jobs with each selected system; print a row each; return the drains."""
    s = lab.settings
    print(f"\nthroughput: {s.jobs:,} no-op jobs and {s.procs} worker processes per system, all jobs enqueued "
          "first; time from starting the workers until the last job is done (start-up included)")
    print(f"  {'system':<34} {'jobs/s':>8} {'wall s':>7} {'1st done s':>10} {'jobs/s after':>12} "
          f"{'Redis cmds/job':>14}")
    drains: dict[str, Drain] = {}
    for name in s.only:
        system = systems[name]
        try:
            d = lab.drain(system, s.jobs)
        except WorkerFailed as exc:
            _failed(system.label, exc)
            continue
        except ImportError as exc:
            _failed(system.label, f"{exc} (install the peers: .venv/bin/pip install -e '.[bench]')")
            continue
        drains[name] = d
        broken = f"  ({d.failed} FAILED jobs)" if d.failed else ""
        print(f"  {system.label:<34} {_rate(d.rate):>8} {d.wall:>7.2f} {d.first:>10.2f} {_rate(d.steady_rate):>12} "
              f"{d.commands_per_job:>14.1f}{broken}", flush=True)
    print("  (1st done s = start-up, until the first job was done; jobs/s after = from then on; Redis cmds/job: "
          "INFO commandstats of the drain without our polling, the peers' INCR per job subtracted)")
    return drains


def report_ratios(drains: Mapping[str, Drain]) -> None:
    """bgcore against Huey and against RQ's forking worker, with the targets of issue 7."""
    bg = drains.get("bgcore")
    if bg is None:
        print("ratios bgcore/huey and bgcore/rq-fork: not measured (bgcore not run or failed)")
        return
    for peer, target in (("huey", HUEY_TARGET), ("rq-fork", RQ_FORK_TARGET)):
        other = drains.get(peer)
        if other:
            _ratio(f"bgcore/{peer}, start-up included", bg.rate, other.rate, target)
            _ratio(f"bgcore/{peer}, from the first job done", bg.steady_rate, other.steady_rate, target)
        else:
            print(f"ratio bgcore/{peer}: not measured ({peer} not run or failed)")


def report_redis_costs(lab: Lab, systems: Mapping[str, System], drains: Mapping[str, Drain]) -> None:
    """Commands per job (from the throughput drains) and round trips per job (a relayed drain) for bgcore and RQ."""
    counted = [name for name in ("bgcore", "rq-fork") if name in drains]
    if not counted:
        return
    print("\nRedis commands per job (INFO commandstats around the throughput drain; includes the commands run "
          "inside Lua scripts and MULTI/EXEC):")
    for name in counted:
        d = drains[name]
        print(f"  {systems[name].label:<34} {d.commands_per_job:6.1f} commands/job: {_breakdown(d)}")
    jobs = lab.settings.relay_jobs
    print(f"round trips per job ({jobs:,} jobs drained again, the workers reaching Redis through a counting TCP "
          "relay: one request burst answered by Redis = 1 round trip):")
    for name in counted:
        label = systems[name].label
        try:
            d, relay = lab.round_trips(systems[name], jobs)
        except WorkerFailed as exc:
            _failed(label, exc)
            continue
        print(f"  {label:<34} {relay.round_trips / d.jobs:6.1f} round trips/job, "
              f"{relay.connections / d.jobs:.2f} new connections/job "
              f"({relay.round_trips:,} round trips, {relay.connections:,} connections)", flush=True)


def report_latency(lab: Lab, systems: Mapping[str, System]) -> None:
    """Idle latency (enqueue call to job start), p50 and p95, for bgcore and for RQ's SimpleWorker."""
    s = lab.settings
    runs: list[tuple[str, Callable[[], Latency], bool]] = []  # (label, measure, held to the target)
    if "bgcore" in s.only:
        def bgcore_run() -> Latency:
            with lab.bgcore.connect(SITES[0], lab.bench):  # entered once: only the enqueue call is timed
                return lab.idle_latency("bgcore-latency", lab.bgcore_argvs(lab.url), lab.bgcore_stamp,
                                        lab.finished_count(lab.bg_queue))
        runs.append((systems["bgcore"].label, bgcore_run, True))
    if "rq-simple" in s.only:
        runs.append((systems["rq-simple"].label, lambda: lab.idle_latency(
            "rq-latency", lab.rq_workers(lab.url, "rq.worker.SimpleWorker"), lab.rq_stamp,
            lab.finished_count(RQ_QUEUE)), False))
    if not runs:
        return
    print(f"\nidle latency, enqueue call -> job start ({s.latency_samples} jobs one at a time to {s.procs} idle "
          f"workers, each waited for; target p50 <= {LATENCY_TARGET_MS:g} ms for bgcore):")
    for label, measure, targeted in runs:
        try:
            found = measure()
        except WorkerFailed as exc:
            _failed(label, exc)
            continue
        values = found.start_ms
        p50 = statistics.median(values)
        mark = " MISSED" if targeted and p50 > LATENCY_TARGET_MS else ""
        late = f"; {found.unfinished} jobs not seen finished within 2 s" if found.unfinished else ""
        print(f"  {label:<34} p50 {p50:5.2f} ms  p95 {_percentile(values, 95):5.2f} ms  max {max(values):6.2f} ms"
              f"{mark}  (the enqueue call alone: p50 {statistics.median(found.enqueue_ms):.2f} ms{late})", flush=True)


def report_memory(lab: Lab, systems: Mapping[str, System]) -> None:
    """The bgcore pool's memory against P plain single-process workers running the same bgcore jobs."""
    s = lab.settings
    if "bgcore" not in s.only:
        return
    jobs = s.memory_jobs * s.procs
    print(f"\nmemory after {jobs} jobs each (psutil memory_full_info summed over the processes):")
    runs: list[tuple[str, Callable[[], tuple[Memory, int]]]] = [
        (systems["bgcore"].label,
         lambda: lab.memory("bgcore-memory", lab.bgcore_argvs(lab.url), lab.bgcore_stamps, jobs)),
        (f"{s.procs} plain workers (rq SimpleWorker -S json, running bgcore.worker.execute_job)",
         lambda: lab.memory("plain-memory", lab.rq_workers(lab.url, "rq.worker.SimpleWorker", PLAIN_QUEUE, "json"),
                            lab.plain_stamps, jobs)),
    ]
    found: list[Memory] = []
    for label, measure in runs:
        try:
            mem, ran_in = measure()
        except WorkerFailed as exc:
            _failed(label, exc)
            continue
        found.append(mem)
        print(f"  {label}: {mem.processes} processes, USS {_mib(mem.uss)}, PSS {_mib(mem.pss)}, "
              f"RSS {_mib(mem.rss)}; jobs ran in {ran_in} processes", flush=True)
    if len(found) == 2:
        pool, plain = found
        print(f"  pool / plain: USS {pool.uss / plain.uss:.2f}x, PSS {pool.pss / plain.pss:.2f}x")


def report_fairness(lab: Lab, systems: Mapping[str, System]) -> None:
    """Quiet sites behind a noisy one: bgcore against RQ's single FIFO list."""
    s = lab.settings
    runs: list[tuple[str, Callable[[], Fairness]]] = []
    if "bgcore" in s.only:
        runs.append((systems["bgcore"].label,
                     lambda: lab.fairness("bgcore-fairness", lab.bgcore_argvs(lab.url), lab.bgcore_fair)))
    if "rq-simple" in s.only:
        runs.append((f"rq FIFO (Queue, SimpleWorker x{s.procs})", lambda: lab.fairness(
            "rq-fairness", lab.rq_workers(lab.url, "rq.worker.SimpleWorker"), lab.rq_fair)))
    if not runs:
        return
    quiet = s.quiet_jobs * len(QUIET_SITES)
    print(f"\nfairness: site {NOISY_SITE} enqueues {s.noisy_jobs:,} jobs, then {len(QUIET_SITES)} quiet sites "
          f"enqueue {s.quiet_jobs} each ({quiet} quiet jobs), then {s.procs} workers start; the drain stops once "
          "every quiet job has started; wait = from the start of the drain's first job")
    for label, measure in runs:
        try:
            result = measure()
        except WorkerFailed as exc:
            _failed(label, exc)
            continue
        print(f"  {label:<34} {result.line()}", flush=True)


def run(settings: Settings, lab: Lab) -> None:
    """Every measurement of one run, printed as it goes."""
    server = lab.client.info("server")["redis_version"]
    print(f"worker benchmark: redis-server {server} ({lab.url}), python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, pid {os.getpid()}")
    print(f"versions: {_versions()}")
    print(f"load average at start: {_load()} (other work on this machine slows every system; compare within one run)")
    systems = lab.systems()
    drains = report_throughput(lab, systems)
    report_ratios(drains)
    report_redis_costs(lab, systems, drains)
    report_latency(lab, systems)
    report_memory(lab, systems)
    report_fairness(lab, systems)
    print(f"\nload average at the end: {_load()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker benchmark; everything it starts is stopped, and its temp dir removed, on any exit."""
    settings = parse_args(argv)
    previous_term = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="bgcore-workers-bench-") as tmp:
            root = Path(tmp)
            with redis_server(root) as url:
                run(settings, Lab(settings, root, url))
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
