"""Every Redis name bgcore uses, built in one place.

All names are namespaced by the bench id, so two benches can share one Redis
without seeing each other's queues, jobs or scheduler state.

Job ids carry their site. RQ only accepts ``[A-Za-z0-9_-]`` in job ids, so the
``<site>||<id>`` of the reference system is written ``<site>__<id>`` with a
reversible escape (``_`` -> ``_u``, ``.`` -> ``_d``): an escaped part never
contains ``__``, so the split is exact and ``erp`` never matches ``erp2``.
"""

from __future__ import annotations

import re

from bgcore.errors import InvalidArgument

SITE_SEPARATOR = "__"
_LOCAL_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def _escape(text: str) -> str:
    return text.replace("_", "_u").replace(".", "_d")


def _unescape(text: str) -> str:
    return re.sub(r"_([ud])", lambda m: "_" if m.group(1) == "u" else ".", text)


def check_local_id(local_id: str) -> str:
    """Return ``local_id`` if usable as a job id, else :class:`InvalidArgument`."""
    if not isinstance(local_id, str) or not _LOCAL_ID.fullmatch(local_id):
        raise InvalidArgument(
            f"job_id {local_id!r} is not valid: use 1-200 letters, digits, '_', '-' or '.'"
        )
    return local_id


def queue_name(bench_id: str, queue: str) -> str:
    """The RQ queue name of ``queue`` in bench ``bench_id`` (``<bench>:<queue>``)."""
    return f"{bench_id}:{queue}"


def queue_prefix(bench_id: str) -> str:
    """The prefix shared by all RQ queue names of a bench."""
    return f"{bench_id}:"


def queue_of(bench_id: str, rq_queue_name: str | None) -> str | None:
    """The bench queue an RQ queue name stands for (``None`` for a queue of another bench)."""
    prefix = queue_prefix(bench_id)
    if not rq_queue_name or not rq_queue_name.startswith(prefix):
        return None
    return rq_queue_name[len(prefix):]


def job_id(site: str, local_id: str) -> str:
    """The RQ job id of job ``local_id`` in ``site``."""
    return f"{_escape(site)}{SITE_SEPARATOR}{_escape(local_id)}"


def site_job_prefix(site: str) -> str:
    """The prefix every RQ job id of ``site`` starts with (and no other site's does)."""
    return _escape(site) + SITE_SEPARATOR


def site_of_job(rq_job_id: str) -> str | None:
    """The site part of an RQ job id, or ``None`` for a job bgcore did not make."""
    site, sep, _ = rq_job_id.partition(SITE_SEPARATOR)
    return _unescape(site) if sep else None


def local_job_id(rq_job_id: str) -> str:
    """The part of an RQ job id after its site, as the caller gave it."""
    _, sep, local = rq_job_id.partition(SITE_SEPARATOR)
    return _unescape(local) if sep else rq_job_id


def bench_key(bench_id: str, *parts: str) -> str:
    """A bgcore-owned key of a bench: ``bgcore:<bench>:<part>:...``."""
    return ":".join(("bgcore", bench_id, *parts))


def site_key(bench_id: str, site: str, *parts: str) -> str:
    """A bgcore-owned key of one site: ``bgcore:<bench>:site:<site>:<part>:...``."""
    return bench_key(bench_id, "site", site, *parts)


def registry_version(bench_id: str, site: str) -> str:
    """Counter bumped by ``bgcore migrate`` when a site's event registry changed."""
    return site_key(bench_id, site, "registry_version")


# -- scheduler daemon (issue 4b) ---------------------------------------------


def scheduler_lease(bench_id: str) -> str:
    """String key: the holder (``host:pid:uuid``) of the bench's scheduler lease."""
    return bench_key(bench_id, "scheduler", "lease")


def scheduler_occurrence(bench_id: str, site: str, occurrence_id: str) -> str:
    """Claim key of one occurrence (event + due time) of ``site``; set once, with a TTL."""
    return site_key(bench_id, site, "occurrence", occurrence_id)


def scheduler_last_run(bench_id: str, site: str) -> str:
    """Hash: event id -> epoch seconds of the occurrence last enqueued for it."""
    return site_key(bench_id, site, "scheduler", "last_run")


def scheduler_last_job(bench_id: str, site: str) -> str:
    """Hash: event id -> RQ job id of its last enqueued run (for overlap checks)."""
    return site_key(bench_id, site, "scheduler", "last_job")


def scheduler_site_errors(bench_id: str) -> str:
    """Hash: site -> why the scheduler daemon does not schedule it (cleared once the site loads)."""
    return bench_key(bench_id, "scheduler", "site_errors")


# -- worker engine (issue 7): fair per-site queues and the take/finish protocol ---------------------
#
# A bench queue ``q`` is no longer one RQ list. Each site with jobs waiting has its own list, and a
# ring lists the sites that have jobs waiting (each at most once); a worker takes from the site at
# the head of the ring and rotates it to the tail. See docs/engine.md.


