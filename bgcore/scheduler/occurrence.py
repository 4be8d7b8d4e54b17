"""Occurrences: one due time of one event in one site, enqueued at most once.

An occurrence's id is ``<event_id>-<due epoch seconds>``; its RQ job id is
derived from it. Claiming and enqueueing happen in one Redis transaction
(``WATCH`` the claim keys, ``MULTI``, ``SET`` claim + job + queue push +
last-run, ``EXEC``): two daemons, a retried tick or a restart in the middle of
a tick can never enqueue the same occurrence twice, and a claim never exists
without its job. Claim keys expire after a few days (``OCCURRENCE_TTL``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import WatchError

from bgcore import keys
from bgcore.bench import Bench
from bgcore.context import site_context
from bgcore.enqueue import enqueue
from bgcore.errors import BgcoreError

logger = logging.getLogger(__name__)

OCCURRENCE_TTL = 3 * 24 * 3600
BATCH_SIZE = 500
_WATCH_RETRIES = 5


@dataclass(frozen=True)
class Occurrence:
    """One due time (``due``, epoch seconds UTC) of event ``event_id`` in ``site``."""

    site: str
    event_id: str
    method: str
    queue: str
    due: float
    timeout: int | None = None

    @property
    def occurrence_id(self) -> str:
        return occurrence_id(self.event_id, self.due)

    @property
    def job_local_id(self) -> str:
        """The site-local job id of this occurrence's run (deterministic)."""
        return "sched-" + self.occurrence_id

    @property
    def rq_job_id(self) -> str:
        return keys.job_id(self.site, self.job_local_id)


def occurrence_id(event_id: str, due: float) -> str:
    """``<event_id>-<due as whole epoch seconds>``: the same for every daemon and retry."""
    return f"{event_id}-{int(due)}"


@dataclass
class EnqueueReport:
    """What one call of :func:`enqueue_occurrences` did."""

    enqueued: list[Occurrence] = field(default_factory=list)
    already_claimed: list[Occurrence] = field(default_factory=list)
    failed: list[tuple[Occurrence, str]] = field(default_factory=list)
    skipped: list[Occurrence] = field(default_factory=list)  # not tried: ``keep_going`` said stop


def enqueue_occurrences(
    bench: Bench, occurrences: Sequence[Occurrence], *, ttl: int = OCCURRENCE_TTL, batch_size: int = BATCH_SIZE,
    keep_going: Callable[[], bool] | None = None,
) -> EnqueueReport:
    """Claim and enqueue each occurrence unless some daemon already did.

    Each job goes through :func:`bgcore.enqueue` inside its site, marked as a
    run of its event (the worker logs it). An occurrence whose enqueue is
    refused (method gone, app uninstalled, broken site config) is reported in
    ``failed`` and logged at ERROR; the others still go out. ``keep_going`` is
    asked before every chunk after the first (the daemon renews its lease
    there); when it answers False the rest is left in ``skipped``.
    """
    report = EnqueueReport()
    for start in range(0, len(occurrences), batch_size):
        if start and keep_going is not None and not keep_going():
            report.skipped.extend(occurrences[start:])
            break
        _enqueue_chunk(bench, occurrences[start:start + batch_size], ttl, report)
    return report


def _enqueue_chunk(bench: Bench, chunk: Sequence[Occurrence], ttl: int, report: EnqueueReport) -> None:
    bench_id = bench.bench_id
    claim_keys = [keys.scheduler_occurrence(bench_id, o.site, o.occurrence_id) for o in chunk]
    with bench.redis().pipeline() as pipe:
        for _ in range(_WATCH_RETRIES):
            try:
                pipe.watch(*claim_keys)
                taken = pipe.mget(claim_keys)
                pipe.multi()
                fresh = [(o, k) for o, k, t in zip(chunk, claim_keys, taken) if t is None]
                claimed = [o for o, t in zip(chunk, taken) if t is not None]
                enqueued, failed = _queue_commands(bench, bench_id, pipe, fresh, ttl)
                pipe.execute()
            except WatchError:
                # Another daemon claimed one of these keys meanwhile: look again.
                pipe.reset()
                continue
            report.enqueued.extend(enqueued)
            report.already_claimed.extend(claimed)
            report.failed.extend(failed)
            return
    raise BgcoreError(f"could not claim {len(chunk)} occurrence(s): keys kept changing under WATCH")


def _queue_commands(
    bench: Bench, bench_id: str, pipe: Any, fresh: Iterable[tuple[Occurrence, str]], ttl: int
) -> tuple[list[Occurrence], list[tuple[Occurrence, str]]]:
    """Add claim + job + bookkeeping commands for ``fresh`` to the open transaction ``pipe``."""
    by_site: dict[str, list[tuple[Occurrence, str]]] = defaultdict(list)
    for item in fresh:
        by_site[item[0].site].append(item)
    enqueued: list[Occurrence] = []
    failed: list[tuple[Occurrence, str]] = []
    for site, items in by_site.items():
        runs: dict[str, str] = {}
        jobs: dict[str, str] = {}
        try:
            with site_context(bench, site):
                for occ, claim_key in items:
                    try:
                        enqueue(occ.method, queue=occ.queue, timeout=occ.timeout, job_name=occ.method,
                                job_id=occ.job_local_id, _log_event=occ.event_id, _pipeline=pipe)
                    except BgcoreError as exc:
                        logger.error("scheduled run not enqueued site=%s event=%s method=%s: %s",
                                     site, occ.event_id, occ.method, exc)
                        failed.append((occ, str(exc)))
                        continue
                    pipe.set(claim_key, occ.rq_job_id, ex=ttl)
                    runs[occ.event_id] = repr(occ.due)
                    jobs[occ.event_id] = occ.rq_job_id
                    enqueued.append(occ)
        except BgcoreError as exc:
            logger.error("site skipped this tick site=%s: %s", site, exc)
            failed.extend((occ, str(exc)) for occ, _ in items)
        if runs:
            pipe.hset(keys.scheduler_last_run(bench_id, site), mapping=runs)
            pipe.hset(keys.scheduler_last_job(bench_id, site), mapping=jobs)
    return enqueued, failed
