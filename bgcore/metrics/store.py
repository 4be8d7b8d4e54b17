"""Job statistics in Redis: what a batch of counts looks like, how it is written, how it is read.

Three structures per bench (names in :mod:`bgcore.keys`):

* ``metrics_outcomes(queue)``: a hash, outcome -> runs ever counted (never expires; small).
* ``metrics_durations(queue)``: a hash, ``le:<bound>`` -> runs whose duration fell in that bucket
  (and in no lower one), plus ``sum`` (seconds); the count is the sum of the buckets. The bounds
  are :data:`DURATION_BUCKETS`.
* ``metrics_minute(minute)``: a hash per minute (its start, epoch seconds), ``<queue>:finished`` and
  ``<queue>:failed`` -> runs that ended in that minute; it expires :data:`MINUTE_TTL_SECONDS` after its
  last write (made in or just after its minute), so the throughput history holds the last two hours
  in at most ~122 small hashes.

Everything is ``HINCRBY`` (and ``HINCRBYFLOAT`` for the sum), so any number of processes on any
number of hosts add to the same totals without coordinating: the aggregation happens in Redis.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bgcore import keys
from bgcore.errors import InvalidArgument

OUTCOMES = ("finished", "failed", "timeout", "retried", "lost")
FINISHED, FAILED = "finished", "failed"  # the two columns of the throughput history
# Upper bounds (seconds) of the run-time histogram; the default queue timeouts are 300 s and 1,500 s.
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                                       60.0, 120.0, 300.0, 600.0, 1500.0, 3600.0)
MINUTE_TTL_SECONDS = 2 * 3600 + 120
MAX_MINUTES = 120


def minute_of(epoch: float) -> int:
    """The start (epoch seconds) of the minute holding ``epoch``."""
    return int(epoch // 60) * 60


def bucket_field(bound: float) -> str:
    """The hash field of the histogram bucket with upper bound ``bound``."""
    return f"le:{bound:g}"


INF_FIELD = "le:+Inf"


@dataclass
class Tally:
    """Counts of job runs not yet written to Redis (one process's batch)."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (queue, outcome)
    buckets: Counter[tuple[str, str]] = field(default_factory=Counter)  # (queue, bucket field)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))  # queue -> summed duration
    minutes: Counter[tuple[int, str]] = field(default_factory=Counter)  # (minute, "<queue>:<column>")

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.minutes)

    def add(self, queue: str, outcome: str, *, ended: float, duration: float | None) -> None:
        """Count one run of ``queue`` that ended at ``ended`` (epoch seconds) with ``outcome``.

        ``duration`` (seconds) goes into the histogram; ``None`` (a job whose horse died) does not.
        Only ``finished`` counts as finished per minute; every other outcome is a failed run.
        """
        self.outcomes[(queue, outcome)] += 1
        column = FINISHED if outcome == FINISHED else FAILED
        self.minutes[(minute_of(ended), f"{queue}:{column}")] += 1
        if duration is not None:
            index = bisect.bisect_left(DURATION_BUCKETS, duration)
            name = bucket_field(DURATION_BUCKETS[index]) if index < len(DURATION_BUCKETS) else INF_FIELD
            self.buckets[(queue, name)] += 1
            self.seconds[queue] += max(duration, 0.0)

    def write(self, redis: Any, bench_id: str) -> None:
        """Add this batch to the bench's totals in one ``MULTI``/``EXEC`` (one round trip); the batch is then empty.

        The transaction applies all of it or none of it: if Redis fails, the batch is kept
        and the next write sends it with what came meanwhile.
        """
        if not self:
            return
        with redis.pipeline(transaction=True) as pipe:
            for (queue, outcome), n in self.outcomes.items():
                pipe.hincrby(keys.metrics_outcomes(bench_id, queue), outcome, n)
            for (queue, name), n in self.buckets.items():
                pipe.hincrby(keys.metrics_durations(bench_id, queue), name, n)
            for queue, total in self.seconds.items():
                pipe.hincrbyfloat(keys.metrics_durations(bench_id, queue), "sum", total)
            for (minute, name), n in self.minutes.items():
                pipe.hincrby(keys.metrics_minute(bench_id, minute), name, n)
            for minute in {m for m, _ in self.minutes}:
                # Relative to the write, not to the minute: a host whose clock is off cannot delete it early.
                pipe.expire(keys.metrics_minute(bench_id, minute), MINUTE_TTL_SECONDS)
            pipe.execute()
        self.outcomes.clear()
        self.buckets.clear()
        self.seconds.clear()
        self.minutes.clear()


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    """One queue's totals: runs per outcome and the run-time histogram (cumulative, as Prometheus wants)."""

    queue: str
    outcomes: dict[str, int]
    buckets: list[tuple[float, int]]  # (upper bound, runs at or below it), +Inf last
    duration_sum: float
    duration_count: int


def queue_stats(redis: Any, bench_id: str, queues: Sequence[str]) -> list[QueueStats]:
    """The totals of ``queues`` (two hash reads each, one round trip)."""
    with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.hgetall(keys.metrics_outcomes(bench_id, queue))
            pipe.hgetall(keys.metrics_durations(bench_id, queue))
        found = pipe.execute()
    return [_queue_stats(q, _texts(o), _texts(d)) for q, o, d in zip(queues, found[::2], found[1::2])]


def _queue_stats(queue: str, outcomes: dict[str, str], durations: dict[str, str]) -> QueueStats:
    counts = {name: int(outcomes.get(name, 0)) for name in OUTCOMES}
    counts.update({name: int(n) for name, n in outcomes.items() if name not in counts})
    running, cumulative = 0, []
    for bound in DURATION_BUCKETS:
        running += int(durations.get(bucket_field(bound), 0))
        cumulative.append((bound, running))
    running += int(durations.get(INF_FIELD, 0))
    cumulative.append((float("inf"), running))
    return QueueStats(queue, counts, cumulative, float(durations.get("sum", 0.0)), running)


def check_minutes(minutes: object) -> int:
    """``minutes`` if it is a whole number from 1 to :data:`MAX_MINUTES`, else :class:`InvalidArgument`."""
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MINUTES:
        raise InvalidArgument(f"minutes must be a whole number from 1 to {MAX_MINUTES} (the throughput history "
                              f"keeps about two hours), found {minutes!r}")
    return minutes


def read_throughput(redis: Any, bench_id: str, queues: Iterable[str], *, minutes: int,
                    now: float) -> dict[str, list[tuple[int, int, int]]]:
    """``queue -> [(minute start, finished, failed), ...]``: the ``minutes`` minutes up to ``now``'s, oldest first.

    One ``HGETALL`` per minute, in one round trip; minutes with no runs are zeros.
    """
    check_minutes(minutes)
    last = minute_of(now)
    starts = [last - 60 * back for back in range(minutes - 1, -1, -1)]
    with redis.pipeline(transaction=False) as pipe:
        for start in starts:
            pipe.hgetall(keys.metrics_minute(bench_id, start))
        found = [_texts(h) for h in pipe.execute()]
    return {queue: [(start, int(h.get(f"{queue}:{FINISHED}", 0)), int(h.get(f"{queue}:{FAILED}", 0)))
                    for start, h in zip(starts, found)] for queue in queues}


def _texts(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
