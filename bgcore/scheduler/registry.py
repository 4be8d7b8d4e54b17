"""The per-site event registry: tables ``scheduled_event`` and ``app_hooks``, and their sync.

``bgcore migrate`` calls :func:`sync_site` inside the site's migrate
transaction: it validates the hooks of every installed app first (one
:class:`~bgcore.errors.HooksError` listing every problem, nothing written),
then upserts new and changed events, deletes stale ones and stores each app's
hooks fingerprint. The scheduler reads the registry with
:func:`load_registry` and :func:`stored_fingerprints` and writes run results
with :func:`record_run`. All times are stored as UTC and read back aware.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bgcore import keys
from bgcore.bench import Bench
from bgcore.db.schema import metadata
from bgcore.db.types import UTCDateTime
from bgcore.errors import InvalidArgument, RedisUnavailable
from bgcore.scheduler.due import next_run, normalize_cron
from bgcore.scheduler.events import EventSpec, load_site_events

logger = logging.getLogger(__name__)

UTC = timezone.utc
DEFAULT_TIME_ZONE = "UTC"


scheduled_event = sa.Table(
    "scheduled_event",
    metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("app", sa.String(140), nullable=False),
    sa.Column("method", sa.String(255), nullable=False),
    sa.Column("frequency", sa.String(32), nullable=False),
    sa.Column("cron", sa.String(255), nullable=True),
    sa.Column("queue", sa.String(140), nullable=False),
    sa.Column("timeout", sa.Integer, nullable=True),
    sa.Column("stopped", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.Column("registered_at", UTCDateTime, nullable=False),
    sa.Column("last_execution", UTCDateTime, nullable=True),
    sa.Column("last_status", sa.String(32), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("next_run", UTCDateTime, nullable=True),
    # Per-site control ("Scheduled Job Type"): kept across migrate, which only rewrites the spec columns.
    sa.Column("cron_override", sa.String(255), nullable=True),
)

app_hooks = sa.Table(
    "app_hooks",
    metadata,
    sa.Column("app", sa.String(140), primary_key=True),
    sa.Column("path", sa.String(1024), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("migrated_at", UTCDateTime, nullable=False),
)

_SPEC_COLUMNS = tuple(f.name for f in fields(EventSpec))


@dataclass(frozen=True)
class RegisteredEvent(EventSpec):
    """An event as stored in the registry: its spec plus its run state."""

    registered_at: datetime
    last_execution: datetime | None = None
    last_status: str | None = None
    last_error: str | None = None
    next_run: datetime | None = None
    stopped: bool = False
    timeout: int | None = None
    cron_override: str | None = None

    @property
    def effective_cron(self) -> str | None:
        """The expression the scheduler follows: the site's override, else the hooks' (None: every tick)."""
        return self.cron_override or self.cron

    @property
    def spec(self) -> EventSpec:
        return EventSpec(**{name: getattr(self, name) for name in _SPEC_COLUMNS})

    @property
    def last_run_or_registration(self) -> datetime:
        """The time due-ness counts from: the last execution, else the registration."""
        return self.last_execution or self.registered_at


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_site` changed in one site's registry."""

    added: tuple[EventSpec, ...]
    updated: tuple[EventSpec, ...]
    removed: tuple[EventSpec, ...]
    apps: tuple[str, ...]
    site: str = ""
    hooks_changed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """True when any event or stored fingerprint changed."""
        return bool(self.added or self.updated or self.removed or self.hooks_changed)

    def __str__(self) -> str:
        text = f"added {len(self.added)}, updated {len(self.updated)}, removed {len(self.removed)}"
        listed = [f"{sign}{_label(spec)}" for sign, specs in (("+", self.added), ("~", self.updated),
                                                               ("-", self.removed)) for spec in specs]
        if listed:
            more = f", and {len(listed) - LISTED_EVENTS} more" if len(listed) > LISTED_EVENTS else ""
            text += f" ({', '.join(listed[:LISTED_EVENTS])}{more})"
        return text + (f"; hooks changed: {', '.join(self.hooks_changed)}" if self.hooks_changed else "")


