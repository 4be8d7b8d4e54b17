"""init, new-site --create-db, install-app / uninstall-app, drop-site. In-process CLI; real servers."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

import bgcore
from bgcore import keys
from bgcore.jobs import queued_count
from bgcore.migrate import migrate_site
from bgcore.scheduler.registry import load_registry
from bgcore.db.engines import database_for
from tests.cli_support import run, run_json
from tests.conftest import BenchDir
from tests.test_db_support import SERVER_ENV, _unavailable


def _events(bench, site: str) -> list[str]:  # type: ignore[no-untyped-def]
    with database_for(bench, bench.site_config(site)).transaction() as connection:
        return sorted(e.method for e in load_registry(connection))


def test_init_creates_a_bench_that_the_commands_use(tmp_path: Path) -> None:
    from click.testing import CliRunner
    from bgcore.cli import main

    target = tmp_path / "mybench"
    result = CliRunner(env={"BGCORE_BENCH": None}).invoke(main, ["init", str(target)])
    assert result.exit_code == 0 and f"created bench {target}" in result.stdout
    assert (target / "sites").is_dir() and (target / "apps").is_dir()
    assert json.loads((target / "sites" / "common_site_config.json").read_text()) == {"apps_path": ["apps"]}
    listed = CliRunner().invoke(main, ["--bench", str(target), "sites", "--format", "json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    again = CliRunner().invoke(main, ["init", str(target)])
    assert again.exit_code == 1 and "already holds a bench" in again.stderr


def test_a_failed_new_site_does_not_point_to_the_file_it_removed(bench_dir: BenchDir) -> None:
    result = run(bench_dir, "new-site", "c.test", "--db-url", "postgresql+psycopg2://nobody@127.0.0.1:1/x")
    assert result.exit_code == 1 and "site 'c.test' was not created" in result.stderr
    assert "site_config.json" not in result.stderr and "check --db-url" in result.stderr
    assert not (bench_dir.sites / "c.test").exists()


@pytest.mark.parametrize("kind", ["postgres", "mariadb"])
def test_new_site_create_db_then_drop_site_drop_db(bench_dir: BenchDir, kind: str) -> None:
    base = os.environ.get(SERVER_ENV[kind])
    if not base:
        _unavailable(f"{SERVER_ENV[kind]} is not set")
    name = f"bgcore_t_{uuid.uuid4().hex[:10]}_new"
    url = sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    # When a site is created on a database that does not exist yet
    created = run(bench_dir, "new-site", "c.test", "--db-url", url, "--create-db", "--install-app", "testapp")
    assert created.exit_code == 0, created.stderr
    with bgcore.connect("c.test", bench_dir.bench()):
        bgcore.new_doc("ToDo", "t1").save()
    # Then it has its schema; and drop-site --drop-db removes the site and the database
    dropped = run(bench_dir, "drop-site", "c.test", "--drop-db", "--yes")
    assert dropped.exit_code == 0, dropped.stderr
    assert "its database" in dropped.stdout and not (bench_dir.sites / "c.test").exists()
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        names = {r[0] for r in conn.exec_driver_sql(
            "SELECT datname FROM pg_database" if kind == "postgres" else "SHOW DATABASES")}
    admin.dispose()
    assert name not in names


def test_install_and_uninstall_app_edit_the_config_keeping_its_format_then_migrate(bench_dir: BenchDir,
                                                                                    tmp_path: Path) -> None:
    app = tmp_path / "apps" / "extraapp"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "tasks.py").write_text("def tick():\n    pass\n")
    (app / "hooks.py").write_text('scheduler_events = {"hourly": ["extraapp.tasks.tick"]}\n')
    bench_dir.write_common(apps_path=[str(tmp_path / "apps"), str(Path(__file__).parent.parent / "fixtures/apps")])
    config = bench_dir.sites / "a.test" / "site_config.json"
    config.write_text(json.dumps({"time_zone": "UTC", "installed_apps": ["testapp"]}, indent=4) + "\n")
    migrate_site(bench_dir.bench(), "a.test")
    # When an app is installed
    result = run(bench_dir, "install-app", "extraapp", "--site", "a.test")
    # Then the file keeps its indent and key order, the app is last, and its events are registered
    assert result.exit_code == 0, result.stderr
    assert "registry: added 1" in result.stdout
    assert config.read_text() == json.dumps({"time_zone": "UTC", "installed_apps": ["testapp", "extraapp"]},
                                            indent=4) + "\n"
    assert _events(bench_dir.bench(), "a.test") == ["extraapp.tasks.tick"]
    # And uninstalling removes it and its events
    assert run(bench_dir, "uninstall-app", "extraapp", "--site", "a.test").exit_code == 0
    assert json.loads(config.read_text())["installed_apps"] == ["testapp"]
    assert _events(bench_dir.bench(), "a.test") == []
    # And a package without hooks.py, or one that does not import, is refused
    not_app = run(bench_dir, "install-app", "json", "--site", "a.test")
    assert not_app.exit_code == 1 and "has no hooks.py" in not_app.stderr
    missing = run(bench_dir, "install-app", "nosuchapp", "--site", "a.test")
    assert missing.exit_code == 1 and "does not import" in missing.stderr
    again = run(bench_dir, "uninstall-app", "extraapp", "--site", "a.test")
    assert again.exit_code == 1 and "is not installed on site 'a.test'" in again.stderr


def test_drop_site_removes_its_jobs_and_state_and_never_a_site_named_alike(bench_dir: BenchDir) -> None:
    bench_dir.add_site("erp")
    bench_dir.add_site("erp2")
    bench = bench_dir.bench()
    redis = bench.redis()
    for site in ("erp", "erp2"):
        migrate_site(bench, site)
        with bgcore.connect(site, bench):
            bgcore.enqueue("testapp.tasks.noop", queue="long")
        redis.hset(keys.scheduler_last_run(bench.bench_id, site), "e1", "1")
        redis.hset(keys.scheduler_site_errors(bench.bench_id), site, "x")
    refused = run(bench_dir, "drop-site", "erp")
    assert refused.exit_code == 2 and "add --yes" in refused.stderr
    result = run(bench_dir, "drop-site", "erp", "--yes")
    assert result.exit_code == 0 and "1 queued job(s)" in result.stdout
    assert not (bench_dir.sites / "erp").exists() and (bench_dir.sites / "erp2").exists()
    assert queued_count(bench, "long", "erp") == 0 and queued_count(bench, "long", "erp2") == 1
    assert not redis.exists(keys.scheduler_last_run(bench.bench_id, "erp"))
    assert redis.exists(keys.scheduler_last_run(bench.bench_id, "erp2"))
    assert redis.hkeys(keys.scheduler_site_errors(bench.bench_id)) == [b"erp2"]
    assert [s["site"] for s in run_json(bench_dir, "sites")] == ["a.test", "b.test", "erp2"]
