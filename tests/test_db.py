"""Site databases: creation, migration, transactions, documents and clear errors.

Runs against SQLite, and against PostgreSQL and MariaDB when their servers are
named (see tests/test_db_support.py).
"""

from __future__ import annotations

import json
import sqlite3

import pymysql
import pytest
import sqlalchemy as sa

import bgcore
from bgcore.db import engines
from bgcore.db.retry import is_transient, run_in_transaction
from bgcore.errors import (
    DatabaseConfigError,
    DatabaseUnavailable,
    DocumentExists,
    DocumentNotFound,
    InvalidArgument,
    NoSiteContext,
    UnknownDoctype,
)
from bgcore.migrate import migrate_site
from bgcore.rqbridge import broker
from tests.test_db_support import backend, db_bench, mariadb_databases, postgres_databases  # noqa: F401


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- creating and migrating sites ---------------------------------------------------------

def test_new_site_creates_directory_config_and_schema(bench_dir, backend):
    # Given a bench and a database for the new site (SQLite: none given)
    args = ["new-site", "c.test", "--install-app", "testapp"]
    if backend.urls:
        args += ["--db-url", backend.urls["a"]]
    # When the operator creates the site
    result = bench_dir.cli(*args)
    # Then its directory, config and schema exist
    assert result.returncode == 0, result.stderr
    assert "created site c.test" in result.stdout
    config = json.loads((bench_dir.sites / "c.test" / "site_config.json").read_text())
    assert config["installed_apps"] == ["testapp"]
    url = backend.urls["a"] if backend.urls else f"sqlite:///{bench_dir.sites / 'c.test' / 'site.sqlite3'}"
    assert config.get("db_url") == (backend.urls["a"] if backend.urls else None)
    assert {"document", "job_log"} <= _tables(url)
    # And creating it again is refused with a clear message
    again = bench_dir.cli(*args)
    assert again.returncode == 1
    assert "site 'c.test' already exists" in again.stderr


def test_new_site_refuses_unknown_app_and_leaves_nothing_behind(bench_dir):
    # When the operator names an app that does not import
    result = bench_dir.cli("new-site", "c.test", "--install-app", "no_such_app")
    # Then the site is not created and the message names the app
    assert result.returncode == 1
    assert "cannot install app 'no_such_app'" in result.stderr
    assert not (bench_dir.sites / "c.test").exists()


def test_new_site_with_unreachable_database_is_removed_again(bench_dir):
    result = bench_dir.cli("new-site", "c.test", "--db-url", "postgresql+psycopg2://nobody@127.0.0.1:1/x")
    assert result.returncode == 1
    assert "site 'c.test'" in result.stderr and "cannot be used" in result.stderr
    assert not (bench_dir.sites / "c.test").exists()


def test_new_site_refuses_a_db_url_that_is_not_a_url_before_writing_anything(bench_dir):
    result = bench_dir.cli("new-site", "c.test", "--db-url", "garbage")
    assert result.returncode == 1
    assert "--db-url garbage is not a usable database URL" in result.stderr
    assert not (bench_dir.sites / "c.test").exists()


def test_migrate_twice_changes_nothing_and_keeps_data(db_bench):
    # Given migrated sites with a document
    bench = db_bench.bench()
    with bgcore.connect("a.test", bench):
        bgcore.new_doc("ToDo", "t1", status="open").save()
    # When migrate runs again
    report = migrate_site(bench, "a.test")
    # Then nothing is created and the document is still there
    assert report.ok and report.created_tables == [] and report.added_columns == []
    with bgcore.connect("a.test", bench):
        assert bgcore.get_doc("ToDo", "t1").get("status") == "open"


def test_migrate_adds_a_missing_column_to_an_older_table(bench_dir):
    # Given a site whose job_log table predates the 'event' column
    path = bench_dir.sites / "a.test" / "site.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE job_log (id INTEGER PRIMARY KEY, job_id VARCHAR(255) NOT NULL, "
                     "method VARCHAR(255) NOT NULL, queue VARCHAR(140), status VARCHAR(20) NOT NULL, "
                     "started_at DATETIME NOT NULL, ended_at DATETIME NOT NULL, duration_ms INTEGER NOT NULL, "
                     "exception TEXT, traceback TEXT)")
    # When migrate runs
    report = migrate_site(bench_dir.bench(), "a.test")
    # Then the column is added and the missing table created
    assert report.added_columns == ["job_log.event", "job_log.attempt"]
    assert "document" in report.created_tables
    with sqlite3.connect(path) as conn:
        assert "event" in [row[1] for row in conn.execute("PRAGMA table_info(job_log)")]


