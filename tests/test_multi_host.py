"""One bench on several hosts, simulated on one machine (README: "One bench on several hosts").

Given three copies of one bench directory (same ``bench_id``, sites and apps; each site's ``db_url``
names one shared SQLite file, standing in for a database server), run as three hosts on the
session's redis-server. Each host is one process group, an ``sh`` started with
``start_new_session=True`` running ``bgcore worker --queue short,default,long --pool 2`` and
``bgcore schedule``, with its own ``BGCORE_HOSTNAME``. A steady stream of ``hostsapp.tasks.work``
jobs flows (every other one with ``retry=2``), and the scheduler runs an ``all`` event (1 s ticks)
and a ``* * * * *`` cron event (fixtures/apps/hostsapp).

When, just before a minute boundary, the host whose scheduler leads is killed (SIGKILL to its
whole process group) while it runs a job,

Then (the Delivery contract of the README):
- every acknowledged job ran to its end exactly once, except a job that was running on the dead
  host: with ``retry`` it ran again elsewhere (at least once); without, it failed with
  ``WorkerDied`` and never ran again (at most once);
- the dead host's running jobs were settled by the survivors' recovery within
  3 x ``worker_heartbeat_seconds`` (plus scheduling slack);
- the scheduler's leadership moved to a surviving host within lease + lease/3 (plus slack);
- no occurrence ran twice; the cron occurrence of the first minute boundary after the kill ran once,
  on a survivor (that boundary falls while no host leads when the kill came less than
  lease - lease/3 before it, else just after the takeover);
- ``bgcore doctor`` lists the workers by host and marks the dead host's workers gone.

Timing: setup (~5-10 s), then up to a minute's wait for a boundary far enough ahead (the stream
starts 5 s before the kill window), then ~10-15 s; 30-80 s in all (39-62 s wall in ten runs on
this 2-core machine, load average 1.5-6.6). Every wait is a condition with a generous deadline.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

import bgcore
from bgcore import keys
from bgcore.bench import Bench
from bgcore.clock import utcnow
from bgcore.doctor import HostHealth, diagnose
from bgcore.host import HOST_ENV, host_of_holder, host_of_worker
from bgcore.scheduler import presence
from bgcore.scheduler.lease import current_holder
from tests.conftest import FIXTURE_APPS
from tests.polling import wait_until
from tests.test_engine_pool import bgcore_command, exc_string, status
from tests.test_scheduler_daemon_support import session_members

pytestmark = pytest.mark.slow

T = TypeVar("T")

BENCH_ID = "multihost"
HOSTS = ("host-a", "host-b", "host-c")
SITES = ("s1.test", "s2.test")
QUEUES = ("short", "default", "long")
HORSES = 2  # per host
# worker_heartbeat_seconds: registrations lapse after 4 s, dead workers are found within 6 s; a live pool
# would have to stall over 2 s to be taken for dead (its jobs then settled while they run)
HEARTBEAT = 2.0
LEASE = 3.0  # scheduler_lease_seconds: renewed every 1 s, a standby takes over within 4 s
TICK = 1.0
JOB_SECONDS = 0.4
RATE = 6.0  # jobs/s: 2.4 of 6 horses busy on average, 2.4 of 4 after the kill
WARMUP = 5.0  # seconds of stream before the kill window
# Kill between 4 s and 0.3 s before a minute boundary (so the boundary often falls in the leaderless
# gap, at least 2 s long), as soon as the host runs a job with retry and one without, else (from 1 s
# before the boundary) as soon as it runs any job.
WINDOW = (4.0, 0.3)
PREFER_UNTIL = 1.0
SLACK = 2.0  # what a busy 2-core machine may add to a bound (process scheduling, polling)
EVIDENCE_ENV = "HOSTSAPP_EVIDENCE"




# -- the simulated hosts -----------------------------------------------------------------------


@dataclass
class Host:
    """One simulated host: a bench copy and one process group (``sh`` + worker pool + scheduler)."""

    name: str
    bench: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        script = '"$@" worker --queue short,default,long --pool 2 & "$@" schedule & wait'
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["sh", "-c", script, "sh", *bgcore_command(), "--bench", str(self.bench)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.bench, start_new_session=True,
                env={**env, HOST_ENV: self.name, "BGCORE_BENCH": str(self.bench)})

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL to the whole process group at once (a host losing power), then wait until none of it is left."""
        if self.proc is None or not session_members(self.pgid):
            return
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        wait_until(lambda: not session_members(self.pgid), f"the processes of {self.name} to be gone", 15)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def make_hosts(root: Path, redis_url: str) -> list[Host]:
    """Three identical bench copies (one bench_id; the sites' databases shared), one per host name."""
    common = {"bench_id": BENCH_ID, "redis_queue": redis_url, "apps_path": [str(FIXTURE_APPS)],
              "worker_heartbeat_seconds": HEARTBEAT, "scheduler_lease_seconds": LEASE,
              "scheduler_tick_interval": TICK, "scheduler_rescan_seconds": 2}
    databases = root / "databases"
    databases.mkdir(parents=True)
    hosts = []
    for name in HOSTS:
        bench = root / name / "bench"
        (bench / "sites").mkdir(parents=True)
        (bench / "sites" / "common_site_config.json").write_text(json.dumps(common, indent=2))
        for site in SITES:
            (bench / "sites" / site).mkdir()
            config = {"installed_apps": ["hostsapp"], "db_url": f"sqlite:///{databases / (site + '.sqlite3')}"}
            (bench / "sites" / site / "site_config.json").write_text(json.dumps(config, indent=2))
        hosts.append(Host(name, bench, root / f"{name}.log"))
    return hosts


