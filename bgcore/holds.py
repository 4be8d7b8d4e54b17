"""Holding a site's jobs: the ``hold_jobs`` key of its ``site_config.json``.

While ``hold_jobs`` is on (say, during an upgrade of the site), workers are to
leave that site's queued jobs in its queues and run them once it is off again;
``bgcore enqueue`` still queues new jobs but warns that they wait. The key is
read through :meth:`Bench.site_config` (mtime-cached), like the scheduler
switches, so setting it takes effect without a restart. Set in
``common_site_config.json`` it holds every site that does not turn it off.

Workers see holds through a Redis set (``keys.held_sites``) that the take
script reads: a held site's turn passes and its jobs stay queued. The set is
kept in step with the configs by :func:`set_hold` (at once) and by
:func:`sync_holds`, which every pool runs when it starts and at its heartbeats
(so a hand edit of ``site_config.json`` takes effect within seconds too).
"""

from __future__ import annotations

import logging
from pathlib import Path

import redis

from bgcore.bench import Bench, SiteConfig
from bgcore.config import SITE_CONFIG, read_json_config
from bgcore.errors import BgcoreError
from bgcore.rqbridge import broker

logger = logging.getLogger(__name__)

HOLD_JOBS = "hold_jobs"


def hold_jobs(config: SiteConfig) -> bool:
    """Whether ``config``'s site holds its jobs (``hold_jobs`` on in its merged config)."""
    return bool(config.setting(HOLD_JOBS))


def set_hold(bench: Bench, site: str, on: bool) -> Path:
    """Turn ``hold_jobs`` on or off in ``site``'s own ``site_config.json`` (atomic replace); return the file.

    Off removes the key, or writes ``false`` when the bench config holds every site.
    """
    from bgcore.scheduler.switches import write_json_atomic

    bench.site_config(site)  # SiteNotFound / InvalidSiteName / ConfigError, with their messages
    path = bench.site_path(site) / SITE_CONFIG
    data = read_json_config(path, required=True)
    if on:
        data[HOLD_JOBS] = True
    elif bench.settings.get(HOLD_JOBS):
        data[HOLD_JOBS] = False
    else:
        data.pop(HOLD_JOBS, None)
    write_json_atomic(path, data)
    try:
        broker(bench).hold(site, on, list(bench.queues))
    except redis.RedisError as exc:  # the file is what counts: pools catch up at their next heartbeat
        logger.warning("site=%s hold_jobs written to %s; Redis not told yet (%s): workers follow within a "
                       "heartbeat of it answering", site, path, exc)
    return path


def sync_holds(bench: Bench) -> set[str]:
    """Make the Redis set of held sites match the sites' configs; return the held sites.

    A site whose config cannot be read keeps its current state.
    """
    wanted: set[str] = set()
    unreadable: set[str] = set()
    for site in bench.site_names():
        try:
            if hold_jobs(bench.site_config(site)):
                wanted.add(site)
        except BgcoreError:
            unreadable.add(site)
    b = broker(bench)
    current = b.held()
    for site in (current - wanted) - unreadable:
        b.hold(site, False, list(bench.queues))
    for site in wanted - current:
        b.hold(site, True, list(bench.queues))
    return wanted | (current & unreadable)
