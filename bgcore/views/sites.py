"""The sites table: each site's queued, running and failed counts, its scheduler switch, its config error."""

from __future__ import annotations

from dataclasses import dataclass

from bgcore import keys
from bgcore.bench import Bench
from bgcore.errors import BgcoreError
from bgcore.scheduler.status import config_error
from bgcore.scheduler.switches import Switch, blocking_switch
from bgcore.views import Page
from bgcore.views.common import text
from bgcore.views.queues import queue_counts

SWITCH_STATES = ("enabled", "disabled", "paused", "maintenance")
_STATE_OF = {Switch.MAINTENANCE: "maintenance", Switch.PAUSED: "paused", Switch.DISABLED: "disabled"}
SORT_KEYS = ("site", "queued", "running", "failed", "scheduler")


@dataclass(frozen=True)
class SiteRow:
    """One site as the sites table shows it. ``scheduler`` is one of :data:`SWITCH_STATES`."""

    site: str
    queued: int
    running: int
    failed: int
    scheduler: str
    error: str | None = None


def switch_state(switch: Switch | None) -> str:
    """``enabled``, or the name of the strongest switch that stops the site's scheduler."""
    return _STATE_OF[switch] if switch is not None else "enabled"


def site_rows(bench: Bench, *, search: str = "", scheduler: str | None = None, errors_only: bool = False,
              sort: str = "site", descending: bool = False, offset: int = 0, limit: int = 50) -> Page[SiteRow]:
    """One page of the bench's sites, filtered by name (substring), switch state or errors, then sorted.

    Every site is looked at (its config is mtime-cached; its failed count is one
    ZCARD of its failed index, all in one pipeline), so sorting by a count is exact;
    the cost grows with the number of sites, never with the number of jobs.
    """
    if sort not in SORT_KEYS:
        sort = "site"
    names = [n for n in bench.site_names() if search.lower() in n.lower()]
    queued: dict[str, int] = {}
    for counts in queue_counts(bench):
        for site, n in counts.per_site.items():
            queued[site] = queued.get(site, 0) + n
    running = _running_per_site(bench)
    redis = bench.redis()
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(keys.site_failed(bench.bench_id, name))
        pipe.hgetall(keys.scheduler_site_errors(bench.bench_id))
        *failed, published = pipe.execute()
    refused = {text(k): text(v) for k, v in published.items()}
    rows = []
    for name, n_failed in zip(names, failed):
        try:
            config = bench.site_config(name)
            switch = blocking_switch(config)
            state, error = switch_state(switch), config_error(config) or refused.get(name)
        except BgcoreError as exc:
            state, error = "enabled", str(exc)
        rows.append(SiteRow(site=name, queued=queued.get(name, 0), running=running.get(name, 0),
                            failed=int(n_failed), scheduler=state, error=error))
    if scheduler in SWITCH_STATES:
        rows = [r for r in rows if r.scheduler == scheduler]
    if errors_only:
        rows = [r for r in rows if r.error]
    if sort != "site":
        rows.sort(key=lambda r: (getattr(r, sort), r.site), reverse=descending)
    elif descending:
        rows.reverse()
    return Page(rows=rows[offset:offset + limit], offset=offset, limit=limit, total=len(rows))


def _running_per_site(bench: Bench) -> dict[str, int]:
    """Jobs in every queue's started registry, counted per site (the registries hold only running jobs)."""
    with bench.redis().pipeline(transaction=False) as pipe:
        for name in bench.queues:
            pipe.zrange(keys.started_registry(keys.queue_name(bench.bench_id, name)), 0, -1)
        entries = [text(e) or "" for found in pipe.execute() for e in found]
    counts: dict[str, int] = {}
    for entry in entries:
        site = keys.site_of_job(entry.split(":", 1)[0])
        if site is not None:
            counts[site] = counts.get(site, 0) + 1
    return counts