# -- evidence ---------------------------------------------------------------------------------


class Evidence:
    """The lines hostsapp's jobs appended to one file, read incrementally (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[dict[str, Any]] = []
        self._offset = 0
        self._rest = b""

    def refresh(self) -> list[dict[str, Any]]:
        if self.path.exists():
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
            self._offset += len(data)
            *complete, self._rest = (self._rest + data).split(b"\n")
            self.lines += [json.loads(line) for line in complete if line.strip()]
        return self.lines

    def by_job(self, *tags: str) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for line in self.refresh():
            if not tags or line["tag"] in tags:
                found[line["job"]].append(line)
        return found

    def running_on(self, host: str) -> set[str]:
        """Jobs whose latest line is a start on ``host``."""
        return {job for job, lines in self.by_job("started", "finished").items()
                if lines[-1]["tag"] == "started" and lines[-1]["host"] == host}


class Stream(threading.Thread):
    """Enqueues ``hostsapp.tasks.work`` at ``RATE`` jobs/s over the sites and queues, every other one with retry=2."""

    def __init__(self, bench: Path) -> None:
        super().__init__(name="stream", daemon=True)
        self.bench = Bench(bench)
        self.stopping = threading.Event()
        self.jobs: dict[str, bool] = {}  # acknowledged job id -> enqueued with retry
        self.errors: list[str] = []

    def run(self) -> None:
        n, next_at = 0, time.monotonic()
        while not self.stopping.is_set():
            retried = (n // 2) % 2 == 0
            try:
                with bgcore.connect(SITES[n % len(SITES)], self.bench):
                    job = bgcore.enqueue("hostsapp.tasks.work", queue=QUEUES[n % len(QUEUES)], seconds=JOB_SECONDS,
                                         retry=2 if retried else None)
                self.jobs[str(job.id)] = retried
            except Exception as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(exc))
            n += 1
            next_at += 1.0 / RATE
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        if self.ident is not None:
            self.join(30)


# -- what Redis says --------------------------------------------------------------------------


def live_horses(client: redis.Redis) -> dict[str, int]:
    """Horses of the bench with a registration, per host."""
    names = [n.decode() for n in client.smembers(keys.bench_workers(BENCH_ID))]
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(keys.rq_worker(name), "hostname")
        hostnames = pipe.execute()
    counts: dict[str, int] = defaultdict(int)
    for hostname in hostnames:
        if hostname is not None:
            counts[hostname.decode()] += 1
    return dict(counts)


def leader_host(client: redis.Redis) -> str | None:
    holder = current_holder(client, BENCH_ID)
    return host_of_holder(holder) if holder else None


def daemon_hosts(client: redis.Redis) -> set[str]:
    """Hosts with a live scheduler daemon (leader or standby)."""
    found = presence.alive(client, BENCH_ID, now=utcnow(), lease_seconds=LEASE)
    return {host_of_holder(d.holder) for d in found}


def next_minute(after: float) -> float:
    return float((math.floor(after / 60) + 1) * 60)


def hosts_of(bench: Path) -> dict[str, HostHealth]:
    report = diagnose(Bench(bench))
    return {h.host: h for h in report.hosts}


# -- the test ------------------------------------------------------------------------------------


@dataclass
class Kill:
    host: str
    at: float  # epoch seconds
    boundary: float  # the minute boundary it precedes
    running: set[str] = field(default_factory=set)  # jobs it was running (their last line a start on it)


def test_one_bench_on_three_hosts_survives_the_loss_of_the_leading_host(
        tmp_path: Path, redis_client: redis.Redis, redis_server: str) -> None:
    t_test = time.monotonic()
    hosts = make_hosts(tmp_path, redis_server)
    by_name = {h.name: h for h in hosts}
    evidence = Evidence(tmp_path / "evidence.jsonl")
    env = {**os.environ, EVIDENCE_ENV: str(evidence.path)}
    t_migrating = time.time()
    migrated = subprocess.run([*bgcore_command(), "--bench", str(hosts[0].bench), "migrate"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    t_migrated = time.time()
    stream = Stream(hosts[0].bench)
    try:
        for host in hosts:
            host.start(env)
        # Given three hosts, each with its horses registered under its own name and a scheduler daemon
        wait_until(lambda: live_horses(redis_client) == {h: HORSES for h in HOSTS}
                   and daemon_hosts(redis_client) == set(HOSTS) and leader_host(redis_client),
                   lambda: f"every host's horses and daemon (horses {live_horses(redis_client)}, daemons "
                           f"{daemon_hosts(redis_client)}, leader {leader_host(redis_client)})", 90)
        wait_until(lambda: {line["site"] for line in evidence.refresh() if line["tag"] == "all"} == set(SITES),
                   "the first 'all' runs of both sites", 30)
        # (and doctor sees them so: a condition, as a leadership change could be under way)
        wait_until(lambda: _doctor_view(hosts_of(hosts[0].bench)) == (
            {h: ("up", HORSES, 0) for h in HOSTS}, ["leader", "standby", "standby"]),
            lambda: f"doctor to show three hosts up: {_doctor_view(hosts_of(hosts[0].bench))}", 30)
        t_ready = time.monotonic() - t_test

        # When, under the stream, the leading host dies just before a minute boundary while it runs a job
        kill = _kill_the_leader_before_a_boundary(hosts, stream, evidence, redis_client)
        dead, survivors = by_name[kill.host], [h for h in hosts if h.name != kill.host]
        survivor_names = {h.name for h in survivors}

        # Then a surviving host's scheduler takes the lease within lease + lease/3
        # And the survivors' recovery settles the jobs that were running on the dead host
        # (both watched in one loop, so each time is measured from the kill)
        seen_at = first_times({
            "takeover": lambda: leader_host(redis_client) in survivor_names,
            "recovery": lambda: _settled(kill, stream, evidence, redis_client, survivor_names),
        }, lambda: f"a surviving host to lead ({leader_host(redis_client)}) and the dead host's jobs "
                   f"{sorted(kill.running)} to be settled", 30)
        takeover, recovery = seen_at["takeover"] - kill.at, seen_at["recovery"] - kill.at
        # And the cron occurrence of the boundary after the kill runs, once the new leader ticks
        cron_job = wait_until(lambda: next((job for job, lines in evidence.by_job("cron").items()
                                            if job.endswith(f"-{int(kill.boundary)}")), None),
                              f"the cron occurrence of {kill.boundary:.0f}", 30)
        # (and the stream goes on until jobs enqueued after the recovery ran)
        later = len(stream.jobs)
        wait_until(lambda: len(stream.jobs) >= later + 10 and all(
            job in evidence.by_job("finished") for job in list(stream.jobs)[later:later + 5]),
            "jobs enqueued after the recovery to run", 30, 0.1)
        stream.stop()
        t_stopped = time.time()
        assert not stream.errors, stream.errors[:3]
        # And doctor (in-process) marks the dead host's workers gone, the others up
        final = wait_until(lambda: (found := hosts_of(hosts[0].bench)).get(dead.name)
                           and found[dead.name].state == "gone"
                           and all(w.why.startswith("died") for w in found[dead.name].workers)
                           and _doctor_view(found)[1] == ["leader", "standby"] and found,
                           lambda: f"doctor to mark {dead.name} gone: {hosts_of(hosts[0].bench).get(dead.name)}", 30)
        # And so does the real `bgcore doctor`, as text and as JSON, on a surviving host
        survivor = survivors[0]
        text, report = _doctor(survivor, env, "doctor"), json.loads(_doctor(survivor, env, "doctor", "--format", "json"))
        _drain(stream, evidence, redis_client)
    finally:
        stream.stop()
        for host in hosts:
            host.kill()
        for host in hosts:
            print(f"--- {host.name} ---\n{host.output()}")

    # And every job ran to its end once, but what the Delivery contract allows for the dead host's jobs
    runs = evidence.by_job("started", "finished")
    cut_off = {job: _outcome(job, retried, runs.get(job, []), redis_client, dead.name, survivor_names)
               for job, retried in stream.jobs.items()}
    cut_off = {job: outcome for job, outcome in cut_off.items() if outcome != "once"}
    assert kill.running <= set(cut_off), (kill.running, cut_off)
    # And no occurrence ran twice; each minute boundary seen ran its cron event once
    occurrences = evidence.by_job("all", "cron")
    assert [job for job, lines in occurrences.items() if len(lines) != 1] == []
    cron_minutes = sorted(int(job.rsplit("-", 1)[1]) for job in evidence.by_job("cron"))
    expected = {int(m) for m in range(int(next_minute(t_migrated)), int(t_stopped) - 3, 60)} | {int(kill.boundary)}
    assert expected <= set(cron_minutes) and min(cron_minutes) >= next_minute(t_migrating), (cron_minutes, expected)
    assert [line["host"] for line in occurrences[cron_job]] != [dead.name]
    # And each site's 'all' event kept running after the takeover
    after = {line["site"] for line in evidence.refresh() if line["tag"] == "all" and line["t"] > kill.at + takeover}
    assert after == set(SITES)
    gap = max(b - a for site in SITES for a, b in itertools.pairwise(
        sorted(line["t"] for line in evidence.lines if line["tag"] == "all" and line["site"] == site)))
    # And the doctor's hosts: the dead host's two workers gone (settled and forgotten), the others up
    assert (final[dead.name].live, final[dead.name].gone) == (0, HORSES)
    assert all("recovery" in w.why for w in final[dead.name].workers), final[dead.name].workers
    assert {h: (final[h].state, final[h].live) for h in survivor_names} == {h: ("up", HORSES) for h in survivor_names}
    assert sorted(role for h in survivor_names for role in final[h].scheduler) == ["leader", "standby"]
    shown = {h["host"]: h for h in report["hosts"]}
    assert (shown[dead.name]["state"], shown[dead.name]["live"], shown[dead.name]["gone"]) == ("gone", 0, HORSES)
    assert {w["state"] for w in shown[dead.name]["workers"]} == {"gone"}
    assert all(shown[h]["state"] == "up" and shown[h]["live"] == HORSES for h in survivor_names), shown
    gone_lines = [line for line in text.splitlines() if line.startswith("gone: worker ")]
    assert len(gone_lines) == HORSES and all(f" on {dead.name}: died; recovery settled" in line
                                             for line in gone_lines), text
    assert any(line.startswith("│ " + dead.name) and " gone " in line for line in text.splitlines()), text
    print(f"ready after {t_ready:.1f}s; killed {dead.name} {kill.boundary - kill.at:.2f}s before "
          f"{kill.boundary:.0f} ({'in' if takeover > kill.boundary - kill.at else 'after'} the leaderless gap) with "
          f"{len(kill.running)} job(s) running; cut off: {cut_off}; takeover {takeover:.2f}s; "
          f"recovery {recovery:.2f}s; longest gap between 'all' runs {gap:.2f}s; {len(stream.jobs)} jobs; total {time.monotonic() - t_test:.1f}s")
    assert takeover <= LEASE + LEASE / 3 + SLACK, takeover
    assert recovery <= 3 * HEARTBEAT + SLACK, recovery


def _kill_the_leader_before_a_boundary(hosts: list[Host], stream: Stream, evidence: Evidence,
                                       client: redis.Redis) -> Kill:
    """Start the stream, then SIGKILL the leading host's group within WINDOW before a minute boundary,
    at a moment it runs jobs of the stream (one with retry and one without, if that happens in time);
    try the next minute if it ran none in the window."""
    by_name = {h.name: h for h in hosts}
    boundary = next_minute(time.time() + WARMUP + WINDOW[0])
    wait_until(lambda: time.time() >= boundary - WINDOW[0] - WARMUP, "the stream's start", 70, 0.2)
    stream.start()
    for _ in range(3):
        wait_until(lambda: time.time() >= boundary - WINDOW[0], "the kill window", 70, 0.1)
        while time.time() < boundary - WINDOW[1]:
            leader = leader_host(client)
            running = evidence.running_on(leader) if leader else set()
            kinds = {stream.jobs.get(job) for job in running}
            if kinds == {True, False} or (running and time.time() >= boundary - PREFER_UNTIL):
                at = time.time()
                by_name[leader].kill()
                # A killed host writes no more lines: what it was running is now known for good.
                return Kill(leader, at, boundary, evidence.running_on(leader))
            time.sleep(0.01)
        boundary += 60
    raise AssertionError("the leading host ran no job in three kill windows")


def first_times(conditions: dict[str, Callable[[], Any]], what: str | Callable[[], str],
                timeout: float) -> dict[str, float]:
    """Poll every condition until each has held once; the epoch time each was first seen to hold."""
    seen: dict[str, float] = {}

    def all_seen() -> bool:
        for name, holds in conditions.items():
            if name not in seen and holds():
                seen[name] = time.time()
        return len(seen) == len(conditions)
    wait_until(all_seen, what, timeout, 0.02)
    return seen


def _settled(kill: Kill, stream: Stream, evidence: Evidence, client: redis.Redis, survivors: set[str]) -> bool:
    """When every job cut off on the dead host was settled: retried ones started on a survivor, others failed."""
    runs = evidence.by_job("started")
    for job in kill.running:
        if stream.jobs.get(job):
            if not any(line["host"] in survivors for line in runs.get(job, [])):
                return False
        elif status(client, job) != "failed":
            return False
    return True


def _outcome(job: str, retried: bool, lines: list[dict[str, Any]], client: redis.Redis, dead: str,
             survivors: set[str]) -> str:
    """How one job of the stream ended, checked against the Delivery contract.

    ``once``: one start, one finish. ``rerun`` (retry only, at least once): every line before its
    last start is the dead host's (it was cut off there, or finished its work an instant before
    the kill could record the outcome), and that last start ran to its end on a survivor.
    ``failed`` (no retry, at most once): recorded failed with ``WorkerDied`` by a dead-host horse,
    with at most one start, on the dead host (none if it was taken an instant before the kill).
    """
    starts = [line for line in lines if line["tag"] == "started"]
    finished = [line for line in lines if line["tag"] == "finished"]
    if (len(starts), len(finished)) == (1, 1) and status(client, job) == "finished":
        return "once"
    if retried:
        last = max(i for i, line in enumerate(lines) if line["tag"] == "started")
        assert {line["host"] for line in lines[:last]} <= {dead}, (job, lines)
        assert [line["tag"] for line in lines[last:]] == ["started", "finished"], (job, lines)
        assert lines[last]["host"] in survivors and status(client, job) == "finished", (job, lines)
        return "rerun"
    error = exc_string(client, job)
    assert status(client, job) == "failed" and "WorkerDied" in error, (job, lines, error)
    assert host_of_worker(error.split("worker ", 1)[1].split(" ", 1)[0]) == dead, error
    assert len(starts) <= 1 and {line["host"] for line in lines} <= {dead}, (job, lines)
    return "failed"


def _doctor_view(found: dict[str, HostHealth]) -> tuple[dict[str, tuple[str, int, int]], list[str]]:
    """Doctor's hosts as (state, live, gone) per host, and every scheduler role it shows."""
    return ({h: (v.state, v.live, v.gone) for h, v in found.items()},
            sorted(role for v in found.values() for role in v.scheduler))


def _doctor(host: Host, env: dict[str, str], *args: str) -> str:
    """Run the real ``bgcore doctor`` on ``host``'s bench copy, as that host; its output (it must be healthy)."""
    done = subprocess.run([*bgcore_command(), "--bench", str(host.bench), *args], capture_output=True, text=True,
                          env={**env, HOST_ENV: host.name, "COLUMNS": "200"}, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _drain(stream: Stream, evidence: Evidence, client: redis.Redis) -> None:
    """Wait until every acknowledged job finished (evidence) or failed for good (Redis)."""
    def pending() -> list[str]:
        finished = evidence.by_job("finished")
        return [job for job in stream.jobs if job not in finished and status(client, job) != "failed"]
    wait_until(lambda: not pending(), lambda: f"every job to end; left: {pending()[:5]}", 60, 0.2)
