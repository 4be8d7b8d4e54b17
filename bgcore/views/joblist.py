"""Jobs by status (queued, running, scheduled, failed), site, queue and method, one page at a time.

A listing is a sequence of *segments*, each a Redis list or sorted set (or a
short list read whole) whose length is known in one round trip: a site's list
of a queue, a queue's delayed set, the site's failed index, a queue's failed
registry. A page reads only the ranges of the segments it covers, then the job
hashes of its rows: a fixed number of round trips, work in proportion to the
page size, not to the number of jobs. A method filter has to look at the jobs
themselves: it reads them in chunks, in listing order, and stops at
:data:`METHOD_SCAN_LIMIT` jobs (the page then says how many it looked at).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bgcore import keys
from bgcore.bench import Bench, validate_site_name
from bgcore.errors import InvalidArgument
from bgcore.jobs import doc_label, job_label
from bgcore.queues import check_queue
from bgcore.rqbridge import broker
from bgcore.views import Page
from bgcore.views.common import exc_string, last_line, payload, rq_time, text

STATUSES = ("queued", "running", "scheduled", "failed")
METHOD_SCAN_LIMIT = 10_000
CHUNK = 500
_FIELDS = ["data", "origin", "status", "enqueued_at", "started_at", "ended_at", "worker_name"]


@dataclass(frozen=True)
class JobFilter:
    """What a jobs listing shows: one status, and optionally one site, queue and method (exact matches)."""

    status: str = "queued"
    site: str | None = None
    queue: str | None = None
    method: str | None = None

    def checked(self, bench: Bench) -> JobFilter:
        """This filter with its values checked: :class:`InvalidArgument` names a bad one and the valid choices."""
        if self.status not in STATUSES:
            raise InvalidArgument(f"unknown job status {self.status!r}; use one of: {', '.join(STATUSES)}")
        if self.site:
            validate_site_name(self.site)
        if self.queue:
            check_queue(bench.queues, self.queue)
        return self


@dataclass(frozen=True)
class JobRow:
    """One job in a listing. ``job_id`` is the id as ``enqueue`` printed it; ``rq_id`` the full one."""

    rq_id: str
    job_id: str
    site: str | None
    queue: str | None
    status: str
    method: str | None
    job: str  # what listings call it: its name, ``Doctype name.method``, or its method
    job_name: str | None = None  # its name, or ``Doctype name.method`` for a document job (None: neither)
    kwargs: Any = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    due: datetime | None = None
    worker: str | None = None
    exception: str | None = None


@dataclass(frozen=True)
class _Segment:
    queue: str
    kind: str  # "list", "zset" (ascending), "zrev" (newest first), "ids" (read whole already)
    key: str
    length: int
    ids: tuple[tuple[str, float | None], ...] = ()
    members_have_site: bool = False  # a delayed set's members are "<site> <job id>"


def job_page(bench: Bench, wanted: JobFilter, offset: int = 0, limit: int = 50) -> Page[JobRow]:
    """One page of the jobs ``wanted`` selects, in queue priority order (failed: newest first per queue)."""
    wanted = wanted.checked(bench)
    offset, limit = max(0, offset), max(1, limit)
    segments = _segments(bench, wanted)
    if wanted.method is None:
        total = sum(s.length for s in segments)
        return Page(rows=_rows(bench, wanted.status, _read(bench, segments, offset, limit)),
                    offset=offset, limit=limit, total=total)
    matched, scanned, complete = _scan_for_method(bench, segments, wanted.method, offset + limit)
    return Page(rows=_rows(bench, wanted.status, matched[offset:offset + limit]), offset=offset, limit=limit,
                total=len(matched) if complete else None, scanned=None if complete else scanned)


def job_rows(bench: Bench, wanted: JobFilter) -> list[JobRow]:
    """Every job ``wanted`` selects (for ``show-pending-jobs --list``: the same rows, unpaged)."""
    wanted = wanted.checked(bench)
    segments = _segments(bench, wanted)
    entries = _read(bench, segments, 0, sum(s.length for s in segments))
    rows = _rows(bench, wanted.status, entries)
    return [r for r in rows if wanted.method is None or r.method == wanted.method]


def _segments(bench: Bench, wanted: JobFilter) -> list[_Segment]:
    """The segments of a listing with their lengths (one round trip; two for a site's failed jobs of one queue)."""
    b = bench.bench_id
    names = [wanted.queue] if wanted.queue else list(bench.queues)
    site = wanted.site or None
    redis = bench.redis()
    if wanted.status == "failed" and site and wanted.queue:
        found = broker(bench).failed_ids(wanted.queue, site)
        return [_Segment(wanted.queue, "ids", "", len(found), tuple((i, None) for i in reversed(found)))]
    if wanted.status == "failed" and site:
        key = keys.site_failed(b, site)
        return [_Segment("", "zrev", key, int(redis.zcard(key)))]
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            rq_name = keys.queue_name(b, name)
            if wanted.status == "queued" and site:
                pipe.llen(keys.site_queue(b, name, site))
            elif wanted.status == "queued":
                broker(bench)._depths(keys=[keys.queue_ring(b, name)], args=[keys.site_queue_prefix(b, name)],
                                      client=pipe)
            elif wanted.status == "running":
                pipe.zrange(keys.started_registry(rq_name), 0, -1)
            elif wanted.status == "scheduled" and site:
                pipe.zrange(keys.queue_scheduled(b, name), 0, -1, withscores=True)
            elif wanted.status == "scheduled":
                pipe.zcard(keys.queue_scheduled(b, name))
            else:  # failed, every site
                pipe.zcard(keys.failed_registry(rq_name))
        answers = pipe.execute()
    segments: list[_Segment] = []
    prefix = keys.site_job_prefix(site) if site else ""
    for name, answer in zip(names, answers):
        rq_name = keys.queue_name(b, name)
        if wanted.status == "queued" and site:
            segments.append(_Segment(name, "list", keys.site_queue(b, name, site), int(answer)))
        elif wanted.status == "queued":
            for owner, depth in zip(answer[::2], answer[1::2]):
                segments.append(_Segment(name, "list", keys.site_queue(b, name, text(owner) or ""), int(depth)))
        elif wanted.status == "running":
            started: list[tuple[str, float | None]] = [
                (i, None) for i in (entry.split(":", 1)[0] for entry in (text(e) or "" for e in answer))
                if i.startswith(prefix)]
            segments.append(_Segment(name, "ids", "", len(started), tuple(started)))
        elif wanted.status == "scheduled" and site:
            delayed: list[tuple[str, float | None]] = [
                (_member_id(m), float(score)) for m, score in answer if (text(m) or "").startswith(site + " ")]
            segments.append(_Segment(name, "ids", "", len(delayed), tuple(delayed)))
        elif wanted.status == "scheduled":
            segments.append(_Segment(name, "zset", keys.queue_scheduled(b, name), int(answer), members_have_site=True))
        else:
            segments.append(_Segment(name, "zrev", keys.failed_registry(rq_name), int(answer)))
    return [s for s in segments if s.length]


def _member_id(member: Any) -> str:
    return (text(member) or "").partition(" ")[2]


def _read(bench: Bench, segments: list[_Segment], offset: int, limit: int) -> list[tuple[str, float | None]]:
    """``(rq id, score)`` of entries ``offset`` .. ``offset + limit`` of the segments (one round trip)."""
    plan: list[tuple[_Segment, int, int]] = []
    start = 0
    for segment in segments:
        end = start + segment.length
        if end > offset and start < offset + limit:
            first = max(0, offset - start)
            last = min(segment.length, offset + limit - start) - 1
            plan.append((segment, first, last))
        start = end
        if start >= offset + limit:
            break
    with bench.redis().pipeline(transaction=False) as pipe:
        for segment, first, last in plan:
            if segment.kind == "list":
                pipe.lrange(segment.key, first, last)
            elif segment.kind == "zset":
                pipe.zrange(segment.key, first, last, withscores=True)
            elif segment.kind == "zrev":
                pipe.zrevrange(segment.key, first, last)
        answers = iter(pipe.execute())
    found: list[tuple[str, float | None]] = []
    for segment, first, last in plan:
        if segment.kind == "ids":
            found.extend(segment.ids[first:last + 1])
        elif segment.kind == "zset":
            found.extend((_member_id(m), float(s)) for m, s in next(answers))
        else:
            found.extend((text(i) or "", None) for i in next(answers))
    return found


def _scan_for_method(bench: Bench, segments: list[_Segment], method: str,
                     enough: int) -> tuple[list[tuple[str, float | None]], int, bool]:
    """Entries whose job runs ``method``, in listing order: until ``enough`` matched or the scan bound.

    Returns the matches, how many jobs were looked at, and whether that was all of them.
    """
    total = sum(s.length for s in segments)
    matched: list[tuple[str, float | None]] = []
    scanned = 0
    redis = bench.redis()
    while scanned < total and scanned < METHOD_SCAN_LIMIT and len(matched) < enough:
        chunk = _read(bench, segments, scanned, min(CHUNK, METHOD_SCAN_LIMIT - scanned))
        if not chunk:
            break
        with redis.pipeline(transaction=False) as pipe:
            for rq_id, _ in chunk:
                pipe.hget(keys.rq_job(rq_id), "data")
            datas = pipe.execute()
        matched.extend(e for e, data in zip(chunk, datas) if payload(data).get("method") == method)
        scanned += len(chunk)
    return matched, scanned, scanned >= total


def _rows(bench: Bench, status: str, entries: list[tuple[str, float | None]]) -> list[JobRow]:
    """The rows of ``entries`` from their job hashes (and, for failed jobs, their last result): one round trip."""
    with bench.redis().pipeline(transaction=False) as pipe:
        for rq_id, _ in entries:
            pipe.hmget(keys.rq_job(rq_id), _FIELDS)
            if status == "failed":
                pipe.xrevrange(keys.rq_results(rq_id), count=1)
        answers = pipe.execute()
    step = 2 if status == "failed" else 1
    rows = []
    for index, (rq_id, score) in enumerate(entries):
        data, origin, state, enqueued, started, ended, worker = answers[step * index]
        if state is None:
            continue  # gone meanwhile (finished, deleted, expired)
        call = payload(data)
        method = call.get("method") if isinstance(call.get("method"), str) else None
        inner = call.get("kwargs") if isinstance(call.get("kwargs"), dict) else None
        name = call.get("job_name") if isinstance(call.get("job_name"), str) else None
        error = None
        if status == "failed" and answers[step * index + 1]:
            error = last_line(exc_string(answers[step * index + 1][0][1]))
        rows.append(JobRow(
            rq_id=rq_id, job_id=keys.local_job_id(rq_id), site=keys.site_of_job(rq_id),
            queue=keys.queue_of(bench.bench_id, text(origin)), status=text(state) or status, method=method,
            job=job_label(method, name, inner) or rq_id, job_name=name or doc_label(method, inner), kwargs=inner, enqueued_at=rq_time(enqueued),
            started_at=rq_time(started), ended_at=rq_time(ended),
            due=datetime.fromtimestamp(score, timezone.utc) if score is not None and status == "scheduled" else None,
            worker=text(worker) or None, exception=error))
    return rows
