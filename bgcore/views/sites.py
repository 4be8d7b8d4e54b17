"""The sites table: each site's queued, running and failed counts, its scheduler switch, its config error."""

from __future__ import annotations

from dataclasses import dataclass

from bgcore import keys
from bgcore.bench import Bench
from bgcore.engine import scripts
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

    Only what the request needs is read for every site: the names always (one
    directory listing); every site's config (mtime-cached) only to filter by switch
    state or errors or to sort by switch; every site's failed count (one ZCARD of
    its failed index, all in one pipeline) only to sort by failed. Queued and running
    counts cost the same for any number of sites (the queues' rings and the started
    registries). The rows of the page get the rest. Nothing grows with the number of jobs.
    """
    if sort not in SORT_KEYS:
        sort = "site"
    names = [n for n in bench.site_names() if search.lower() in n.lower()]
    switches: dict[str, tuple[str, str | None]] = {}
    refused = _refused(bench)
    if scheduler in SWITCH_STATES or errors_only or sort == "scheduler":
        switches = {name: _switch_and_error(bench, name, refused) for name in names}
        names = [n for n in names if (scheduler not in SWITCH_STATES or switches[n][0] == scheduler)
                 and (not errors_only or switches[n][1])]
    queued = _queued_per_site(bench)
    running = _running_per_site(bench)
    failed = failed_per_site(bench, names) if sort == "failed" else {}
    if sort != "site":
        count = {"queued": queued, "running": running, "failed": failed}.get(sort)
        # names are sorted already; a stable sort keeps ties by name, ascending either way
        names.sort(key=lambda n: count.get(n, 0) if count is not None else switches[n][0], reverse=descending)
    elif descending:
        names.reverse()
    shown = names[offset:offset + limit]
    if sort != "failed":
        failed = failed_per_site(bench, shown)
    rows = []
    for name in shown:
        state, error = switches[name] if name in switches else _switch_and_error(bench, name, refused)
        rows.append(SiteRow(site=name, queued=queued.get(name, 0), running=running.get(name, 0),
                            failed=failed.get(name, 0), scheduler=state, error=error))
    return Page(rows=rows, offset=offset, limit=limit, total=len(names))


def _switch_and_error(bench: Bench, name: str, refused: dict[str | None, str | None]) -> tuple[str, str | None]:
    """The site's switch state and its config error (its own, else what the scheduler daemon published)."""
    try:
        config = bench.site_config(name)
        return switch_state(blocking_switch(config)), config_error(config) or refused.get(name)
    except BgcoreError as exc:
        return "enabled", str(exc)


def _refused(bench: Bench) -> dict[str | None, str | None]:
    """Site -> why the scheduler daemon refuses it (as it published)."""
    return {text(k): text(v) for k, v in bench.redis().hgetall(keys.scheduler_site_errors(bench.bench_id)).items()}


def _queued_per_site(bench: Bench) -> dict[str, int]:
    queued: dict[str, int] = {}
    for counts in queue_counts(bench):
        for site, n in counts.per_site.items():
            queued[site] = queued.get(site, 0) + n
    return queued


def failed_per_site(bench: Bench, names: list[str]) -> dict[str, int]:
    """Failed jobs of each of ``names`` (every queue), from their failed indexes: one script call."""
    if not names:
        return {}
    cached = bench.__dict__.get("_zcards_script")
    if cached is None:
        cached = bench.__dict__["_zcards_script"] = bench.redis().register_script(scripts.ZCARDS)
    bench_id = bench.bench_id
    found = cached(keys=[keys.site_failed(bench_id, name) for name in names])
    return {name: int(n) for name, n in zip(names, found)}


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
