"""Shared fixtures: a real redis-server per test session, and throwaway benches.

Nothing here fakes Redis: ``redis_server`` starts the ``redis-server`` found on
PATH on a free loopback port and stops it (by its PID) after the session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from bgcore.processes import free_port, wait_for_redis

REPO = Path(__file__).resolve().parent.parent
FIXTURE_APPS = REPO / "fixtures" / "apps"
BGCORE_EXE = str(Path(sys.executable).parent / "bgcore")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the test session; yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not on PATH; the Redis tests need a real server")
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    if not wait_for_redis(url, proc):
        proc.kill()
        pytest.fail("redis-server did not start")
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def redis_client(redis_server: str) -> Iterator[redis.Redis]:
    """A client of the session's Redis, flushed before each test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    yield client
    client.close()


@dataclass
class BenchDir:
    """A throwaway bench on disk, with helpers to add sites and run the CLI."""

    path: Path
    redis_url: str

    @property
    def sites(self) -> Path:
        return self.path / "sites"

    def write_common(self, **config: Any) -> None:
        base = {"apps_path": [str(FIXTURE_APPS)], "redis_queue": self.redis_url}
        base.update(config)
        (self.sites / "common_site_config.json").write_text(json.dumps(base, indent=2))

    def add_site(self, name: str, **config: Any) -> Path:
        site = self.sites / name
        site.mkdir(parents=True, exist_ok=True)
        config.setdefault("installed_apps", ["testapp"])
        (site / "site_config.json").write_text(json.dumps(config, indent=2))
        return site

    def bench(self) -> Any:
        from bgcore.bench import Bench

        return Bench(self.path)

    def cli(self, *args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run the real ``bgcore`` console script against this bench."""
        env = dict(os.environ, BGCORE_BENCH=str(self.path))
        result = subprocess.run(
            [BGCORE_EXE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=self.path
        )
        if check and result.returncode != 0:
            raise AssertionError(f"bgcore {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture
def bench_dir(tmp_path: Path, redis_client: redis.Redis, redis_server: str) -> BenchDir:
    """A bench with sites ``a.test`` and ``b.test`` (app ``testapp``) on the session Redis."""
    bench = BenchDir(tmp_path / "bench", redis_server)
    bench.sites.mkdir(parents=True)
    bench.write_common()
    bench.add_site("a.test")
    bench.add_site("b.test")
    return bench