def queue_ring(bench_id: str, queue: str) -> str:
    """List: the sites that have jobs waiting in ``queue``, in turn order (each site at most once)."""
    return bench_key(bench_id, "queue", queue, "ring")


def site_queue_prefix(bench_id: str, queue: str) -> str:
    """Prefix of the per-site job lists of ``queue``; the site name follows it."""
    return bench_key(bench_id, "queue", queue, "site") + ":"


def site_queue(bench_id: str, queue: str, site: str) -> str:
    """List: the ids of ``site``'s jobs waiting in ``queue``, oldest first."""
    return site_queue_prefix(bench_id, queue) + site


def queue_scheduled(bench_id: str, queue: str) -> str:
    """Sorted set: delayed jobs of ``queue`` (member ``"<site> <job id>"``, score = due epoch seconds)."""
    return bench_key(bench_id, "queue", queue, "scheduled")


def queue_wake(bench_id: str, queue: str) -> str:
    """List of wake-up tokens: each enqueue pushes one; idle workers block on it (bounded)."""
    return bench_key(bench_id, "queue", queue, "wake")


def site_failed(bench_id: str, site: str) -> str:
    """Sorted set: the RQ ids of ``site``'s failed jobs in every queue, scored like RQ's failed registries.

    Kept in step with the failed registries by the engine's scripts (finish adds, requeue and
    delete remove) and by retention; lets per-site listings and counts skip other sites' failures.
    """
    return site_key(bench_id, site, "failed")


def failed_indexed(bench_id: str, queue: str) -> str:
    """String key, set once the failures of ``queue`` made before the site failed index existed are indexed."""
    return bench_key(bench_id, "queue", queue, "failed_indexed")


def held_sites(bench_id: str) -> str:
    """Set: sites whose jobs workers leave queued (``hold_jobs``); kept in step with the site configs."""
    return bench_key(bench_id, "held_sites")


def bench_workers(bench_id: str) -> str:
    """Set: the names of the bench's horses that registered and were not yet forgotten (for recovery)."""
    return bench_key(bench_id, "workers")


def worker_processing(bench_id: str, worker: str) -> str:
    """List: the ids of the jobs worker (horse) ``worker`` has taken and not finished (at most one)."""
    return bench_key(bench_id, "worker", worker, "processing")


def started_registry(rq_queue_name: str) -> str:
    """RQ's StartedJobRegistry key of an RQ queue (entries ``<job id>:<execution id>``)."""
    return f"rq:wip:{rq_queue_name}"


def finished_registry(rq_queue_name: str) -> str:
    """RQ's FinishedJobRegistry key of an RQ queue."""
    return f"rq:finished:{rq_queue_name}"


def failed_registry(rq_queue_name: str) -> str:
    """RQ's FailedJobRegistry key of an RQ queue."""
    return f"rq:failed:{rq_queue_name}"


def rq_job(rq_job_id: str) -> str:
    """RQ's job hash."""
    return f"rq:job:{rq_job_id}"


def rq_results(rq_job_id: str) -> str:
    """RQ's result stream of a job (``Result`` entries, newest last)."""
    return f"rq:results:{rq_job_id}"


def rq_worker(worker: str) -> str:
    """RQ's worker registration hash."""
    return f"rq:worker:{worker}"


RQ_WORKERS = "rq:workers"


def rq_queue_workers(rq_queue_name: str) -> str:
    """RQ's set of the workers registered for an RQ queue."""
    return f"rq:workers:{rq_queue_name}"


def rq_legacy_queue(rq_queue_name: str) -> str:
    """The plain RQ list of a queue (jobs written by RQ itself or by bgcore before the engine)."""
    return f"rq:queue:{rq_queue_name}"


def scheduler_daemons(bench_id: str) -> str:
    """Hash of the bench's live scheduler daemons: holder -> JSON ``{"role", "seen", "last_tick"}``."""
    return bench_key(bench_id, "scheduler", "daemons")


# -- job metrics (issue 10): counters the lifecycle middleware adds up, read by /metrics and the dashboard ---------


def metrics_outcomes(bench_id: str, queue: str) -> str:
    """Hash: outcome (``finished``, ``failed``, ``timeout``, ``retried``, ``lost``) -> jobs of ``queue`` ever."""
    return bench_key(bench_id, "metrics", "queue", queue, "outcomes")


def metrics_durations(bench_id: str, queue: str) -> str:
    """Hash of ``queue``'s run-time histogram: ``le:<bound>`` -> runs in that bucket only, and ``sum`` (seconds)."""
    return bench_key(bench_id, "metrics", "queue", queue, "durations")


def metrics_minute(bench_id: str, minute: int) -> str:
    """Hash of one minute (epoch seconds of its start): ``<queue>:finished`` / ``<queue>:failed`` -> runs; expires."""
    return bench_key(bench_id, "metrics", "minute", str(minute))
