"""The event registry: sync from hooks.py into a site database, idempotence, run records.

Runs against a SQLite file made with ``metadata.create_all``; Redis (for the
registry version) is the session's real redis-server.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import textwrap
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bgcore import keys
from bgcore.db.schema import metadata
from bgcore.errors import ConfigError, HooksError
from bgcore.scheduler import registry
from bgcore.scheduler.registry import (
    RegisteredEvent,
    app_hooks,
    load_registry,
    record_run,
    scheduled_event,
    stored_fingerprints,
    sync_site,
)
from tests.conftest import FIXTURE_APPS, BenchDir

UTC = timezone.utc
NOW = datetime(2024, 5, 1, 10, 17, tzinfo=UTC)
TASKS = "def alpha():\n    return 1\n\ndef beta():\n    return 2\n\ndef gamma():\n    return 3\n"
_counter = itertools.count()


SERVER_ENV = {"postgres": "BGCORE_TEST_POSTGRES", "mariadb": "BGCORE_TEST_MARIADB"}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'site.db'}")
    metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A site database on SQLite, and on the PostgreSQL / MariaDB servers named by the environment."""
    kind = request.param
    if kind == "sqlite":
        eng = sa.create_engine(f"sqlite:///{tmp_path / 'site.db'}")
        metadata.create_all(eng)
        yield eng
        eng.dispose()
        return
    base = os.environ.get(SERVER_ENV[kind])
    if not base:
        message = f"{SERVER_ENV[kind]} is not set; set it to run the {kind} variant"
        if os.environ.get("BGCORE_REQUIRE_DATABASES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    name = f"bgcore_sched_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    eng = sa.create_engine(sa.engine.make_url(base).set(database=name), poolclass=sa.pool.NullPool)
    try:
        metadata.create_all(eng)
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()


class Apps:
    """Apps written into a temporary directory on the bench's apps_path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def make(self, hooks: str, prefix: str = "regapp") -> str:
        name = f"{prefix}_{next(_counter)}_{abs(hash(str(self.root))) % 10_000}"
        package = self.root / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "tasks.py").write_text(TASKS)
        self.write(name, hooks)
        return name

    def write(self, app: str, hooks: str) -> None:
        (self.root / app / "hooks.py").write_text(textwrap.dedent(hooks).replace("APP", app))


@pytest.fixture
def apps(bench_dir: BenchDir, tmp_path: Path) -> Apps:
    root = tmp_path / "apps"
    root.mkdir()
    bench_dir.write_common(apps_path=[str(FIXTURE_APPS), str(root)])
    return Apps(root)


def sync(bench_dir: BenchDir, engine: Engine, site: str = "a.test", now: datetime = NOW) -> registry.SyncReport:
    with engine.begin() as connection:
        return sync_site(bench_dir.bench(), site, connection, now=now)


def rows(engine: Engine) -> list[RegisteredEvent]:
    with engine.connect() as connection:
        return load_registry(connection)


def install(bench_dir: BenchDir, site: str, *names: str, **config: Any) -> None:
    bench_dir.add_site(site, installed_apps=list(names), **config)


HOOKS = '''
    scheduler_events = {
        "all": ["APP.tasks.alpha"],
        "hourly": ["APP.tasks.alpha"],
        "daily_long": ["APP.tasks.beta"],
        "cron": {"*/5 * * * *": ["APP.tasks.gamma"]},
    }
'''


def test_first_sync_registers_every_event(bench_dir: BenchDir, apps: Apps, any_engine: Engine,
                                          redis_client: redis.Redis) -> None:
    # Given a site with one app declaring four events
    app = apps.make(HOOKS)
    install(bench_dir, "a.test", "testapp", app)
    # When the registry is synced
    report = sync(bench_dir, any_engine)
    # Then all four are added, registered now, with their queues and crons
    assert (len(report.added), report.updated, report.removed) == (4, (), ())
    assert report.apps == ("testapp", app) and report.hooks_changed == ("testapp", app)
    assert str(report).startswith("added 4, updated 0, removed 0 (+")
    assert all(f"+{spec.method} [{spec.frequency}" in str(report) for spec in report.added)
    events = {(e.frequency, e.method.rsplit(".", 1)[1]): e for e in rows(any_engine)}
    assert set(events) == {("all", "alpha"), ("hourly", "alpha"), ("daily_long", "beta"), ("cron", "gamma")}
    assert events[("daily_long", "beta")].queue == "long"
    assert events[("cron", "gamma")].cron == "*/5 * * * *"
    assert events[("all", "alpha")].cron is None and events[("all", "alpha")].next_run is None
    for event in events.values():
        assert event.registered_at == NOW and event.registered_at.tzinfo is not None
        assert event.last_execution is None and not event.stopped
        assert event.last_run_or_registration == NOW
    assert events[("hourly", "alpha")].next_run == datetime(2024, 5, 1, 11, tzinfo=UTC)
    # and the registry version of the site went up, the other site's did not
    bench = bench_dir.bench()
    assert redis_client.get(keys.registry_version(bench.bench_id, "a.test")) == b"1"
    assert redis_client.get(keys.registry_version(bench.bench_id, "b.test")) is None


def test_second_sync_changes_nothing(bench_dir: BenchDir, apps: Apps, any_engine: Engine,
                                     redis_client: redis.Redis) -> None:
    app = apps.make(HOOKS)
    install(bench_dir, "a.test", app)
    sync(bench_dir, any_engine)
    before = rows(any_engine)
    # When synced again later with the same hooks
    report = sync(bench_dir, any_engine, now=NOW + timedelta(hours=5))
    # Then nothing changed: no rows touched, no version bump
    assert not report.changed and str(report) == "added 0, updated 0, removed 0"
    assert rows(any_engine) == before
    assert redis_client.get(keys.registry_version(bench_dir.bench().bench_id, "a.test")) == b"1"


def test_changed_hooks_add_new_and_remove_stale_events_keeping_the_rest(bench_dir: BenchDir, apps: Apps,
                                                                       engine: Engine) -> None:
    # Given a synced app whose hourly event has run
    app = apps.make(HOOKS)
    install(bench_dir, "a.test", app)
    sync(bench_dir, engine)
    hourly = next(e for e in rows(engine) if e.frequency == "hourly")
    with engine.begin() as connection:
        assert record_run(connection, hourly.event_id, "finished", NOW + timedelta(minutes=43))
    # When the hooks drop the cron entry and add a weekly one
    apps.write(app, '''
        scheduler_events = {
            "all": ["APP.tasks.alpha"],
            "hourly": ["APP.tasks.alpha"],
            "daily_long": ["APP.tasks.beta"],
            "weekly": ["APP.tasks.gamma"],
        }
    ''')
    report = sync(bench_dir, engine, now=NOW + timedelta(days=1))
    # Then one is added, one removed, and the hourly event keeps its history
    assert [(s.frequency, s.method) for s in report.added] == [("weekly", f"{app}.tasks.gamma")]
    assert [(s.frequency, s.cron) for s in report.removed] == [("cron", "*/5 * * * *")]
    assert report.hooks_changed == (app,)
    after = {e.event_id: e for e in rows(engine)}
    assert len(after) == 4
    assert after[hourly.event_id].last_execution == NOW + timedelta(minutes=43)
    assert after[hourly.event_id].registered_at == NOW


def test_an_edit_that_keeps_the_events_updates_only_the_fingerprint(bench_dir: BenchDir, apps: Apps,
                                                                    engine: Engine, redis_client: redis.Redis) -> None:
    app = apps.make(HOOKS)
    install(bench_dir, "a.test", app)
    sync(bench_dir, engine)
    with engine.connect() as connection:
        old = stored_fingerprints(connection)[app]
    apps.write(app, "# a comment\n" + textwrap.dedent(HOOKS))
    report = sync(bench_dir, engine)
    with engine.connect() as connection:
        new = stored_fingerprints(connection)[app]
    assert (report.added, report.updated, report.removed, report.hooks_changed) == ((), (), (), (app,))
    assert new != old
    assert redis_client.get(keys.registry_version(bench_dir.bench().bench_id, "a.test")) == b"2"


def test_an_uninstalled_app_loses_its_events_and_fingerprint(bench_dir: BenchDir, apps: Apps, engine: Engine) -> None:
    app = apps.make(HOOKS)
    other = apps.make('scheduler_events = {"daily": ["APP.tasks.alpha"]}')
    install(bench_dir, "a.test", app, other)
    sync(bench_dir, engine)
    install(bench_dir, "a.test", app)
    report = sync(bench_dir, engine)
    assert [s.app for s in report.removed] == [other]
    assert report.hooks_changed == (other,)
    with engine.connect() as connection:
        assert set(stored_fingerprints(connection)) == {app}


def test_bad_hooks_change_nothing_and_list_every_problem(bench_dir: BenchDir, apps: Apps, engine: Engine,
                                                         redis_client: redis.Redis) -> None:
    # Given a synced site
    good = apps.make(HOOKS)
    install(bench_dir, "a.test", good)
    sync(bench_dir, engine)
    before = rows(engine)
    # When a second app with two mistakes is installed and the good app changes too
    bad = apps.make('scheduler_events = {"dialy": ["APP.tasks.alpha"], "cron": {"* * *": ["APP.tasks.alpha"]}}')
    broken = apps.make("scheduler_events = {\n")
    apps.write(good, 'scheduler_events = {"weekly": ["APP.tasks.alpha"]}')
    install(bench_dir, "a.test", good, bad, broken)
    with pytest.raises(HooksError) as info:
        sync(bench_dir, engine)
    # Then one error lists all three problems and the registry is as it was
    assert len(info.value.problems) == 3 and info.value.site == "a.test"
    assert "did you mean 'daily'" in str(info.value) and "'* * *'" in str(info.value) and "syntax error" in str(info.value)
    assert rows(engine) == before
    assert redis_client.get(keys.registry_version(bench_dir.bench().bench_id, "a.test")) == b"1"


def test_one_sites_bad_hooks_leave_another_site_unaffected(bench_dir: BenchDir, apps: Apps, tmp_path: Path) -> None:
    bad = apps.make('scheduler_events = {"daily": "APP.tasks.alpha"}')
    good = apps.make(HOOKS)
    install(bench_dir, "a.test", bad)
    install(bench_dir, "b.test", good)
    engines = {site: sa.create_engine(f"sqlite:///{tmp_path / (site + '.db')}") for site in ("a.test", "b.test")}
    for eng in engines.values():
        metadata.create_all(eng)
    with pytest.raises(HooksError, match="wrap it in a list"):
        sync(bench_dir, engines["a.test"], site="a.test")
    assert len(sync(bench_dir, engines["b.test"], site="b.test").added) == 4
    for eng in engines.values():
        eng.dispose()


def test_record_run_and_aware_times_round_trip(bench_dir: BenchDir, apps: Apps, any_engine: Engine) -> None:
    app = apps.make(HOOKS)
    install(bench_dir, "a.test", app)
    sync(bench_dir, any_engine)
    event = next(e for e in rows(any_engine) if e.frequency == "cron")
    at = datetime(2024, 5, 1, 14, 5, 7, 123456, tzinfo=timezone(timedelta(hours=2)))  # any aware zone in
    with any_engine.begin() as connection:
        assert record_run(connection, event.event_id, "failed", at, "RuntimeError: boom",
                          next_at=datetime(2024, 5, 1, 12, 10, tzinfo=UTC))
        assert not record_run(connection, "nosuchevent", "finished", at)
    stored = next(e for e in rows(any_engine) if e.event_id == event.event_id)
    assert stored.last_execution == at and stored.last_execution.utcoffset() == timedelta(0)
    assert (stored.last_status, stored.last_error) == ("failed", "RuntimeError: boom")
    assert stored.next_run == datetime(2024, 5, 1, 12, 10, tzinfo=UTC)
    assert stored.spec == event.spec and stored.last_run_or_registration == at
    # When an older run reports late, and a run with no due time (a triggered one) ends
    with any_engine.begin() as connection:
        assert record_run(connection, event.event_id, "finished", at - timedelta(hours=1))
        assert record_run(connection, event.event_id, "failed", None, "boom again")
    # Then the statuses are recorded but the last execution never moves back
    stored = next(e for e in rows(any_engine) if e.event_id == event.event_id)
    assert stored.last_execution == at and (stored.last_status, stored.last_error) == ("failed", "boom again")


def test_next_run_uses_the_site_time_zone(bench_dir: BenchDir, apps: Apps, engine: Engine) -> None:
    app = apps.make('scheduler_events = {"daily": ["APP.tasks.alpha"]}')
    install(bench_dir, "a.test", app, time_zone="Asia/Kolkata")
    sync(bench_dir, engine)
    (event,) = rows(engine)
    assert event.next_run == datetime(2024, 5, 1, 18, 30, tzinfo=UTC)  # midnight IST


def test_an_unknown_site_time_zone_is_a_config_error(bench_dir: BenchDir, apps: Apps, engine: Engine) -> None:
    app = apps.make(HOOKS)
    install(bench_dir, "a.test", app, time_zone="Mars/Olympus")
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        sync(bench_dir, engine)
    assert rows(engine) == []


def test_unreachable_redis_is_a_warning_not_a_failure(bench_dir: BenchDir, apps: Apps, engine: Engine,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # Given a bench whose Redis does not answer
    app = apps.make(HOOKS)
    install(bench_dir, "a.test", app)
    common = json.loads((bench_dir.sites / "common_site_config.json").read_text())
    bench_dir.write_common(apps_path=common["apps_path"], redis_queue="redis://127.0.0.1:1/0")
    # When synced / Then the registry is written and a warning says the version was not bumped
    with caplog.at_level(logging.WARNING, logger="bgcore.scheduler.registry"):
        report = sync(bench_dir, engine)
    assert len(report.added) == 4 and len(rows(engine)) == 4
    assert "Redis is unreachable" in caplog.text


def test_tables_use_portable_types() -> None:
    assert scheduled_event.c.event_id.primary_key and app_hooks.c.app.primary_key
    assert isinstance(scheduled_event.c.stopped.type, sa.Boolean)
    for column in ("registered_at", "last_execution", "next_run"):
        assert scheduled_event.c[column].type.impl.timezone  # type: ignore[attr-defined]
    for dialect in ("postgresql", "mysql", "sqlite"):
        from sqlalchemy.dialects import registry as dialects
        from sqlalchemy.schema import CreateTable

        ddl = str(CreateTable(scheduled_event).compile(dialect=dialects.load(dialect)()))
        assert "VARCHAR(64)" in ddl


def test_bgcore_migrate_prints_each_sites_sync_report(bench_dir: BenchDir, apps: Apps,
                                                      redis_client: redis.Redis) -> None:
    # Given a bench whose site a.test runs a scheduled app and b.test has a broken one
    pytest.importorskip("bgcore.migrate")
    good = apps.make(HOOKS)
    bad = apps.make('scheduler_events = {"dialy": ["APP.tasks.alpha"]}')
    install(bench_dir, "a.test", good)
    install(bench_dir, "b.test", bad)
    # When `bgcore migrate` runs twice through the real console script
    first = bench_dir.cli("migrate")
    second = bench_dir.cli("migrate")
    # Then a.test reports its added events, then no change; b.test fails naming the key, alone
    assert "a.test" in first.stdout and "registry: added 4, updated 0, removed 0" in first.stdout
    assert "registry: added 0, updated 0, removed 0" in second.stdout
    assert first.returncode == 1
    assert "did you mean 'daily'" in first.stdout + first.stderr
    bench = bench_dir.bench()
    assert redis_client.get(keys.registry_version(bench.bench_id, "a.test")) == b"1"
    assert redis_client.get(keys.registry_version(bench.bench_id, "b.test")) is None