def test_migrate_cli_reports_each_site_and_fails_only_for_broken_ones(bench_dir):
    # Given one healthy site, one with a bad db_url and one with a corrupt SQLite file
    bench_dir.add_site("bad.test", db_url="nosuchdb://x/y")
    bench_dir.add_site("corrupt.test")
    (bench_dir.sites / "corrupt.test" / "site.sqlite3").write_bytes(b"this is not a database" * 100)
    # When every site is migrated
    result = bench_dir.cli("migrate")
    # Then healthy sites are migrated, each broken one is named, and the exit status is 1
    assert result.returncode == 1
    assert "a.test: created tables" in result.stdout and "b.test: created tables" in result.stdout
    assert "bad.test: FAILED" in result.stderr and "db_url" in result.stderr
    assert "corrupt.test: FAILED" in result.stderr and "cannot be used" in result.stderr
    assert "the SQLite file is corrupt: restore it from a backup" in result.stderr
    assert "migrate failed for 2 site(s): bad.test, corrupt.test" in result.stderr
    # And a second run of the healthy site alone succeeds and changes nothing
    again = bench_dir.cli("migrate", "--site", "a.test")
    assert again.returncode == 0, again.stderr
    assert "a.test: schema up to date" in again.stdout


# -- transactions and documents ---------------------------------------------------------------

def test_documents_are_saved_loaded_updated_and_deleted(db_bench):
    bench = db_bench.bench()
    # Given a new document saved in a connect block
    with bgcore.connect("a.test", bench):
        doc = bgcore.new_doc("ToDo", "t1", notes=["x"], count=1)
        doc.save()
    # When it is loaded, changed and saved again
    with bgcore.connect("a.test", bench):
        doc = bgcore.get_doc("ToDo", "t1")
        assert doc.fields == {"notes": ["x"], "count": 1} and doc.doctype == "ToDo"
        doc.set("count", 2)
        doc.save()
    # Then the change is stored, a duplicate name is refused, and deletion removes it
    with bgcore.connect("a.test", bench):
        assert bgcore.get_doc("ToDo", "t1").get("count") == 2
        with pytest.raises(DocumentExists, match="ToDo 't1' already exists"):
            bgcore.new_doc("ToDo", "t1").save()
        bgcore.get_doc("ToDo", "t1").delete()
    with bgcore.connect("a.test", bench):
        with pytest.raises(DocumentNotFound, match="site 'a.test': ToDo 't1' not found"):
            bgcore.get_doc("ToDo", "t1")


def test_connect_block_commits_when_it_ends_and_rolls_back_when_it_raises(db_bench):
    bench = db_bench.bench()
    # When one block ends normally and another raises
    with bgcore.connect("a.test", bench):
        bgcore.new_doc("ToDo", "kept").save()
    with pytest.raises(RuntimeError):
        with bgcore.connect("a.test", bench):
            bgcore.new_doc("ToDo", "dropped").save()
            raise RuntimeError("abort")
    # Then only the first block's document exists
    with bgcore.connect("a.test", bench):
        assert bgcore.get_doc("ToDo", "kept").name == "kept"
        with pytest.raises(DocumentNotFound):
            bgcore.get_doc("ToDo", "dropped")


def test_enqueue_after_commit_pushes_exactly_one_job_on_commit_and_none_on_rollback(db_bench, redis_client):
    bench = db_bench.bench()
    def queued() -> list[str]:
        return broker(bench).queued_ids("default")

    with bgcore.connect("a.test", bench):
        # Given a write and an after-commit job in the same transaction
        bgcore.new_doc("ToDo", "t1").save()
        job = bgcore.enqueue("testapp.tasks.add", enqueue_after_commit=True, a=1, b=2)
        # Then the id is known at once, but nothing is queued before the commit
        assert job.id.startswith("a_dtest__")
        assert queued() == []
        # When the transaction commits, exactly that job is queued
        bgcore.db.commit()
        assert queued() == [job.id]
        # When another transaction rolls back, its job is never queued
        bgcore.new_doc("ToDo", "t2").save()
        dropped = bgcore.enqueue("testapp.tasks.add", enqueue_after_commit=True, a=3, b=4)
        bgcore.db.rollback()
    assert queued() == [job.id]
    assert not redis_client.exists(dropped.key)
    with bgcore.connect("a.test", bench):
        with pytest.raises(DocumentNotFound):
            bgcore.get_doc("ToDo", "t2")


def test_unknown_doctype_names_the_site_and_its_doctypes(bench_dir):
    bench_dir.add_site("c.test", installed_apps=["otherapp"])
    with bgcore.connect("c.test", bench_dir.bench()):
        with pytest.raises(UnknownDoctype, match=r"site 'c.test': unknown doctype 'ToDo'.*otherapp"):
            bgcore.new_doc("ToDo")


def test_database_handle_needs_a_site():
    with pytest.raises(NoSiteContext):
        bgcore.db.execute(sa.text("SELECT 1"))


# -- errors of broken site databases ------------------------------------------------------------

def test_bad_db_url_names_the_site_and_the_file(bench_dir):
    bench_dir.add_site("bad.test", db_url="definitely not a url")
    with bgcore.connect("bad.test", bench_dir.bench()):
        with pytest.raises(DatabaseConfigError, match=r"site 'bad.test': db_url .*site_config.json.*not a usable database URL"):
            bgcore.get_doc("ToDo", "x")


def test_unreachable_database_names_the_site(bench_dir):
    bench_dir.add_site("down.test", db_url="postgresql+psycopg2://nobody@127.0.0.1:1/x")
    with bgcore.connect("down.test", bench_dir.bench()):
        with pytest.raises(DatabaseUnavailable, match=r"site 'down.test': its database .*127.0.0.1:1"):
            bgcore.get_doc("ToDo", "x")


