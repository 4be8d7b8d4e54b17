"""Loading one site into the daemon's timetable: registry from the database, last runs from Redis.

This is the only place the daemon opens a site database, and only when the
site is new or changed (config file, bench config or registry version), never
per tick. Last runs live in Redis (``keys.scheduler_last_run``) and, durably,
in the registry (``last_execution``, written by the worker when a run starts):
each event counts from the later of the two (else its registration), so a
Redis flush never repeats an occurrence that already started. Redis is
seeded (``HSETNX``) with that value for events it lacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bgcore import keys
from bgcore.bench import Bench, SiteConfig
from bgcore.config import COMMON_CONFIG, SITE_CONFIG
from bgcore.errors import BgcoreError
from bgcore.scheduler.switches import Switch, blocking_switch
from bgcore.scheduler.timetable import SiteState, TimedEvent

logger = logging.getLogger(__name__)

DEFAULT_TICK_INTERVAL = 60.0
DEFAULT_TIME_ZONE = "UTC"


@dataclass(frozen=True)
class LoadResult:
    """A loaded site: its state when active, else the switch that stops it (or the error)."""

    name: str
    stamp: tuple[object, ...]
    state: SiteState | None = None
    switch: Switch | None = None
    error: str | None = None
    snapshot: RegistrySnapshot | None = None


def _mtime(path: Any) -> int:
    try:
        return int(path.stat().st_mtime_ns)
    except FileNotFoundError:
        return -1


def common_stamp(bench: Bench) -> int:
    """The bench config's mtime (part of every site's stamp)."""
    return _mtime(bench.sites_path / COMMON_CONFIG)


def site_stamp(bench: Bench, name: str, version: Any, common: int | None = None) -> tuple[object, ...]:
    """What a site looks like now: bench config mtime, site config mtime, registry version."""
    common = common_stamp(bench) if common is None else common
    return (common, _mtime(bench.sites_path / name / SITE_CONFIG), version)


def tick_interval(config: SiteConfig) -> float:
    """``scheduler_tick_interval`` of the site (site value over bench value; default 60 s; at most a day)."""
    interval: float = config.setting("scheduler_tick_interval")
    return interval


def read_registry(bench: Bench, config: SiteConfig) -> tuple[list[Any], dict[str, str]]:
    """The site's registered events and stored hooks fingerprints (one short DB connection)."""
    from bgcore.db.engines import database_for
    from bgcore.scheduler.registry import load_registry, stored_fingerprints

    database = database_for(bench, config)
    try:
        with database.connect() as connection:
            return load_registry(connection), stored_fingerprints(connection)
    except SQLAlchemyError as exc:
        raise database.unavailable(exc) from exc


@dataclass(frozen=True)
class RegistrySnapshot:
    """What the daemon read from a site's registry at ``version`` (reused while it stays the same)."""

    version: Any
    events: dict[str, TimedEvent]
    seeds: dict[str, float]
    fingerprints: dict[str, str]


def read_snapshot(bench: Bench, config: SiteConfig, version: Any) -> RegistrySnapshot:
    """The site's active events, their last-run seeds and hooks fingerprints, from its database."""
    events, fingerprints = read_registry(bench, config)
    active = [e for e in events if not e.stopped]
    return RegistrySnapshot(
        version=version,
        events={e.event_id: TimedEvent(event_id=e.event_id, method=e.method, queue=e.queue, cron=e.effective_cron,
                                       timeout=e.timeout, app=e.app, frequency=e.frequency) for e in active},
        seeds={e.event_id: e.last_run_or_registration.timestamp() for e in active},
        fingerprints=fingerprints,
    )


def load_site(bench: Bench, name: str, version: Any, cached: RegistrySnapshot | None = None) -> LoadResult:
    """Load site ``name`` for the timetable; never raises for a broken site (``error`` says why).

    The database is read only when ``cached`` is missing or was read at another
    registry version: a switch or config edit costs a config read and one
    Redis call, not a database connection.
    """
    stamp = site_stamp(bench, name, version)
    try:
        config = bench.site_config(name)
        switch = blocking_switch(config)
        if switch is not None:
            return LoadResult(name, stamp, switch=switch, snapshot=cached)
        interval = tick_interval(config)
        tz = str(config.setting("time_zone"))  # an unknown zone stops this site here, not every site's tick later
        apps = config.installed_apps
        reuse = cached is not None and version is not None and cached.version == version
        snapshot = cached if reuse and cached is not None else read_snapshot(bench, config, version)
    except BgcoreError as exc:
        return LoadResult(name, stamp, error=str(exc))
    last = _last_runs(bench, name, snapshot.seeds)
    state = SiteState(name=name, tz=tz, interval=interval, events=snapshot.events, last=last, stamp=stamp,
                      fingerprints=snapshot.fingerprints, apps=apps)
    return LoadResult(name, stamp, state=state, snapshot=snapshot)


def _last_runs(bench: Bench, site: str, seeds: dict[str, float]) -> dict[str, float]:
    """Each event's last run: the later of Redis's and the registry's; Redis gets what it lacks (HSETNX)."""
    key = keys.scheduler_last_run(bench.bench_id, site)
    stored = {k.decode(): float(v) for k, v in bench.redis().hgetall(key).items()}
    missing = {event_id: ts for event_id, ts in seeds.items() if event_id not in stored}
    if missing:
        logger.debug("site=%s: %d event(s) without a last run in Redis seeded from the registry", site, len(missing))
    if missing:
        with bench.redis().pipeline(transaction=False) as pipe:
            for event_id, ts in missing.items():
                pipe.hsetnx(key, event_id, repr(ts))
            pipe.execute()
    return {event_id: max(stored.get(event_id, seeds[event_id]), seeds[event_id]) for event_id in seeds}


def last_runs(bench: Bench, sites: list[str]) -> dict[str, dict[str, float]]:
    """Every given site's last runs from Redis, in one pipelined round trip."""
    with bench.redis().pipeline(transaction=False) as pipe:
        for site in sites:
            pipe.hgetall(keys.scheduler_last_run(bench.bench_id, site))
        answers = pipe.execute()
    return {site: {k.decode(): float(v) for k, v in answer.items()} for site, answer in zip(sites, answers)}