LISTED_EVENTS = 10


def _label(spec: EventSpec) -> str:
    """``method [frequency]`` with the expression for cron keys, as a migrate line shows an event."""
    when = f"{spec.frequency} {spec.cron}" if spec.frequency.startswith("cron") else spec.frequency
    return f"{spec.method} [{when}]"


def site_time_zone(bench: Bench, site: str) -> str:
    """The site's ``time_zone`` (bench default, else UTC); :class:`ConfigError` if unknown."""
    return str(bench.site_config(site).setting("time_zone"))


def sync_site(
    bench: Bench, site: str, connection: Connection, now: datetime | None = None, *, notify: bool = True
) -> SyncReport:
    """Make ``site``'s registry match the hooks of its installed apps, in ``connection``'s transaction.

    Validates everything before writing: any problem raises one
    :class:`~bgcore.errors.HooksError` listing all of them and leaves the
    tables untouched. A second sync with unchanged hooks changes nothing.
    When something changed and ``notify`` is true, bumps
    ``keys.registry_version`` in Redis (a warning, not an error, when Redis is
    unreachable). A caller that commits later passes ``notify=False`` and bumps
    after its commit, so a daemon never reloads the rows before they are visible.
    """
    now = now or datetime.now(UTC)
    config = bench.site_config(site)
    bench.activate_import_path()
    tz = site_time_zone(bench, site)
    loaded = load_site_events(site, config.installed_apps, bench.queues)

    stored = {row.event_id: row for row in connection.execute(sa.select(scheduled_event))}
    wanted = {spec.event_id: spec for spec in loaded.events}
    added, updated = [], []
    for event_id, spec in wanted.items():
        values = {name: getattr(spec, name) for name in _SPEC_COLUMNS}
        row = stored.get(event_id)
        if row is None:
            next_at = next_run(spec.cron, now, tz) if spec.cron else None
            connection.execute(
                sa.insert(scheduled_event).values(event_id=event_id, registered_at=now, next_run=next_at, **values)
            )
            added.append(spec)
        elif any(getattr(row, name) != value for name, value in values.items()):
            connection.execute(sa.update(scheduled_event).where(scheduled_event.c.event_id == event_id).values(**values))
            updated.append(spec)
    removed = [_spec_of(row) for event_id, row in stored.items() if event_id not in wanted]
    if removed:
        stale = [spec.event_id for spec in removed]
        connection.execute(sa.delete(scheduled_event).where(scheduled_event.c.event_id.in_(stale)))

    hooks_changed = _sync_fingerprints(connection, loaded.hooks, now)
    report = SyncReport(
        added=tuple(added), updated=tuple(updated), removed=tuple(removed),
        apps=tuple(h.app for h in loaded.hooks), site=site, hooks_changed=hooks_changed,
    )
    logger.info("registry synced site=%s: %s", site, report)
    if notify and report.changed:
        bump_registry_version(bench, site)
    return report


def _spec_of(row: Any) -> EventSpec:
    return EventSpec(**{name: getattr(row, name) for name in _SPEC_COLUMNS})


def _sync_fingerprints(connection: Connection, hooks: Any, now: datetime) -> tuple[str, ...]:
    stored = {row.app: row for row in connection.execute(sa.select(app_hooks))}
    changed: list[str] = []
    for item in hooks:
        row = stored.pop(item.app, None)
        values = {"path": str(item.path), "fingerprint": item.fingerprint, "migrated_at": now}
        if row is None:
            connection.execute(sa.insert(app_hooks).values(app=item.app, **values))
            changed.append(item.app)
        elif row.fingerprint != item.fingerprint or row.path != str(item.path):
            connection.execute(sa.update(app_hooks).where(app_hooks.c.app == item.app).values(**values))
            changed.append(item.app)
    if stored:
        connection.execute(sa.delete(app_hooks).where(app_hooks.c.app.in_(list(stored))))
        changed.extend(stored)
    return tuple(changed)