def test_corrupt_sqlite_file_names_the_site(bench_dir):
    (bench_dir.sites / "a.test" / "site.sqlite3").write_bytes(b"garbage" * 1000)
    with bgcore.connect("a.test", bench_dir.bench()):
        with pytest.raises(DatabaseUnavailable, match=r"site 'a.test'.*site.sqlite3.*not a database"):
            bgcore.get_doc("ToDo", "x")


def test_missing_sqlite_file_says_to_migrate(bench_dir):
    with bgcore.connect("a.test", bench_dir.bench()):
        with pytest.raises(DatabaseUnavailable, match=r"bgcore migrate --site a.test"):
            bgcore.get_doc("ToDo", "x")
    assert not (bench_dir.sites / "a.test" / "site.sqlite3").exists()


# -- engines and transient errors --------------------------------------------------------------

def test_engine_cache_is_bounded(bench_dir):
    # Given a bench that allows two open engines and four sites
    bench_dir.write_common(db_engine_cache_size=2)
    bench = bench_dir.bench()
    for name in ("c.test", "d.test"):
        bench_dir.add_site(name)
    engines.ENGINES.dispose_all()
    # When each site's database is used in turn
    for name in ("a.test", "b.test", "c.test", "d.test"):
        migrate_site(bench, name)
        assert len(engines.ENGINES) <= 2
    # Then at most two engines stay open, the most recent ones
    assert len(engines.ENGINES) == 2


def test_a_block_that_does_not_use_the_database_opens_no_connection(bench_dir):
    engines.ENGINES.dispose_all()
    with bgcore.connect("a.test", bench_dir.bench()) as ctx:
        bgcore.enqueue("testapp.tasks.noop")
    assert "db" not in ctx.state
    assert len(engines.ENGINES) == 0


@pytest.mark.parametrize("error, transient", [
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("no such table: x"), False),
    (pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock"), True),
    (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), True),
    (pymysql.err.OperationalError(2003, "Can't connect"), False),
    (RuntimeError("boom"), False),
])
def test_transient_errors_are_recognised(error, transient):
    assert is_transient(error) is transient
    wrapped = sa.exc.OperationalError("UPDATE ...", {}, error)
    assert is_transient(wrapped) is transient


def _locked() -> sa.exc.OperationalError:
    return sa.exc.OperationalError("UPDATE document ...", {}, sqlite3.OperationalError("database is locked"))


def test_transient_errors_are_retried_with_the_same_user_and_fresh_kwargs(bench_dir, caplog):
    # Given a method that mutates its kwargs and hits a transient error twice
    seen = []

    def flaky(items: list[int]) -> str:
        seen.append((bgcore.local.site, bgcore.current().user, list(items)))
        items.append(99)
        if len(seen) < 3:
            raise _locked()
        return "done"

    delays: list[float] = []
    with bgcore.connect("a.test", bench_dir.bench(), user="alice") as ctx:
        # When it runs in the site's transaction
        result = run_in_transaction(ctx, flaky, {"items": [1]}, sleep=delays.append)
    # Then it was retried twice, each time as the same user with the original kwargs, with backoff
    assert result == "done"
    assert seen == [("a.test", "alice", [1])] * 3
    assert len(delays) == 2 and delays[1] > delays[0] > 0
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 and "site=a.test" in retries[0] and "attempt=1/3" in retries[0]
    # And a method that never touched the database opened no connection
    assert "db" not in ctx.state


def test_retries_are_bounded_and_other_errors_are_not_retried(bench_dir):
    calls = []

    def always_locked() -> None:
        calls.append(1)
        raise _locked()

    def broken() -> None:
        calls.append(1)
        raise ValueError("not transient")

    with bgcore.connect("a.test", bench_dir.bench()) as ctx:
        with pytest.raises(sa.exc.OperationalError):
            run_in_transaction(ctx, always_locked, {}, max_retries=3, sleep=lambda _: None)
        assert len(calls) == 4
        calls.clear()
        with pytest.raises(ValueError):
            run_in_transaction(ctx, broken, {}, sleep=lambda _: None)
        assert len(calls) == 1


def test_a_document_name_that_does_not_fit_is_refused_before_the_database(bench_dir):
    with bgcore.connect("a.test", bench_dir.bench()):
        with pytest.raises(InvalidArgument, match="ToDo name .* use 1-140 characters"):
            bgcore.new_doc("ToDo", "x" * 141)


def test_a_database_without_the_schema_says_to_migrate(bench_dir, backend):
    # Given a site whose database exists but was never migrated
    if backend.urls:
        bench_dir.add_site("a.test", db_url=backend.urls["a"])
    else:
        sqlite3.connect(bench_dir.sites / "a.test" / "site.sqlite3").close()
    # When a document is read
    with bgcore.connect("a.test", bench_dir.bench()):
        with pytest.raises(DatabaseUnavailable, match=r"site 'a.test': .* lacks a table .*bgcore migrate --site a.test"):
            bgcore.get_doc("ToDo", "x")
