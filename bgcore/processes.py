"""Small process helpers shared by the private Redis, the scheduler, tests and benchmarks."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time

import psutil
import redis


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` runs on this host (even one we may not signal).

    A zombie is not alive: a process that died after its parent did waits, as a
    zombie, for an init that may reap it late (or never, in some containers).
    """
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_redis(url: str, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """Wait until the Redis that ``proc`` runs at ``url`` answers; False if it exits or times out.

    Another process on the port (``proc`` could not bind it) does not count as an answer.
    """
    from bgcore.connection import client_for_url

    client = client_for_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if proc.poll() is None:
                    client.ping()
                    return True
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
    finally:
        client.close()


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """``preexec_fn`` for children of a supervisor: on Linux, SIGTERM them when it dies.

    Elsewhere (or if prctl is unavailable) it does nothing: the supervisor's own
    shutdown still stops its children.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
