"""Real Redis topologies for the tests (no tests here): a server with a conf file, a master with a
replica and Sentinels, a TLS server. Every process is started on free loopback ports and stopped
by the PID this module started."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from bgcore.processes import free_port

MASTER_NAME = "bgmaster"


def redis_server_exe() -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not on PATH; the Redis tests need a real server")
    return exe


def wait_until(condition: Callable[[], object], timeout: float, what: str | Callable[[], str],
               every: float = 0.1) -> object:
    """``condition()``'s first truthy value within ``timeout`` seconds (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - not ready yet
            last = exc
        time.sleep(every)
    shown = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout}s waiting for {shown} (last error: {last!r})")


@dataclass
class Node:
    """One redis-server (or Sentinel) process started from a conf file."""

    name: str
    port: int
    conf: Path
    sentinel: bool = False
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.conf.with_suffix(".log")

    def start(self) -> Node:
        argv = [redis_server_exe(), str(self.conf)] + (["--sentinel"] if self.sentinel else [])
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def client(self, password: str | None = None, **options: object) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=5,
                           **options)  # type: ignore[arg-type]

    def wait_ready(self, password: str | None = None, timeout: float = 30.0) -> None:
        def answers() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            with self.client(password) as client:
                return bool(client.ping())
        wait_until(answers, timeout, f"{self.name} on port {self.port}")

    def kill(self) -> None:
        """SIGKILL, by the PID this test started."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def server(directory: Path, name: str, lines: list[str], *, sentinel: bool = False) -> Node:
    """A started server (not yet waited for) whose conf is ``lines`` plus port, bind, dir and log."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = directory / f"{name}.conf"
    node = Node(name, port, conf, sentinel=sentinel)
    base = [f"port {port}", "bind 127.0.0.1", f'dir "{directory}"', f'logfile "{node.log}"']
    if not sentinel:
        base += ['save ""', "appendonly no", f'dbfilename "{name}.rdb"']
    conf.write_text("\n".join([*base, *lines]) + "\n")
    return node.start()


@dataclass
class SentinelSetup:
    """A master, its replica and three Sentinels (quorum 2) watching them as ``MASTER_NAME``."""

    master: Node
    replica: Node
    sentinels: list[Node]
    password: str
    sentinel_password: str

    @property
    def nodes(self) -> list[Node]:
        return [self.master, self.replica, *self.sentinels]

    def config(self) -> dict[str, object]:
        """The bench's ``redis_sentinel`` value for this setup."""
        return {"sentinels": [f"127.0.0.1:{s.port}" for s in self.sentinels], "master": MASTER_NAME,
                "password": self.password, "sentinel_password": self.sentinel_password, "db": 0}

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers reports it."""
        for node in self.sentinels:
            try:
                with node.client(self.sentinel_password) as client:
                    _host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return int(port)
            except redis.RedisError:
                continue
        raise AssertionError("no Sentinel answers")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def sentinel_setup(directory: Path, *, password: str = "master-secret", sentinel_password: str = "sentinel-secret",
                   down_after_ms: int = 1500, failover_timeout_ms: int = 6000) -> SentinelSetup:
    """Start and wait for the whole setup; the caller stops it (``SentinelSetup.stop``)."""
    auth = [f'requirepass "{password}"', f'masterauth "{password}"']
    master = server(directory, "master", auth)
    master.wait_ready(password)
    replica = server(directory, "replica", [*auth, f"replicaof 127.0.0.1 {master.port}"])
    replica.wait_ready(password)
    sentinels = []
    for index in range(3):
        sentinels.append(server(directory, f"sentinel{index}", [
            f'requirepass "{sentinel_password}"',
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2",
            f'sentinel auth-pass {MASTER_NAME} "{password}"',
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
            # the Sentinels talk to each other with the password they require
            f'sentinel sentinel-pass "{sentinel_password}"',
        ], sentinel=True))
    setup = SentinelSetup(master, replica, sentinels, password, sentinel_password)
    try:
        for node in sentinels:
            node.wait_ready(sentinel_password)

        def replica_in_sync() -> bool:
            with replica.client(password) as client:
                return client.info("replication").get("master_link_status") == "up"

        wait_until(replica_in_sync, 60, "the replica to sync with the master")

        def sentinels_see_all() -> bool:
            for node in sentinels:
                with node.client(sentinel_password) as client:
                    state = client.sentinel_master(MASTER_NAME)
                    if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                        return False
            return True

        wait_until(sentinels_see_all, 60, "the Sentinels to find the replica and each other")
    except BaseException:
        setup.stop()
        raise
    return setup


def tls_supported() -> bool:
    """Whether this redis-server build takes ``tls-port`` (a build without TLS calls it a bad directive)."""
    probe = subprocess.run([redis_server_exe(), "--port", "0", "--tls-port", "0"],
                           capture_output=True, text=True, timeout=30)
    return "Bad directive" not in probe.stdout + probe.stderr
