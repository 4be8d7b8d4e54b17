"""The take/finish protocol over a bench's Redis: push, take, finish, requeue (docs/engine.md).

A :class:`Broker` belongs to one process (one Redis client). Each operation is
one Lua script, so one round trip: a no-op job costs a push, a take and a
finish. RQ's job hash and its started, finished and failed registries stay
true, so ``rq.job.Job.fetch(id)`` and RQ's registry classes read bgcore jobs.
"""

from __future__ import annotations

import json
import time
import zlib
from base64 import b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL
from rq.job import Job
from rq.results import Result
from rq.utils import as_text, utcformat

from bgcore import keys
from bgcore.engine import scripts

WAKE_CAP = 100
# Seconds past a job's timeout before its started-registry entry counts as expired for RQ's own
# cleanup; the pool kills an overdue horse long before that.
REGISTRY_GRACE = 60
Clock = Callable[[], float]


@dataclass(frozen=True)
class Taken:
    """A job a worker has taken: where it came from and the fields of its RQ job hash a worker needs."""

    queue: str  # the bench queue name
    job_id: str
    worker: str
    data: bytes | None  # RQ's compressed, serialized call
    timeout: int | None = None
    result_ttl: int | None = None
    failure_ttl: int | None = None
    retries: int = 0  # attempts already made before this one (RQ's number_of_retries)

    @property
    def site(self) -> str | None:
        return keys.site_of_job(self.job_id)

    def payload(self) -> dict[str, Any]:
        """The keyword arguments RQ's job data holds for ``execute_job`` (``{}`` if not a bgcore job).

        Read straight from the hash the take returned: no round trip, and none of
        ``Job.restore``'s date parsing on the hot path.
        """
        try:
            _func, _instance, _args, kwargs = json.loads(zlib.decompress(self.data or b""))
        except Exception:  # noqa: BLE001 - a job another program wrote: not ours to run
            return {}
        return kwargs if isinstance(kwargs, dict) else {}



