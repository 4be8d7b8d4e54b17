"""Times: stored as UTC with microseconds on every database, shown in the site's time zone, RFC 3339 in JSON."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

import bgcore
from bgcore.db import joblog
from bgcore.db.engines import database_for
from bgcore.db.schema import document
from bgcore.migrate import migrate_site
from tests.cli_support import run, run_json
from tests.test_db_support import backend, db_bench, mariadb_databases, postgres_databases  # noqa: F401

UTC = timezone.utc
STARTED = datetime(2026, 12, 1, 8, 0, 17, 112773, tzinfo=UTC)


def _entry(job_id: str, started: datetime = STARTED, ms: int = 1) -> joblog.JobLogEntry:
    return joblog.JobLogEntry(job_id=job_id, method="testapp.tasks.fail", queue="default", status="failed",
                              started_at=started, ended_at=started + timedelta(milliseconds=ms),
                              duration_ms=ms, exception="RuntimeError: boom")


def test_job_log_times_keep_microseconds_and_come_back_aware_utc(db_bench):
    bench = db_bench.bench()
    config = bench.site_config("a.test")
    # Given a failure that took 1 ms, written with times in another zone
    berlin = STARTED.astimezone(timezone(timedelta(hours=1)))
    assert joblog.write(bench, config, _entry("j1", started=berlin))
    # When it is read back
    [entry] = joblog.failures(bench, config)
    # Then both times are exact to the microsecond, aware, in UTC, and 1 ms apart
    assert entry.started_at == STARTED and entry.started_at.utcoffset() == timedelta(0)
    assert entry.ended_at - entry.started_at == timedelta(milliseconds=1)
    assert entry.started_at.tzinfo is not None and entry.ended_at.tzinfo is not None


def test_document_times_keep_microseconds(db_bench):
    bench = db_bench.bench()
    with bgcore.connect("a.test", bench):
        bgcore.new_doc("ToDo", "t1").save()
        row = bgcore.db.execute(sa.select(document.c.created_at)).one()
    assert row.created_at.tzinfo is not None
    with database_for(bench, bench.site_config("a.test")).transaction() as connection:
        connection.execute(sa.update(document).values(created_at=STARTED))
        assert connection.execute(sa.select(document.c.created_at)).scalar_one() == STARTED


def test_jobs_failed_shows_times_in_the_sites_zone_and_rfc3339_in_json(db_bench):
    # Given a site in Berlin with one failure
    db_bench.add_site("a.test", **{**_site_config(db_bench, "a.test"), "time_zone": "Europe/Berlin"})
    bench = db_bench.bench()
    joblog.write(bench, bench.site_config("a.test"), _entry("j1"))
    # When its failures are listed as JSON and as a table
    [row] = run_json(db_bench, "jobs", "failed", "--site", "a.test")
    table = run(db_bench, "jobs", "failed", "--site", "a.test")
    # Then JSON has RFC 3339 with microseconds and the site's offset
    assert row["started_at"] == "2026-12-01T09:00:17.112773+01:00"
    assert row["ended_at"] == "2026-12-01T09:00:17.113773+01:00"
    # And the table shows the same instant in the site's zone, to the second
    assert table.exit_code == 0 and "2026-12-01 09:00:17" in table.stdout and "times in Europe/Berlin" in table.stdout


def test_show_pending_jobs_gives_each_jobs_time_in_its_own_sites_zone(bench_dir):
    bench_dir.add_site("a.test", time_zone="Asia/Kolkata")
    bench = bench_dir.bench()
    for site in ("a.test", "b.test"):
        with bgcore.connect(site, bench):
            bgcore.enqueue("testapp.tasks.noop", job_id=f"j-{site}")
    rows = {row["site"]: row for row in run_json(bench_dir, "show-pending-jobs", "--list")}
    kolkata = datetime.fromisoformat(rows["a.test"]["enqueued_at"])
    utc = datetime.fromisoformat(rows["b.test"]["enqueued_at"])
    assert kolkata.utcoffset() == timedelta(hours=5, minutes=30) and utc.utcoffset() == timedelta(0)
    assert "T" in rows["a.test"]["enqueued_at"] and len(rows["a.test"]["enqueued_at"]) == 32


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_migrate_widens_old_whole_second_time_columns_on_mariadb(db_bench):
    bench = db_bench.bench()
    url = db_bench.backend.urls["a"]
    # Given a job log made before times kept microseconds (plain DATETIME)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE job_log MODIFY COLUMN started_at DATETIME NOT NULL")
        connection.exec_driver_sql("ALTER TABLE job_log MODIFY COLUMN ended_at DATETIME NOT NULL")
    # When the site is migrated (twice)
    first = migrate_site(bench, "a.test")
    second = migrate_site(bench, "a.test")
    # Then both columns keep microseconds, and the second run has nothing to do
    assert first.widened_columns == ["job_log.started_at", "job_log.ended_at"]
    assert "time columns now keep microseconds: job_log.started_at, job_log.ended_at" in first.summary()
    assert second.widened_columns == []
    with engine.connect() as connection:
        types = {c["name"]: c["type"] for c in sa.inspect(connection).get_columns("job_log")}
    engine.dispose()
    assert types["started_at"].fsp == 6 and types["ended_at"].fsp == 6
    assert joblog.write(bench, bench.site_config("a.test"), _entry("j1"))
    assert joblog.failures(bench, bench.site_config("a.test"))[0].started_at == STARTED


def _site_config(bench_dir, site: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    import json

    return json.loads((bench_dir.sites / site / "site_config.json").read_text())
