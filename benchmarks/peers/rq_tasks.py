"""Jobs for the plain-RQ runs (RQ imports them by dotted path)."""

from __future__ import annotations

import os
import time

from benchmarks.peers import client


def noop() -> None:
    """The no-op job; RQ's finished registry counts it."""
    return None


def stamp(key: str, tag: str) -> None:
    """Record this job's start: ``RPUSH key "<tag> <pid> <time.time()>"``."""
    started = time.time()
    client().rpush(key, f"{tag} {os.getpid()} {started!r}")
