"""``bgcore setup supervisor|systemd|procfile``: the files it writes, and those files run for real.

The in-process tests (click's CliRunner) check what is written; the real ones
start ``supervisord`` and ``honcho`` on the generated config with the bench's
private Redis on a free port, see the workers register and a job run, stop
them, and check that nothing is left running. ``systemd-analyze verify``
checks the units where it exists.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from bgcore.cli import main
from bgcore.processes import free_port
from tests.conftest import BenchDir
from tests.polling import wait_until

BIN = Path(sys.executable).parent


def run_setup(bench: BenchDir, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--bench", str(bench.path), "setup", *args])
    return result.exit_code, result.output


def wait_for(predicate: Callable[[], object], timeout: float = 90, what: str = "condition") -> None:
    wait_until(predicate, what, timeout, 0.3)


@pytest.fixture
def grouped(bench_dir: BenchDir) -> BenchDir:
    """A bench on its private Redis (no redis_queue): short and default share pool 'main', long has its own."""
    bench_dir.write_common(redis_queue=None, shutdown_grace_seconds=0, workers={
        "short": {"group": "main"}, "default": {"group": "main", "background_workers": 0},
        "long": {"timeout": 30},
    })
    return bench_dir


# -- what is written ----------------------------------------------------------------------------------


def test_supervisor_config_has_a_pool_per_queue_group_the_scheduler_dashboard_redis_and_stop_grace(
        grouped: BenchDir, tmp_path: Path) -> None:
    code, output = run_setup(grouped, "supervisor", "--output", str(tmp_path / "out"), "--user", "bgops")
    assert code == 0, output
    conf = configparser.RawConfigParser()
    conf.read(tmp_path / "out" / "supervisor.conf")
    programs = [s.split(":", 1)[1] for s in conf.sections() if s.startswith("program:")]
    assert programs == ["bgcore-bench-redis", "bgcore-bench-worker-main", "bgcore-bench-worker-long",
                        "bgcore-bench-scheduler", "bgcore-bench-dashboard"]
    main_pool = conf["program:bgcore-bench-worker-main"]
    assert main_pool["command"] == f"{BIN / 'bgcore'} worker --queue short,default --pool 1 --shutdown-grace 300"
    # Stop grace: the longest queue timeout + shutdown_grace_seconds (0 here) + the cold stop's 10 s
    assert main_pool["stopwaitsecs"] == "310"
    assert conf["program:bgcore-bench-worker-long"]["stopwaitsecs"] == "40"
    assert all(conf[f"program:{p}"]["user"] == "bgops" for p in programs)
    assert all(conf[f"program:{p}"]["environment"] == f'BGCORE_BENCH="{grouped.path}"' for p in programs)
    assert conf["program:bgcore-bench-scheduler"]["stdout_logfile"] == str(grouped.path / "logs" / "scheduler.log")
    redis = conf["program:bgcore-bench-redis"]
    assert "--port 11000" in redis["command"] and f"--dir {grouped.path / '.bgcore' / 'redis'}" in redis["command"]
    assert int(redis["priority"]) < int(main_pool["priority"])  # Redis starts first, stops last
    assert conf["program:bgcore-bench-dashboard"]["command"].endswith("dashboard --host 127.0.0.1 --port 8009")
    assert conf["group:bgcore-bench"]["programs"] == ",".join(programs)
    assert (grouped.path / "logs").is_dir()
    # Every bgcore command now finds the private Redis at its fixed port
    record = json.loads((grouped.path / ".bgcore" / "private-redis.json").read_text())
    assert record["url"] == "redis://127.0.0.1:11000/0"


def test_a_bench_with_redis_queue_gets_no_redis_program_and_no_dashboard_when_asked(
        bench_dir: BenchDir, tmp_path: Path) -> None:
    bench_dir.write_common(dashboard_host="0.0.0.0", dashboard_port=9100)
    # A public dashboard without a password would be refused at its start: setup refuses it now
    code, output = run_setup(bench_dir, "procfile", "--output", str(tmp_path))
    assert code == 1 and "refuses to listen on '0.0.0.0' without a password" in output
    bench_dir.write_common(dashboard_host="0.0.0.0", dashboard_port=9100, dashboard_password="pw")
    code, output = run_setup(bench_dir, "procfile", "--output", str(tmp_path))
    assert code == 0, output
    names = [line.split(":", 1)[0] for line in (tmp_path / "Procfile").read_text().splitlines()
             if line and not line.startswith("#")]
    assert names == ["worker-short", "worker-default", "worker-long", "scheduler", "dashboard"]
    assert "dashboard --host 0.0.0.0 --port 9100" in (tmp_path / "Procfile").read_text()
    assert not (bench_dir.path / ".bgcore" / "private-redis.json").exists()
    code, output = run_setup(bench_dir, "procfile", "--output", str(tmp_path / "b"), "--no-dashboard")
    assert code == 0 and "dashboard" not in (tmp_path / "b" / "Procfile").read_text().split("# the scheduler")[1]


def test_running_twice_gives_the_same_files(grouped: BenchDir, tmp_path: Path) -> None:
    for fmt in ("supervisor", "systemd", "procfile"):
        out = tmp_path / fmt
        assert run_setup(grouped, fmt, "--output", str(out))[0] == 0
        first = {p.name: p.read_bytes() for p in out.iterdir()}
        code, output = run_setup(grouped, fmt, "--output", str(out))
        assert code == 0, output
        assert {p.name: p.read_bytes() for p in out.iterdir()} == first
        assert "wrote" not in output and f"unchanged {out}" in output


def test_a_file_that_differs_is_shown_as_a_diff_and_left_alone_without_yes(grouped: BenchDir, tmp_path: Path) -> None:
    # Given a config written before the long queue's timeout changed
    assert run_setup(grouped, "supervisor", "--output", str(tmp_path))[0] == 0
    before = (tmp_path / "supervisor.conf").read_text()
    common = json.loads((grouped.sites / "common_site_config.json").read_text())
    common["workers"]["long"]["timeout"] = 60
    (grouped.sites / "common_site_config.json").write_text(json.dumps(common))
    # When setup runs again without --yes
    code, output = run_setup(grouped, "supervisor", "--output", str(tmp_path))
    # Then it shows the difference, changes nothing, and exits 1 with one line saying what to do
    assert code == 1
    assert "-stopwaitsecs=40\n+stopwaitsecs=70" in output
    assert f"--- {tmp_path / 'supervisor.conf'} (on disk)" in output
    assert "nothing was changed; run it again with --yes to overwrite" in output.splitlines()[-1]
    assert (tmp_path / "supervisor.conf").read_text() == before
    # And with --yes it overwrites
    code, output = run_setup(grouped, "supervisor", "--output", str(tmp_path), "--yes")
    assert code == 0, output
    assert f"updated {tmp_path / 'supervisor.conf'}" in output
    assert "stopwaitsecs=70" in (tmp_path / "supervisor.conf").read_text()


def test_bad_inputs_get_one_clear_error(grouped: BenchDir, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = run_setup(grouped, "upstart")
    assert code == 2 and "'upstart' is not one of 'procfile', 'supervisor', 'systemd'" in output
    code, output = run_setup(grouped, "procfile", "--user", "bgops", "--output", str(out))
    assert code == 1 and "--user bgops has no meaning in a Procfile" in output
    code, output = run_setup(grouped, "systemd", "--redis-port", "70000", "--output", str(out))
    assert code == 1 and "--redis-port must be a TCP port from 1 to 65535, found 70000" in output
    grouped.write_common(redis_queue=None, dashboard_port="8009")
    code, output = run_setup(grouped, "systemd", "--output", str(out))
    assert code == 1 and "dashboard_port must be an integer from 1 to 65535, found '8009'" in output
    grouped.write_common(redis_queue=None, workers={"short": {"group": "two words"}})
    code, output = run_setup(grouped, "systemd", "--output", str(out))
    assert code == 1 and "workers.short.group must be a pool name" in output
    grouped.write_common(redis_queue=None, workers={"default": {"group": "short"}})
    code, output = run_setup(grouped, "systemd", "--output", str(out))
    assert code == 1 and "workers group 'short' has the name of queue 'short'" in output
    assert not out.exists()


# -- systemd ------------------------------------------------------------------------------------------


def test_systemd_units_verify_and_carry_user_stop_grace_and_environment(grouped: BenchDir, tmp_path: Path) -> None:
    code, output = run_setup(grouped, "systemd", "--output", str(tmp_path), "--user", "root")
    assert code == 0, output
    units = sorted(tmp_path.glob("*.service"))
    assert [u.name for u in units] == sorted(f"bgcore-bench-{n}.service" for n in
                                             ("redis", "worker-main", "worker-long", "scheduler", "dashboard"))
    for unit in units:
        parsed = configparser.RawConfigParser(strict=True)
        parsed.optionxform = str  # type: ignore[assignment,method-assign]
        parsed.read(unit)
        service = parsed["Service"]
        assert service["User"] == "root"
        assert service["Environment"] == f"BGCORE_BENCH={grouped.path}"
        assert service["KillMode"] == "mixed"
        assert service["ExecStart"].split()[0].startswith("/")
        assert parsed["Install"]["WantedBy"] == "bgcore-bench.target"
    worker = configparser.RawConfigParser()
    worker.optionxform = str  # type: ignore[assignment,method-assign]
    worker.read(tmp_path / "bgcore-bench-worker-long.service")
    assert worker["Service"]["TimeoutStopSec"] == "40"
    assert "bgcore-bench-redis.service" in worker["Unit"]["After"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the parsing above is the check where systemd is not installed
    # Where systemd-analyze exists it checks the units for real (syntax, executables, targets)
    result = subprocess.run([analyze, "verify", "--man=no", *map(str, units), str(tmp_path / "bgcore-bench.target")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_systemd_analyze_rejects_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: systemd-analyze verify does read the units."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the units are checked by parsing them")
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nExecStart=/nonexistent/bgcore worker\n")
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "/nonexistent/bgcore is not executable" in result.stderr


# -- supervisord and honcho, for real -----------------------------------------------------------------


def doctor(bench: BenchDir) -> dict[str, object]:
    result = bench.cli("doctor", "--format", "json")
    return json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}


def workers_of(bench: BenchDir) -> dict[str, int]:
    report = doctor(bench)
    if not report.get("redis_ok"):
        return {}
    return {q["name"]: q["workers"] for q in report["queues"]}  # type: ignore[index,union-attr]


def run_jobs_and_stop(bench: BenchDir, tmp_path: Path, proc: subprocess.Popen[bytes], stop: Callable[[], None],
                      log: Path, *, busy_at_stop: bool) -> None:
    """Workers register and a job runs; then the stop (with a job running when ``busy_at_stop``); nothing is
    left running afterwards."""
    tree: list[int] = []
    notes = tmp_path / "notes.jsonl"
    try:
        wait_for(lambda: (w := workers_of(bench)) and w["short"] >= 1 and w["default"] >= 1 and w["long"] >= 1,
                 what=f"the pools to register; log:\n{_tail(log)}")
        out = tmp_path / "seen.jsonl"
        bench.cli("enqueue", "testapp.tasks.record", "--site", "a.test", "--queue", "default",
                  "--kwargs", json.dumps({"path": str(out), "tag": "flow"}), check=True)
        wait_for(lambda: out.exists(), what="the job to run")
        assert json.loads(out.read_text())["site"] == "a.test"
        if busy_at_stop:
            # shutdown_grace_seconds is 0: only the generated --shutdown-grace lets this job finish
            bench.cli("enqueue", "testapp.engine_tasks.sleep_noted", "--site", "a.test", "--queue", "long",
                      "--kwargs", json.dumps({"path": str(notes), "seconds": 3}), check=True)
            wait_for(lambda: notes.exists(), what="the long job to start")
        tree = [proc.pid] + [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
        assert len(tree) >= 5, tree  # manager, redis, two pools (+ horses), scheduler
    finally:
        stop()
        proc.wait(120)
    if busy_at_stop:
        assert [json.loads(line)["tag"] for line in notes.read_text().splitlines()] == ["started", "finished"]
    alive = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"still running: {alive}"


def _tail(path: Path) -> str:
    try:
        return path.read_text()[-3000:]
    except OSError:
        return ""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory (supervisor's unix socket path must stay under ~100 characters)."""
    path = Path(tempfile.mkdtemp(prefix="bgsv"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


SUPERVISORD_CONF = """\
[supervisord]
nodaemon=true
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
childlogdir={dir}

[unix_http_server]
file={dir}/supervisor.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{dir}/supervisor.sock

[include]
files={include}
"""


@pytest.mark.slow
def test_supervisord_runs_the_generated_config(grouped: BenchDir, tmp_path: Path, short_dir: Path) -> None:
    port = free_port()
    code, output = run_setup(grouped, "supervisor", "--no-dashboard", "--redis-port", str(port))
    assert code == 0, output
    main_conf = short_dir / "supervisord.conf"
    main_conf.write_text(SUPERVISORD_CONF.format(dir=short_dir, include=grouped.path / "config" / "supervisor.conf"))
    proc = subprocess.Popen([str(BIN / "supervisord"), "-c", str(main_conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctl = [str(BIN / "supervisorctl"), "-c", str(main_conf)]

    def stop() -> None:
        subprocess.run([*ctl, "shutdown"], capture_output=True, timeout=120)

    try:
        run_jobs_and_stop(grouped, tmp_path, proc, stop, short_dir / "supervisord.log", busy_at_stop=True)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    # The programs logged under logs/
    assert "pool pid=" in (grouped.path / "logs" / "worker-main.log").read_text()
    assert "Ready to accept connections" in (grouped.path / "logs" / "redis.log").read_text()


@pytest.mark.slow
def test_honcho_runs_the_generated_procfile(grouped: BenchDir, tmp_path: Path) -> None:
    port = free_port()
    code, output = run_setup(grouped, "procfile", "--no-dashboard", "--redis-port", str(port))
    assert code == 0, output
    log = tmp_path / "honcho.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "honcho"), "start", "-f", str(grouped.path / "config" / "Procfile")],
                                stdout=out, stderr=out, cwd=grouped.path, env=dict(os.environ))

    def stop() -> None:
        proc.send_signal(signal.SIGTERM)

    try:
        # honcho stops Redis together with the workers and SIGKILLs after 5 s: no job is left running here
        run_jobs_and_stop(grouped, tmp_path, proc, stop, log, busy_at_stop=False)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "pool pid=" in (grouped.path / "logs" / "worker-long.log").read_text()


# -- queue groups and the managed private Redis ---------------------------------------------------------


@pytest.mark.parametrize("workers, pools", [
    ({}, [("short", "short", 1), ("default", "default", 1), ("long", "long", 1)]),
    ({"short": {"group": "web", "background_workers": 2}, "default": {"group": "web"}, "long": {"background_workers": 0}},
     [("web", "short,default", 3)]),
    ({"short": {"group": "short"}, "default": {"group": "short"}, "mail": {"background_workers": 4}},
     [("short", "short,default", 2), ("long", "long", 1), ("mail", "mail", 4)]),
    ({"long": {"group": "bulk"}, "mail": {"group": "bulk", "background_workers": 0}},
     [("short", "short", 1), ("default", "default", 1), ("bulk", "long,mail", 1)]),
])
def test_worker_pools_follow_the_queue_groups(workers: dict[str, object], pools: list[tuple[str, str, int]]) -> None:
    from bgcore.queues import queue_specs, worker_pools

    found = worker_pools(queue_specs({"workers": workers}))
    assert [(p.name, p.queue_list, p.size) for p in found] == pools


def test_bgcore_start_runs_the_same_pools_as_setup(grouped: BenchDir) -> None:
    from bgcore.start import child_commands

    children = child_commands(grouped.bench(), with_scheduler=False)
    assert [(c.name, c.argv[c.argv.index("--queue") + 1]) for c in children] == [
        ("worker[main]", "short,default"), ("worker[long]", "long")]


def test_commands_find_the_managed_private_redis_and_start_does_not_run_a_second_one(
        grouped: BenchDir, redis_server: str) -> None:
    from bgcore import embedded_redis
    from bgcore.errors import RedisUnavailable

    bench = grouped.bench()
    assert embedded_redis.running_url(bench) is None
    # Given the record bgcore setup writes, pointing at a Redis that answers
    port = embedded_redis.port_of(redis_server)
    assert run_setup(grouped, "supervisor", "--redis-port", str(port))[0] == 0
    assert embedded_redis.running_url(bench) == f"redis://127.0.0.1:{port}/0"
    # Then bgcore start refuses to run its own Redis on the same data directory
    with pytest.raises(RedisUnavailable, match="already runs under a process manager"):
        embedded_redis.start(bench)
