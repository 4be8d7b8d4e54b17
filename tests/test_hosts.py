"""Host identity (``$BGCORE_HOSTNAME``) and ``bgcore doctor``'s workers by host, in-process.

The real-process version, three simulated hosts and one of them killed, is tests/test_multi_host.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import redis

import bgcore
from bgcore import keys
from bgcore.bench import Bench
from bgcore.engine import gone
from bgcore.engine.broker import Broker
from bgcore.engine.middleware import default_middleware
from bgcore.engine.pool import Pool, register
from bgcore.engine.recovery import dead_workers, recover_dead_workers
from bgcore.errors import InvalidHostName
from bgcore.host import HOST_ENV, host_name, host_of_holder, host_of_worker
from bgcore.migrate import migrate_site
from bgcore.scheduler.daemon import SchedulerDaemon
from bgcore.scheduler.lease import new_holder
from tests.cli_support import run
from tests.conftest import BenchDir


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- host identity -------------------------------------------------------------------------------


def test_the_host_name_is_the_machines_unless_bgcore_hostname_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOST_ENV, raising=False)
    assert host_name() == socket.gethostname()
    monkeypatch.setenv(HOST_ENV, "")
    assert host_name() == socket.gethostname()
    monkeypatch.setenv(HOST_ENV, "web1.example.com")
    assert host_name() == "web1.example.com"


@pytest.mark.parametrize("value", ["web:1", "web 1", "-web", "web/1", "web.", "x" * 254])
def test_a_host_name_that_is_not_host_like_is_refused_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(HOST_ENV, value)
    with pytest.raises(InvalidHostName) as raised:
        host_name()
    assert str(raised.value).startswith(f"$BGCORE_HOSTNAME={value!r} is not a usable host name")
    assert "no ':'" in str(raised.value) and "unset it" in str(raised.value)


def test_the_cli_says_a_bad_host_name_in_one_line_and_exits_1(
        bench_dir: BenchDir, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOST_ENV, "web:1")
    result = run(bench_dir, "doctor")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: $BGCORE_HOSTNAME='web:1' is not a usable host name: use letters, digits, '.', '-' and '_' "
        f"(starting and ending with a letter or digit, at most 253 characters, no ':'), e.g. 'web1', or unset it "
        f"to use this machine's hostname ({socket.gethostname()!r})"]


def test_workers_and_the_scheduler_record_the_host_name(bench_dir: BenchDir, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given BGCORE_HOSTNAME
    monkeypatch.setenv(HOST_ENV, "web7")
    bench = bench_dir.bench()
    # Then a pool names its horses after it, and a scheduler daemon's lease holder starts with it
    assert Pool(bench, [bench.queues["default"]], 1).hostname == "web7"
    holder = new_holder()
    assert holder.startswith("web7:") and host_of_holder(holder) == "web7"
    assert host_of_worker("web7.example.com.123.0.4") == "web7.example.com"
    assert host_of_worker("not-a-horse-name") == "not-a-horse-name"


def test_pids_are_only_trusted_on_the_host_that_recorded_them(
        bench_dir: BenchDir, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a horse registered by host web1 with a pid that no longer exists
    bench = bench_dir.bench()
    register(bench.redis(), "web1.1.0.1", [bench.queues["default"]], bench.bench_id, "web1", ttl=60, pid=_dead_pid())
    # Then, as web1, it is dead at once; as any other host it lives until its registration lapses
    monkeypatch.setenv(HOST_ENV, "web1")
    assert dead_workers(bench.redis(), bench.bench_id) == ["web1.1.0.1"]
    monkeypatch.setenv(HOST_ENV, "web2")
    assert dead_workers(bench.redis(), bench.bench_id) == []


# -- doctor: workers by host ---------------------------------------------------------------------------


def _register(bench: Bench, name: str, host: str, pid: int) -> None:
    register(bench.redis(), name, [bench.queues["default"]], bench.bench_id, host, ttl=60, pid=pid)


def test_doctor_lists_workers_by_host_and_marks_dead_ones_gone(
        bench_dir: BenchDir, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = bench_dir.bench()
    for site in ("a.test", "b.test"):
        migrate_site(bench, site)
    # Given host web4's horse, which took a job and died: its record lapsed, recovery settled the job
    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue("testapp.tasks.noop")
    _register(bench, "web4.40.0.1", "web4", 40)
    broker = Broker(bench.redis(), bench.bench_id)
    assert broker.take("web4.40.0.1", [("default", 300)]) is not None
    redis_client.delete(keys.rq_worker("web4.40.0.1"))
    assert recover_dead_workers(bench, broker, retry_defaults={}, this_host="web1",
                                middleware=default_middleware(bench, timeouts=False)) == [job.id]
    assert b"rq:worker:web4.40.0.1" not in redis_client.smembers(
        keys.rq_queue_workers(keys.queue_name(bench.bench_id, "default")))  # forgotten everywhere
    # And host web3's horse, whose record lapsed a moment ago (not settled yet)
    _register(bench, "web3.30.0.1", "web3", 30)
    redis_client.delete(keys.rq_worker("web3.30.0.1"))
    # And on this host (web1) a live horse and one whose process is gone
    _register(bench, f"web1.{os.getpid()}.0.1", "web1", os.getpid())
    _register(bench, f"web1.{os.getpid()}.1.2", "web1", _dead_pid())
    # And host web2: two horses (remote: alive while registered) and the scheduler's leader
    _register(bench, "web2.20.0.1", "web2", 21)
    _register(bench, "web2.20.1.1", "web2", 22)
    monkeypatch.setenv(HOST_ENV, "web2")
    daemon = SchedulerDaemon(bench)
    daemon.lease_step()
    # When the doctor runs on web1
    monkeypatch.setenv(HOST_ENV, "web1")
    result = run(bench_dir, "doctor", "--format", "json")
    text = run(bench_dir, "doctor")
    daemon.lease.release()
    # Then it lists every host with its live and gone workers, and is healthy (the dead hosts' jobs are settled)
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    hosts = {h["host"]: h for h in report["hosts"]}
    assert {name: (h["state"], h["live"], h["gone"], h["queues"], h["scheduler"]) for name, h in hosts.items()} == {
        "web1": ("partly gone", 1, 1, ["default"], []),
        "web2": ("up", 2, 0, ["default"], ["leader"]),
        "web3": ("gone", 0, 1, [], []),
        "web4": ("gone", 0, 1, [], []),
    }
    [web4] = hosts["web4"]["workers"]
    assert (web4["name"], web4["state"], web4["queues"]) == ("web4.40.0.1", "gone", ["default"])
    assert web4["why"].startswith("died; recovery settled its 1 job(s) and forgot it at ")
    assert hosts["web3"]["workers"][0]["why"] == ("its registration lapsed (not renewed by its pool); recovery "
                                                  "settles its jobs")
    assert [w["why"] for w in hosts["web1"]["workers"] if w["state"] == "gone"] == ["its process is gone"]
    # And the text report shows the same as a table, then one line per gone worker
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    table = [line for line in lines if line.startswith("│ web")]
    assert [" ".join(line.replace("│", " ").split()) for line in table] == [
        "web1 partly gone 1 1 default", "web2 up 2 0 default leader", "web3 gone 0 1", "web4 gone 0 1"]
    assert [line for line in lines if line.startswith("gone: ")] == [
        f"gone: worker web1.{os.getpid()}.1.2 on web1: its process is gone",
        "gone: worker web3.30.0.1 on web3: its registration lapsed (not renewed by its pool); recovery settles "
        "its jobs",
        "gone: worker web4.40.0.1 on web4: " + web4["why"],
    ]


def test_gone_workers_are_remembered_for_an_hour(bench_dir: BenchDir, redis_client: redis.Redis) -> None:
    bench_id = bench_dir.bench().bench_id
    gone.remember(redis_client, bench_id, "web9.1.0.1", hostname=None, queues=["long"], found=1000.0, jobs_settled=2)
    [entry] = gone.recent(redis_client, bench_id, now=1000.0 + gone.KEEP_SECONDS)
    assert entry == gone.GoneWorker("web9.1.0.1", "web9", ("long",), 1000.0, 2)
    assert gone.recent(redis_client, bench_id, now=1001.0 + gone.KEEP_SECONDS) == []
    # A later entry drops the ones older than an hour
    gone.remember(redis_client, bench_id, "web8.1.0.1", hostname="web8", queues=[], found=1001.0 + gone.KEEP_SECONDS,
                  jobs_settled=0)
    assert [k.decode() for k in redis_client.hkeys(keys.bench_workers_gone(bench_id))] == ["web8.1.0.1"]


def test_a_dead_leader_is_not_listed_as_a_standby_once_another_daemon_leads(
        bench_dir: BenchDir, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = bench_dir.bench()
    for site in ("a.test", "b.test"):
        migrate_site(bench, site)
    # Given a leader on web1 that dies (its lease lapses, its presence entry stays), and daemons on web2 and web3
    monkeypatch.setenv(HOST_ENV, "web1")
    dead = SchedulerDaemon(bench)
    dead.lease_step()
    bench.redis().delete(keys.scheduler_lease(bench.bench_id))  # the lease lapsed
    monkeypatch.setenv(HOST_ENV, "web2")
    leader = SchedulerDaemon(bench)
    leader.lease_step()
    monkeypatch.setenv(HOST_ENV, "web3")
    standby = SchedulerDaemon(bench)
    standby.lease_step()
    # When the doctor looks, before the dead leader's entry goes stale
    report = run(bench_dir, "doctor", "--format", "json")
    leader.lease.release()
    # Then web2 leads, web3 stands by, and web1 has no scheduler any more
    found = json.loads(report.stdout)
    assert (found["scheduler"]["leader"], found["scheduler"]["standbys"]) == (leader.lease.holder,
                                                                            [standby.lease.holder])
    assert {h["host"]: h["scheduler"] for h in found["hosts"]} == {"web2": ["leader"], "web3": ["standby"]}
