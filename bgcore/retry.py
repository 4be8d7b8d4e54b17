"""Retry policies: how often a failed job runs again, and after how long.

``bgcore.enqueue(..., retry=3)`` or ``retry=Retry(max=3, intervals=[10, 60, 300])``;
a queue's default comes from ``workers.<queue>.retry`` in
``common_site_config.json`` (the same two forms, or ``{"max": 3, "intervals":
[10, 60], "backoff": 2, "jitter": true}``). A retried job keeps its id, site,
user and arguments; it waits as a delayed job until its next attempt.

Delays: the ``intervals`` list gives the wait before attempt 2, 3, ... (its last
value repeats); without intervals, ``interval`` seconds (default 0: at once),
multiplied by ``backoff`` for each attempt after the second when given. With
``jitter``, each delay is drawn uniformly from [delay/2, delay].
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bgcore.errors import InvalidArgument

MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class Retry:
    """Run a failed job again, up to ``max`` more times."""

    max: int
    intervals: Sequence[float] = field(default_factory=tuple)
    interval: float = 0.0
    backoff: float | None = None
    jitter: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.max, int) or isinstance(self.max, bool) or not 0 <= self.max <= MAX_ATTEMPTS:
            raise InvalidArgument(f"retry max must be an integer from 0 to {MAX_ATTEMPTS}, found {self.max!r}")
        for value in (*self.intervals, self.interval):
            if not _seconds(value):
                raise InvalidArgument(f"retry intervals must be finite numbers of seconds >= 0, found {value!r}")
        if self.backoff is not None and not (_seconds(self.backoff) and self.backoff >= 1):
            raise InvalidArgument(f"retry backoff must be a number >= 1, found {self.backoff!r}")
        object.__setattr__(self, "intervals", tuple(float(v) for v in self.intervals))

    def delay(self, retry_number: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 = the second attempt)."""
        if self.intervals:
            base = self.intervals[min(retry_number, len(self.intervals)) - 1]
        else:
            base = self.interval * (self.backoff ** (retry_number - 1) if self.backoff else 1.0)
        return base * (0.5 + rand() / 2) if self.jitter else base

    def as_payload(self) -> dict[str, Any]:
        """The JSON form stored in a job's payload."""
        return {"max": self.max, "intervals": list(self.intervals), "interval": self.interval,
                "backoff": self.backoff, "jitter": self.jitter}

    @classmethod
    def parse(cls, value: Any, where: str) -> Retry | None:
        """A policy from ``retry=`` or config: ``None``, an int, a :class:`Retry` or its JSON form."""
        if value is None or isinstance(value, Retry):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(max=value)
        if isinstance(value, dict):
            unknown = set(value) - {"max", "intervals", "interval", "backoff", "jitter"}
            if unknown or "max" not in value or not isinstance(value.get("intervals") or [], list):
                raise InvalidArgument(f"{where}: retry must look like {{\"max\": 3, \"intervals\": [10, 60]}}, "
                                      f"found {value!r}")
            try:
                return cls(max=value["max"], intervals=value.get("intervals") or (),
                           interval=value.get("interval") or 0.0, backoff=value.get("backoff"),
                           jitter=bool(value.get("jitter")))
            except InvalidArgument as exc:
                raise InvalidArgument(f"{where}: {exc}") from None
        raise InvalidArgument(f"{where}: retry must be a number of retries or a Retry(...), found {value!r}")


def job_policy(payload: Any, default: Retry | None) -> Retry | None:
    """The retry policy of a job: its payload's ``retry`` (from ``enqueue(retry=...)``), else ``default``.

    A payload policy that does not parse (written by something else) means no retry.
    """
    own = payload.get("retry") if isinstance(payload, dict) else None
    if own is None:
        return default
    try:
        return Retry.parse(own, "job payload")
    except InvalidArgument:
        return None


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