def bump_registry_version(bench: Bench, site: str) -> int | None:
    """Increment the site's registry version in Redis; None (and a log line) if there is no Redis.

    A bench with no Redis at all (no ``redis_queue`` and no private Redis
    running, as on a first ``bgcore migrate`` before ``bgcore start``) has no
    scheduler to tell: a daemon reads every registry when it starts, so this is
    logged at DEBUG only. A configured or running Redis that does not answer
    is a WARNING: a daemon already running keeps the old events.
    """
    try:
        client = bench.redis()
    except RedisUnavailable as exc:
        logger.debug("site=%s registry changed; no Redis to notify (%s)", site, exc)
        return None
    try:
        return int(client.incr(keys.registry_version(bench.bench_id, site)))
    except Exception as exc:  # noqa: BLE001 - Redis being down must not fail migrate
        logger.warning(
            "site=%s registry changed but Redis is unreachable (%s); a scheduler that is already running "
            "keeps the old events: restart the scheduler, or run bgcore migrate again once Redis is up",
            site, exc,
        )
        return None


def load_registry(connection: Connection) -> list[RegisteredEvent]:
    """Every registered event of the connection's site, ordered by app, frequency and method."""
    query = sa.select(scheduled_event).order_by(
        scheduled_event.c.app, scheduled_event.c.frequency, scheduled_event.c.method, scheduled_event.c.event_id
    )
    return [
        RegisteredEvent(
            app=row.app, method=row.method, frequency=row.frequency, cron=row.cron, queue=row.queue,
            registered_at=row.registered_at, last_execution=row.last_execution, last_status=row.last_status,
            last_error=row.last_error, next_run=row.next_run, stopped=bool(row.stopped), timeout=row.timeout,
            cron_override=row.cron_override,
        )
        for row in connection.execute(query)
    ]


def stored_fingerprints(connection: Connection) -> dict[str, str]:
    """App -> sha256 of its ``hooks.py`` at the last migrate."""
    return {row.app: row.fingerprint for row in connection.execute(sa.select(app_hooks.c.app, app_hooks.c.fingerprint))}


def record_run(
    connection: Connection, event_id: str, status: str, at: datetime | None,
    error: str | None = None, *, next_at: datetime | None = None,
) -> bool:
    """Record a run of ``event_id``: ``last_status``, ``last_error`` and ``last_execution``.

    ``at`` is the due time of the occurrence that ran (None for a run that is
    not an occurrence, such as a triggered one: the schedule does not move).
    ``last_execution`` only moves forward, so a late report of an older run
    never rewinds it. ``next_at`` (optional) stores the next scheduled time as
    well. Returns False when the event is not (or no longer) registered.
    """
    column = scheduled_event.c.last_execution
    values: dict[str, Any] = {"last_status": status, "last_error": error}
    if at is not None:
        later = sa.bindparam(None, at, type_=UTCDateTime)
        values["last_execution"] = sa.case((sa.or_(column.is_(None), column < later), later), else_=column)
    if next_at is not None:
        values["next_run"] = next_at
    result = connection.execute(sa.update(scheduled_event).where(scheduled_event.c.event_id == event_id).values(**values))
    return bool(result.rowcount)


def set_event_control(connection: Connection, event_id: str, *, stopped: bool | None = None,
                      cron_override: str | None = None, reset_cron: bool = False) -> bool:
    """Stop or start one event of the connection's site, and/or override or reset its cron expression.

    ``cron_override`` is normalised first (:class:`~bgcore.errors.InvalidCron`
    for a bad one). Kept across ``bgcore migrate``. Returns False for an unknown
    event. The caller bumps the registry version after its commit, so a running
    daemon reloads the site.
    """
    values: dict[str, Any] = {}
    if stopped is not None:
        values["stopped"] = stopped
    if reset_cron:
        values["cron_override"] = None
    elif cron_override is not None:
        values["cron_override"] = normalize_cron(cron_override)
    if not values:
        raise InvalidArgument("nothing to change: give stopped, cron_override or reset_cron")
    result = connection.execute(
        sa.update(scheduled_event).where(scheduled_event.c.event_id == event_id).values(**values))
    return bool(result.rowcount)
