"""The one poll-until loop of the tests: wait on a condition, never on a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str | Callable[[], str], timeout: float = 30.0,
               interval: float = 0.05) -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy (returned); fail naming
    ``what`` after ``timeout`` s. ``what`` may be a callable, to describe the state at the moment of failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)
