"""Every site has a database of its own: no db_url in the bench config, no two sites on one database."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

import bgcore
from bgcore.cli import main
from bgcore.db.engines import database_for, database_identity
from bgcore.errors import DatabaseConfigError
from tests.conftest import BenchDir


def run(bench: BenchDir, *args: str) -> Result:
    return CliRunner().invoke(main, ["--bench", str(bench.path), *args])


@pytest.mark.parametrize("a, b, same", [
    ("postgresql+psycopg2://u:pw@localhost/db", "postgresql://v@127.0.0.1:5432/db", True),
    ("postgresql://u@db.example.com/one", "postgresql://u@db.example.com/two", False),
    ("postgresql://u@db.example.com:5433/db", "postgresql://u@db.example.com/db", False),
    ("mysql+pymysql://root@localhost/x", "mariadb+pymysql://root@127.0.0.1:3306/x", True),
    ("mysql+pymysql://root@hosta/x", "mysql+pymysql://root@hostb/x", False),
    ("sqlite:////srv/b/sites/a/site.sqlite3", "sqlite:////srv/b/sites/a/../a/site.sqlite3", True),
])
def test_database_identity_ignores_driver_user_and_loopback_spelling(a: str, b: str, same: bool) -> None:
    assert (database_identity(sa.make_url(a)) == database_identity(sa.make_url(b))) is same


def test_a_db_url_in_the_common_config_is_refused_for_every_command(bench_dir: BenchDir, tmp_path) -> None:
    # Given a bench config that sets one db_url for every site
    bench_dir.write_common(db_url=f"sqlite:///{tmp_path / 'shared.sqlite3'}")
    # When the sites are migrated
    result = run(bench_dir, "migrate")
    # Then each fails with the one error naming the bench config, and no database was made
    assert result.exit_code == 1
    common = str(bench_dir.sites / "common_site_config.json")
    # (one line for both sites: migrate reports an error shared by several sites once, naming them)
    assert f"2 sites (a.test, b.test): FAILED: {common}: db_url sqlite:///" in result.stderr
    assert "every site would share that one database" in result.stderr
    assert not (tmp_path / "shared.sqlite3").exists()
    # And a site's failed jobs are not read from the shared database either
    failed = run(bench_dir, "jobs", "failed", "--site", "a.test")
    assert failed.exit_code == 1 and common in failed.stderr


def test_two_sites_on_one_database_are_refused_by_migrate_naming_both(bench_dir: BenchDir, tmp_path) -> None:
    # Given b.test pointing at a.test's own SQLite file, and c.test on a database of its own
    bench_dir.add_site("b.test", db_url=f"sqlite:///{bench_dir.sites / 'a.test' / 'site.sqlite3'}")
    bench_dir.add_site("c.test", db_url=f"sqlite:///{tmp_path / 'c.sqlite3'}")
    # When every site is migrated
    result = run(bench_dir, "migrate")
    # Then a.test and b.test fail, each naming the other; c.test is migrated
    assert result.exit_code == 1
    assert "c.test: created tables" in result.stdout
    assert "a.test: FAILED: its database sqlite:///" in result.stderr
    assert "is also the database of site 'b.test'" in result.stderr
    assert "is also the database of site 'a.test'" in result.stderr
    assert "migrate failed for 2 site(s): a.test, b.test" in result.stderr
    assert not (bench_dir.sites / "a.test" / "site.sqlite3").exists()


def test_a_site_entered_by_a_script_or_job_refuses_a_shared_database(bench_dir: BenchDir, tmp_path) -> None:
    # Given a.test migrated alone, then b.test configured onto the same server database URL spelled otherwise
    shared = tmp_path / "one.sqlite3"
    bench_dir.add_site("a.test", db_url=f"sqlite:///{shared}")
    bench_dir.add_site("b.test", db_url=f"sqlite:///{tmp_path / 'x' / '..' / 'one.sqlite3'}")
    bench = bench_dir.bench()
    # When b.test's code touches its database (the path every job and bgcore.connect block takes)
    with pytest.raises(DatabaseConfigError, match="is also the database of site 'a.test'"):
        with bgcore.connect("b.test", bench=bench):
            bgcore.db.get_db()
            bgcore.db.connection()
    with pytest.raises(DatabaseConfigError, match="is also the database of site 'b.test'"):
        database_for(bench, bench.site_config("a.test"), create=True)


def test_new_site_refuses_another_sites_database_however_spelled(bench_dir: BenchDir, tmp_path) -> None:
    bench_dir.add_site("a.test", db_url=f"sqlite:///{tmp_path / 'a.sqlite3'}")
    result = run(bench_dir, "new-site", "n.test", "--db-url", f"sqlite:///{tmp_path / 'sub' / '..' / 'a.sqlite3'}")
    assert result.exit_code == 1
    assert "already the database of site 'a.test'" in result.stderr
    assert not (bench_dir.sites / "n.test").exists()


def test_sites_with_their_own_databases_are_unaffected(bench_dir: BenchDir) -> None:
    assert run(bench_dir, "migrate").exit_code == 0
    result = run(bench_dir, "jobs", "failed", "--site", "b.test", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_a_worker_fails_a_job_of_a_site_whose_database_is_another_sites(bench_dir: BenchDir, tmp_path) -> None:
    from rq.job import Job

    from bgcore.rqbridge import SERIALIZER
    from bgcore.worker import run_worker

    # Given both sites migrated, then b.test's db_url edited to a.test's SQLite file
    assert run(bench_dir, "migrate").exit_code == 0
    bench_dir.add_site("b.test", db_url=f"sqlite:///{bench_dir.sites / 'a.test' / 'site.sqlite3'}")
    bench = bench_dir.bench()
    out = tmp_path / "visits.jsonl"
    with bgcore.connect("b.test", bench):
        job = bgcore.enqueue("testapp.isolation_tasks.visit", path=str(out))
    # When a worker runs b.test's job, which reads its database
    run_worker(bench, burst=True, quiet=True)
    # Then the job failed before touching a.test's data, with the reason naming both sites
    fetched = Job.fetch(job.id, connection=bench.redis(), serializer=SERIALIZER)
    assert fetched.get_status() == "failed"
    result = fetched.latest_result()
    assert result is not None and "is also the database of site 'a.test'" in str(result.exc_string)
    assert not out.exists()
