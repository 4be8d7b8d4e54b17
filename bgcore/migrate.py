"""``bgcore migrate``: bring a site's database up to date, one site at a time.

:func:`migrate_site` runs :data:`STEPS` in order inside one transaction per
site (where the dialect allows DDL in transactions): first the schema upgrade
(create missing tables, add missing nullable columns, widen time
columns that drop microseconds), then the scheduler's
registry sync. Running it twice changes nothing the second time.
:func:`migrate_bench` migrates every site; one failing site does not stop the
others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateColumn

from bgcore.bench import Bench
from bgcore.db.engines import database_for
from bgcore.db.schema import metadata
from bgcore.db.types import UTCDateTime, lacks_fraction
from bgcore.errors import BgcoreError
from bgcore.scheduler.registry import bump_registry_version, sync_site  # also defines its tables

logger = logging.getLogger(__name__)



@dataclass
class MigrateReport:
    """What migrating one site did (``error`` set when it failed)."""

    site: str
    created_tables: list[str] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)
    widened_columns: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    registry_changed: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        if self.error:
            return f"{self.site}: FAILED: {self.error}"
        parts = [f"created tables {', '.join(self.created_tables)}" if self.created_tables else "schema up to date"]
        if self.added_columns:
            parts.append(f"added columns {', '.join(self.added_columns)}")
        if self.widened_columns:
            parts.append(f"time columns now keep microseconds: {', '.join(self.widened_columns)}")
        parts.extend(self.steps)
        return f"{self.site}: " + "; ".join(parts)


Step = Callable[[Bench, str, Connection, MigrateReport], None]


def upgrade_schema(bench: Bench, site: str, connection: Connection, report: MigrateReport) -> None:
    """Create missing tables, add missing columns (nullable or with a default), widen old time columns."""
    inspector = sa.inspect(connection)
    existing = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(connection)
            report.created_tables.append(table.name)
            continue
        have = {c["name"]: c["type"] for c in inspector.get_columns(table.name)}
        quoted = connection.dialect.identifier_preparer.quote(table.name)
        for column in table.columns:
            ddl = CreateColumn(column).compile(dialect=connection.dialect)
            if column.name not in have:
                connection.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN {ddl}")
                report.added_columns.append(f"{table.name}.{column.name}")
            elif isinstance(column.type, UTCDateTime) and lacks_fraction(connection.dialect, have[column.name]):
                # A table made before times kept microseconds (MariaDB's plain DATETIME): widen it.
                connection.exec_driver_sql(f"ALTER TABLE {quoted} MODIFY COLUMN {ddl}")
                report.widened_columns.append(f"{table.name}.{column.name}")


def sync_registry(bench: Bench, site: str, connection: Connection, report: MigrateReport) -> None:
    """Registry step (issue 4a): sync the site's scheduled events from its apps' ``hooks.py``.

    Raises :class:`~bgcore.errors.HooksError` listing every problem of the
    site's hooks (the transaction then rolls back, nothing changes). Records
    ``registry: added N, updated N, removed N`` for the CLI.
    """
    result = sync_site(bench, site, connection, notify=False)
    report.registry_changed = result.changed
    report.steps.append(f"registry: {result}")


# The steps of a migration, in order. Scheduler core: the registry step is here.
STEPS: list[Step] = [upgrade_schema, sync_registry]


def migrate_site(bench: Bench, site: str) -> MigrateReport:
    """Run every step for ``site`` in one transaction; raise a :class:`BgcoreError` on failure.

    The site's SQLite file is created if missing. Safe to run twice.
    """
    config = bench.site_config(site)
    bench.activate_import_path()
    database = database_for(bench, config, create=True)
    report = MigrateReport(site=site)
    try:
        with database.transaction() as connection:
            for step in STEPS:
                step(bench, site, connection, report)
    except sa.exc.DBAPIError as exc:
        raise database.unavailable(exc) from exc
    if report.registry_changed:  # after the commit: a daemon that reloads now sees the new rows
        bump_registry_version(bench, site)
    logger.info("migrated site=%s: %s", site, report.summary())
    return report


def migrate_bench(bench: Bench, sites: list[str] | None = None) -> list[MigrateReport]:
    """Migrate ``sites`` (default: every site); a failing site is reported, the others still run."""
    reports = []
    for site in sites if sites is not None else bench.site_names():
        try:
            reports.append(migrate_site(bench, site))
        except BgcoreError as exc:  # one broken site must not stop the others; the report says why
            logger.info("migrate failed site=%s: %s", site, exc)
            reports.append(MigrateReport(site=site, error=str(exc)))
        except Exception as exc:  # a bug, not bad input: keep the traceback
            logger.error("migrate failed site=%s: %s", site, exc, exc_info=True)
            reports.append(MigrateReport(site=site, error=f"{type(exc).__name__}: {exc}"))
    return reports


def grouped_failures(reports: list[MigrateReport]) -> list[tuple[list[str], str]]:
    """The failed reports as ``(sites, error)``, one entry per distinct error, in first-seen order.

    An error that only differs by the site it names (an app's broken ``hooks.py``
    seen from 40 sites) is one entry naming every site; the site is left out of its text.
    """
    groups: dict[str, list[str]] = {}
    for report in reports:
        if report.error is None:
            continue
        text = report.error
        for prefix in (f"site {report.site!r}: ", f"{report.site}: "):
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        groups.setdefault(text, []).append(report.site)
    return [(sites, text) for text, sites in groups.items()]


__all__ = ["MigrateReport", "STEPS", "grouped_failures", "migrate_bench", "migrate_site"]
