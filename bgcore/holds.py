"""Holding a site's jobs: the ``hold_jobs`` key of its ``site_config.json``.

While ``hold_jobs`` is on (say, during an upgrade of the site), workers are to
leave that site's queued jobs in its queues and run them once it is off again;
``bgcore enqueue`` still queues new jobs but warns that they wait. The key is
read through :meth:`Bench.site_config` (mtime-cached), like the scheduler
switches, so setting it takes effect without a restart. Set in
``common_site_config.json`` it holds every site that does not turn it off.

The workers' side of the hold belongs to the worker engine (``bgcore.engine``);
this module is the switch and its reading.
"""

from __future__ import annotations

from pathlib import Path

from bgcore.bench import Bench, SiteConfig
from bgcore.config import SITE_CONFIG, read_json_config

HOLD_JOBS = "hold_jobs"


def _on(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def hold_jobs(config: SiteConfig) -> bool:
    """Whether ``config``'s site holds its jobs (``hold_jobs`` on in its merged config)."""
    return _on(config.get(HOLD_JOBS))


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
    elif _on(bench.common_config.get(HOLD_JOBS)):
        data[HOLD_JOBS] = False
    else:
        data.pop(HOLD_JOBS, None)
    write_json_atomic(path, data)
    return path
