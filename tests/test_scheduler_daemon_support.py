"""Helpers for the scheduler daemon tests: a throwaway app with scheduled events,
real ``bgcore schedule`` / ``bgcore worker`` processes, and polling with deadlines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import BGCORE_EXE, FIXTURE_APPS, BenchDir
from tests.polling import wait_until

TASKS = '''
import json, os, signal, time
import bgcore

def _record(tag):
    path = bgcore.local.conf.get("evidence_file")
    line = {"site": bgcore.local.site, "tag": tag, "job": bgcore.local.job_id, "t": time.time(), "pid": os.getpid()}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\\n")

def every():
    _record("every")

def every2():
    _record("every2")

def slow():
    _record("slow-start")
    time.sleep(float(bgcore.local.conf.get("slow_seconds", 0)))
    _record("slow-end")

def fail():
    raise RuntimeError("scheduled boom")

def die():
    _record("die")
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
'''


def hooks_text(app: str, all_methods: list[str]) -> str:
    methods = ", ".join(f'"{app}.tasks.{m}"' for m in all_methods)
    return f'app_name = "{app}"\nscheduler_events = {{"all": [{methods}]}}\n'


@dataclass
class SchedBench:
    """A bench whose sites install one throwaway app with ``all`` events, ticking every second."""

    dir: BenchDir
    app: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def hooks(self) -> Path:
        return self.dir.path / "apps" / self.app / "hooks.py"

    def evidence(self, site: str) -> Path:
        return self.dir.path / f"{site}.jsonl"

    def records(self, site: str, tag: str | None = None) -> list[dict[str, Any]]:
        path = self.evidence(site)
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in lines if tag is None or r["tag"] == tag]

    def add_site(self, name: str, **config: Any) -> None:
        config.setdefault("installed_apps", [self.app])
        config.setdefault("evidence_file", str(self.evidence(name)))
        self.dir.add_site(name, **config)

    def migrate(self) -> None:
        self.dir.cli("migrate", check=True)

    def spawn(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, BGCORE_BENCH=str(self.dir.path))
        out = open(self.dir.path / log, "ab")
        proc = subprocess.Popen([BGCORE_EXE, *args], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=self.dir.path, start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def schedule(self, log: str = "schedule.log") -> subprocess.Popen[bytes]:
        return self.spawn("schedule", log=log)

    def worker(self, log: str = "worker.log") -> subprocess.Popen[bytes]:
        return self.spawn("worker", log=log)

    def log(self, name: str) -> str:
        path = self.dir.path / name
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal every process of a process this helper started: its session, RQ work-horses included."""
        signal_session(proc.pid, sig)
        proc.wait(timeout=15)
        if sig == signal.SIGKILL:
            wait_for(lambda sid=proc.pid: not session_members(sid), 10, f"session {proc.pid} to be gone")

    def stop_all(self) -> None:
        """Stop what this helper started (SIGTERM, then SIGKILL), leaving no work-horse behind."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for proc in self.procs:
            signal_session(proc.pid, signal.SIGKILL)  # work-horses sit in their own process group
        for proc in self.procs:
            wait_for(lambda sid=proc.pid: not session_members(sid), 10, f"session {proc.pid} to be gone")


def session_members(sid: int) -> list[int]:
    """The live processes of session ``sid``: a process started with ``start_new_session`` and
    all it forked, RQ work-horses included (they move to a process group of their own)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid and not _zombie(int(entry)):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def signal_session(sid: int, sig: int) -> None:
    """Send ``sig`` to every process of session ``sid`` (see :func:`session_members`)."""
    for pid in session_members(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue


def cron_hooks_text(app: str, crons: dict[str, list[str]]) -> str:
    """A hooks.py whose only events are ``cron`` entries (expression -> task names)."""
    entries = ", ".join(f'"{expr}": [{", ".join(repr(f"{app}.tasks.{m}") for m in methods)}]'
                        for expr, methods in crons.items())
    return f'app_name = "{app}"\nscheduler_events = {{"cron": {{{entries}}}}}\n'


def make_sched_bench(bench_dir: BenchDir, all_methods: list[str], **common: Any) -> SchedBench:
    """Write the app, the bench config (1 s ticks, 2 s lease, 1 s rescans) and sites a.test, b.test."""
    app = "sched_" + uuid.uuid4().hex[:8]
    package = bench_dir.path / "apps" / app
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(TASKS)
    (package / "hooks.py").write_text(hooks_text(app, all_methods))
    settings = {"scheduler_tick_interval": 1, "scheduler_lease_seconds": 2, "scheduler_rescan_seconds": 1}
    settings.update(common)
    bench_dir.write_common(**settings)
    config = json.loads((bench_dir.sites / "common_site_config.json").read_text())
    config["apps_path"] = [str(FIXTURE_APPS), str(bench_dir.path / "apps")]
    (bench_dir.sites / "common_site_config.json").write_text(json.dumps(config, indent=2))
    sched = SchedBench(bench_dir, app)
    for site in ("a.test", "b.test"):
        sched.add_site(site)
    return sched


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    return wait_until(predicate, what, timeout, interval)