class Broker:
    """The take/finish protocol of one bench (``bench_id``) over ``redis``."""

    def __init__(self, redis: Any, bench_id: str, *, clock: Clock = time.time) -> None:
        self.redis = redis
        self.bench_id = bench_id
        self.clock = clock
        self._push = redis.register_script(scripts.PUSH)
        self._take = redis.register_script(scripts.TAKE)
        self._finish = redis.register_script(scripts.FINISH)
        self._finish_take = redis.register_script(scripts.FINISH_TAKE)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._purge = redis.register_script(scripts.PURGE)
        self._depths = redis.register_script(scripts.DEPTHS)
        self._failed_job = redis.register_script(scripts.FAILED_JOB)
        self._take_keys: dict[tuple[str, tuple[str, ...]], tuple[list[str], list[Any]]] = {}
        self.next_due: float | None = None  # after a take found nothing: when the next delayed job is due

    # -- enqueue ----------------------------------------------------------------------------
    def push(self, job: Job, site: str, queue: str, *, at_front: bool = False, unique: bool = False,
             due: float | None = None, pipeline: Any = None) -> Any:
        """Write ``job``'s hash (status queued) and put it on ``site``'s list of ``queue``.

        With ``due`` (epoch seconds), the job waits as ``scheduled`` until then; the first
        take after its time moves it to its list. Returns True, or False when ``unique``
        and a job with this id is still queued, scheduled or running. With ``pipeline``,
        the push is added to it and its answer comes from ``pipeline.execute()``.
        """
        fields: list[Any] = []
        for name, value in job.to_dict().items():
            fields += (name, value if value is not None else "")
        answer = self._push(
            keys=[job.key, keys.site_queue(self.bench_id, queue, site), keys.queue_ring(self.bench_id, queue),
                  keys.queue_wake(self.bench_id, queue), keys.queue_scheduled(self.bench_id, queue)],
            args=[site, job.id, int(at_front), int(unique), WAKE_CAP, repr(float(due)) if due else 0, *fields],
            client=pipeline if pipeline is not None else self.redis,
        )
        return answer if pipeline is not None else bool(answer)

    # -- take ---------------------------------------------------------------------------------
    def take(self, worker: str, queues: Sequence[tuple[str, int]]) -> Taken | None:
        """Take the next job from ``queues`` (``(name, default timeout)``, priority order), fairly by site.

        Ids whose job is no longer queued (deleted, or cancelled with RQ's ``Job.cancel()``) are
        dropped on the way, never run. ``None`` means every one of ``queues`` is empty.
        """
        while True:
            key_list, args = self._take_call(worker, queues)
            answer = self._take(keys=key_list, args=args)
            if answer is None or int(answer[0]) != 0:
                return self._taken(answer, queues, worker)
            # {0}: the script skipped its bound of deleted or cancelled ids while more ids wait;
            # the queues are not empty, so take again (each call stays O(1)).

    def finish_and_take(self, worker: str, job_id: str, queue: str, queues: Sequence[tuple[str, int]], *,
                        result: Any = None, error: str | None = None, started: float | None = None,
                        ttl: int | None = None, retry_at: float | None = None) -> tuple[bool, Taken | None]:
        """:meth:`finish` the job, then :meth:`take` the next one, in one round trip (a busy horse's loop)."""
        finish_keys, finish_args = self._finish_call(worker, job_id, queue, result, error, started, ttl, retry_at)
        take_keys, take_args = self._take_call(worker, queues)
        ended, answer = self._finish_take(keys=[*finish_keys, *take_keys],
                                          args=[len(finish_args), *finish_args, *take_args])
        if answer is not None and int(answer[0]) == 0:
            return bool(ended), self.take(worker, queues)
        return bool(ended), self._taken(answer, queues, worker)

    def _take_call(self, worker: str, queues: Sequence[tuple[str, int]]) -> tuple[list[str], list[Any]]:
        names = tuple(name for name, _ in queues)
        cached = self._take_keys.get((worker, names))
        if cached is None:
            rq_names = [keys.queue_name(self.bench_id, name) for name in names]
            key_list = [keys.worker_processing(self.bench_id, worker),
                        *(keys.queue_ring(self.bench_id, n) for n in names),
                        *(keys.started_registry(n) for n in rq_names),
                        *(keys.queue_wake(self.bench_id, n) for n in names),
                        *(keys.queue_scheduled(self.bench_id, n) for n in names),
                        keys.held_sites(self.bench_id)]
            tail = [*(keys.site_queue_prefix(self.bench_id, n) for n in names), *(t for _, t in queues)]
            cached = self._take_keys[(worker, names)] = (key_list, tail)
        key_list, tail = cached
        now = self.clock()
        return key_list, [len(names), now, _rq_time(now), worker, keys.rq_job(""), REGISTRY_GRACE, *tail]

    def _taken(self, answer: Any, queues: Sequence[tuple[str, int]], worker: str) -> Taken | None:
        """The job a take answered with; on "nothing", remember when the next delayed job is due."""
        self.next_due = None
        if not answer:
            return None
        if int(answer[0]) == -1:
            self.next_due = float(answer[1])
            return None
        index, job_id, data, timeout, result_ttl, failure_ttl, retries = answer
        return Taken(queue=queues[int(index) - 1][0], job_id=as_text(job_id), worker=worker, data=data,
                     timeout=_number(timeout), result_ttl=_number(result_ttl), failure_ttl=_number(failure_ttl),
                     retries=_number(retries) or 0)

    def wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until a job may be waiting in ``queues`` (an enqueue's wake token) or ``timeout``.

        A read timeout of the connection itself (redis-py's default socket timeout is 5 s)
        counts as "nothing came": a Redis that is really away shows at the next take.
        """
        wake = [keys.queue_wake(self.bench_id, name) for name in queues]
        try:
            return self.redis.blpop(wake, timeout=timeout) is not None
        except redis.TimeoutError:
            return False

    # -- finish -------------------------------------------------------------------------------
    def finish(self, worker: str, job_id: str, queue: str, *, result: Any = None, error: str | None = None,
               started: float | None = None, ttl: int | None = None, retry_at: float | None = None) -> bool:
        """End job ``job_id`` that ``worker`` took from ``queue``: finished with ``result``, or failed with ``error``.

        With ``retry_at`` (epoch seconds) a failed job is not ended but put back, in its
        list at once or as a delayed job until then, with one more attempt counted.
        ``ttl`` defaults to RQ's result TTL (500 s) or failure TTL (a year). Returns False
        when the job was no longer this worker's (failed or deleted by someone else).
        """
        key_list, args = self._finish_call(worker, job_id, queue, result, error, started, ttl, retry_at)
        return bool(self._finish(keys=key_list, args=args))

    def _finish_call(self, worker: str, job_id: str, queue: str, result: Any, error: str | None,
                     started: float | None, ttl: int | None,
                     retry_at: float | None = None) -> tuple[list[str], list[Any]]:
        now = self.clock()
        failed = error is not None
        if ttl is None:
            ttl = DEFAULT_FAILURE_TTL if failed else DEFAULT_RESULT_TTL
        kind = Result.Type.FAILED if failed else Result.Type.SUCCESSFUL
        if retry_at is not None:
            kind = Result.Type.RETRIED
        fields = _result_entry(kind, worker, None if failed else result, error, started, now)
        rq_name = keys.queue_name(self.bench_id, queue)
        target = keys.failed_registry(rq_name) if failed else keys.finished_registry(rq_name)
        site = keys.site_of_job(job_id) or ""
        key_list = [keys.rq_job(job_id), keys.started_registry(rq_name), target,
                    keys.worker_processing(self.bench_id, worker), keys.rq_results(job_id),
                    keys.site_queue(self.bench_id, queue, site), keys.queue_ring(self.bench_id, queue),
                    keys.queue_wake(self.bench_id, queue), keys.queue_scheduled(self.bench_id, queue),
                    keys.site_failed(self.bench_id, site)]
        outcome = "retry" if retry_at is not None else "failed" if failed else "finished"
        return key_list, [worker, job_id, now, _rq_time(now), ttl, outcome, repr(float(retry_at or 0)), site, *fields]

    def requeue(self, worker: str, job_id: str, queue: str) -> bool:
        """Put back a job ``worker`` took but did not start, at the head of its site's list."""
        site = keys.site_of_job(job_id) or ""
        rq_name = keys.queue_name(self.bench_id, queue)
        return bool(self._requeue(
            keys=[keys.rq_job(job_id), keys.started_registry(rq_name), keys.worker_processing(self.bench_id, worker),
                  keys.site_queue(self.bench_id, queue, site), keys.queue_ring(self.bench_id, queue),
                  keys.queue_wake(self.bench_id, queue)],
            args=[worker, job_id, site],
        ))

    def adopt_legacy(self, queue: str) -> int:
        """Move jobs left on RQ's plain list of ``queue`` (by RQ, or bgcore before its engine) to their sites.

        Ids that name no bgcore site are left on that list, in their order. Returns how many moved.
        """
        legacy = keys.rq_legacy_queue(keys.queue_name(self.bench_id, queue))
        moved, foreign = 0, []
        while (raw := self.redis.lpop(legacy)) is not None:
            job_id = as_text(raw)
            site = keys.site_of_job(job_id)
            if site is None:
                foreign.append(job_id)
                continue
            self._push(keys=[keys.rq_job(job_id), keys.site_queue(self.bench_id, queue, site),
                             keys.queue_ring(self.bench_id, queue), keys.queue_wake(self.bench_id, queue),
                             keys.queue_scheduled(self.bench_id, queue)],
                       args=[site, job_id, 0, 0, WAKE_CAP, 0])
            moved += 1
        if foreign:
            self.redis.rpush(legacy, *foreign)
        return moved

    def index_failed(self, queue: str) -> int:
        """Add ``queue``'s failures from before the per-site failed index to it, once per bench; returns how many.

        Failures made since are indexed by the finish script itself; a pool runs this at start.
        """
        if self.redis.exists(keys.failed_indexed(self.bench_id, queue)):
            return 0
        entries = self.redis.zrange(keys.failed_registry(keys.queue_name(self.bench_id, queue)), 0, -1,
                                    withscores=True)
        with self.redis.pipeline(transaction=False) as pipe:
            for member, score in entries:
                site = keys.site_of_job(as_text(member))
                if site is not None:
                    pipe.zadd(keys.site_failed(self.bench_id, site), {member: score}, nx=True)
            pipe.set(keys.failed_indexed(self.bench_id, queue), "1")
            pipe.execute()
        return len(entries)

    def queue_of_job(self, job_id: str) -> str | None:
        """The bench queue a job belongs to (from its hash's ``origin``), or None if it is gone."""
        origin = self.redis.hget(keys.rq_job(job_id), "origin")
        return keys.queue_of(self.bench_id, as_text(origin)) if origin is not None else None

    def hold(self, site: str, on: bool, queues: Sequence[str]) -> None:
        """Mark ``site``'s jobs held (takes pass its turns) or released (idle horses of ``queues`` are woken)."""
        if on:
            self.redis.sadd(keys.held_sites(self.bench_id), site)
            return
        with self.redis.pipeline() as pipe:
            pipe.srem(keys.held_sites(self.bench_id), site)
            for name in queues:
                pipe.rpush(keys.queue_wake(self.bench_id, name), "1")
            pipe.execute()

    def held(self) -> set[str]:
        """The sites whose jobs are held."""
        return {as_text(s) for s in self.redis.smembers(keys.held_sites(self.bench_id))}

    def failed_ids(self, queue: str | None, site: str) -> list[str]:
        """Ids of ``site``'s failed jobs (of ``queue`` only, if given), oldest first.

        Read from the site's failed index (two round trips, O(the site's failures)), not
        from the queue's failed registry, which holds every site's.
        """
        ids = [as_text(m) for m in self.redis.zrange(keys.site_failed(self.bench_id, site), 0, -1)]
        if queue is None or not ids:
            return ids
        rq_name = keys.queue_name(self.bench_id, queue).encode()
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(keys.rq_job(job_id), "origin")
            origins = pipe.execute()
        return [i for i, origin in zip(ids, origins) if origin == rq_name]

    def settle_failed(self, job_id: str, queue: str, *, delete: bool) -> bool:
        """A failed job back to the tail of its site's list (``delete=False``: attempts start again), or deleted."""
        site = keys.site_of_job(job_id) or ""
        rq_name = keys.queue_name(self.bench_id, queue)
        return bool(self._failed_job(
            keys=[keys.rq_job(job_id), keys.failed_registry(rq_name), keys.site_queue(self.bench_id, queue, site),
                  keys.queue_ring(self.bench_id, queue), keys.queue_wake(self.bench_id, queue), keys.rq_results(job_id),
                  keys.site_failed(self.bench_id, site)],
            args=[job_id, site, "delete" if delete else "requeue"],
        ))

    def processing(self, worker: str) -> list[str]:
        """The jobs ``worker`` has taken and not finished."""
        return [as_text(i) for i in self.redis.lrange(keys.worker_processing(self.bench_id, worker), 0, -1)]

    # -- looking at queues --------------------------------------------------------------------
    def depths(self, queue: str) -> dict[str, int]:
        """``site -> jobs waiting`` in ``queue``, for the sites that have any (one round trip)."""
        flat = self._depths(keys=[keys.queue_ring(self.bench_id, queue)],
                            args=[keys.site_queue_prefix(self.bench_id, queue)])
        return {as_text(site): int(n) for site, n in zip(flat[::2], flat[1::2])}

    def depth(self, queue: str, site: str | None = None) -> int:
        """Jobs waiting in ``queue`` (of ``site`` only, if given)."""
        if site is not None:
            return int(self.redis.llen(keys.site_queue(self.bench_id, queue, site)))
        return sum(self.depths(queue).values())

    def queued_ids(self, queue: str, site: str | None = None) -> list[str]:
        """Ids of the jobs waiting in ``queue`` (of ``site`` only), each site's in its order."""
        sites = [site] if site is not None else list(self.depths(queue))
        with self.redis.pipeline(transaction=False) as pipe:
            for name in sites:
                pipe.lrange(keys.site_queue(self.bench_id, queue, name), 0, -1)
            lists = pipe.execute()
        return [as_text(i) for ids in lists for i in ids]

    def scheduled(self, queue: str, site: str | None = None) -> list[tuple[str, float]]:
        """Delayed jobs of ``queue`` (of ``site`` only): ``(job id, due epoch seconds)``, soonest first.

        Reads the queue's whole scheduled set (a listing, not a hot path).
        """
        found = []
        for member, score in self.redis.zrange(keys.queue_scheduled(self.bench_id, queue), 0, -1, withscores=True):
            owner, _, job_id = as_text(member).partition(" ")
            if site is None or owner == site:
                found.append((job_id, float(score)))
        return found

    def purge(self, queue: str, site: str) -> list[str]:
        """Remove ``site``'s waiting and delayed jobs from ``queue`` (their hashes too); returns their ids."""
        ids = self._purge(keys=[keys.site_queue(self.bench_id, queue, site), keys.queue_ring(self.bench_id, queue),
                                keys.queue_scheduled(self.bench_id, queue)],
                          args=[site, keys.rq_job("")])
        return [as_text(i) for i in ids]


def _result_entry(kind: Result.Type, worker: str, value: Any, error: str | None, started: float | None,
                  ended: float) -> list[Any]:
    """An RQ ``Result`` stream entry as field, value pairs, as ``Result.serialize`` writes it.

    Written here rather than through ``Result(...)`` to keep RQ's serializer resolution off the
    hot path; ``Job.fetch(id).latest_result()`` reads it back (the engine tests check that).
    """
    fields: list[Any] = ["type", kind.value, "worker_name", worker]
    if error is not None:
        fields += ("exc_string", b64encode(zlib.compress(error.encode())).decode())
    if value is not None:
        fields += ("return_value", b64encode(json.dumps(value).encode()).decode())  # RQ's JSONSerializer
    if started:
        fields += ("execution_started_at", started)
    return [*fields, "execution_ended_at", ended]


def _rq_time(epoch: float) -> str:
    return utcformat(datetime.fromtimestamp(epoch, timezone.utc))


def _number(raw: Any) -> int | None:
    try:
        return int(raw) if raw not in (None, b"") else None
    except ValueError:
        return None


