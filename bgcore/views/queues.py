"""Per-queue counts of a bench: queued (per site too), running, failed and scheduled."""

from __future__ import annotations

from dataclasses import dataclass, field

from bgcore import keys
from bgcore.bench import Bench
from bgcore.rqbridge import broker
from bgcore.views.common import text


@dataclass(frozen=True)
class QueueCounts:
    """What one queue holds now. ``per_site``: queued jobs of each site that has some."""

    name: str
    queued: int
    running: int
    failed: int
    scheduled: int
    per_site: dict[str, int] = field(default_factory=dict)


def queue_counts(bench: Bench, names: list[str] | None = None) -> list[QueueCounts]:
    """Every queue's counts, in priority order, in one pipelined round trip.

    Queued jobs are counted per site list (the cost grows with the sites that have
    jobs waiting, never with the jobs); running, failed and scheduled are the sizes
    of RQ's started and failed registries and of the queue's delayed set.
    """
    names = list(bench.queues) if names is None else names
    engine = broker(bench)
    with bench.redis().pipeline(transaction=False) as pipe:
        for name in names:
            rq_name = keys.queue_name(bench.bench_id, name)
            engine._depths(keys=[keys.queue_ring(bench.bench_id, name)],
                           args=[keys.site_queue_prefix(bench.bench_id, name)], client=pipe)
            pipe.zcard(keys.started_registry(rq_name))
            pipe.zcard(keys.failed_registry(rq_name))
            pipe.zcard(keys.queue_scheduled(bench.bench_id, name))
        answers = pipe.execute()
    found = []
    for index, name in enumerate(names):
        flat, running, failed, scheduled = answers[4 * index:4 * index + 4]
        per_site = {text(site) or "": int(n) for site, n in zip(flat[::2], flat[1::2])}
        found.append(QueueCounts(name=name, queued=sum(per_site.values()), running=int(running),
                                 failed=int(failed), scheduled=int(scheduled), per_site=per_site))
    return found
