"""One site's broken config fails alone: every command and the daemon report it and serve the other sites.

In-process CLI (``CliRunner`` on ``bgcore.cli.main``) against the session's real redis-server.
"""

from __future__ import annotations

import json
import pytest
from click.testing import CliRunner, Result

from bgcore import keys
from bgcore.cli import main
from bgcore.scheduler.daemon import SchedulerDaemon
from bgcore.scheduler.switches import Switch, set_switch
from tests.conftest import BenchDir

NOT_UTF8 = b'{"installed_apps": ["testapp"], "time_zone": "Europe/Z\xfcrich"}'  # latin-1, not UTF-8


def run(bench: BenchDir, *args: str) -> Result:
    return CliRunner().invoke(main, ["--bench", str(bench.path), *args])


@pytest.fixture
def broken(bench_dir: BenchDir) -> BenchDir:
    """Sites a.test, b.test and c.test, migrated; then b.test's site_config.json gets bytes that are not UTF-8."""
    bench_dir.add_site("c.test")
    assert run(bench_dir, "migrate").exit_code == 0
    (bench_dir.sites / "b.test" / "site_config.json").write_bytes(NOT_UTF8)
    return bench_dir


def broken_file(bench: BenchDir) -> str:
    return str(bench.sites / "b.test" / "site_config.json")


def test_a_non_utf8_config_is_one_error_naming_the_file(broken: BenchDir) -> None:
    # When the sites are listed
    result = run(broken, "sites", "--format", "json")
    # Then b.test shows one error naming its file and the fix; the others load
    assert result.exit_code == 0, result.output
    rows = {r["site"]: r["config"] for r in json.loads(result.stdout)}
    assert rows["a.test"] == rows["c.test"] == "ok"
    assert rows["b.test"].startswith(f"ERROR: {broken_file(broken)}: not UTF-8 text (byte 0xfc at line 1")
    assert "save it as UTF-8" in rows["b.test"]


def test_doctor_reports_the_broken_site_and_checks_the_others(broken: BenchDir) -> None:
    result = run(broken, "doctor", "--format", "json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["redis_ok"] is True
    # (doctor also says that no scheduler leads: none runs in this test)
    site_problems = [p for p in report["problems"] if "no scheduler leads" not in p]
    assert len(site_problems) == 1 and broken_file(broken) in site_problems[0]
    assert "not UTF-8" in site_problems[0] and "Traceback" not in result.output


def test_migrate_fails_for_the_broken_site_only(broken: BenchDir) -> None:
    result = run(broken, "migrate")
    assert result.exit_code == 1
    assert "a.test: schema up to date" in result.stdout and "c.test: schema up to date" in result.stdout
    assert f"b.test: FAILED: {broken_file(broken)}: not UTF-8" in result.stderr
    assert "migrate failed for 1 site(s): b.test" in result.stderr


@pytest.mark.parametrize("content", [NOT_UTF8, b'{"installed_apps": [', b"[1, 2]"],
                         ids=["not-utf8", "not-json", "not-an-object"])
def test_scheduler_status_all_shows_every_site_with_the_broken_one_as_an_error(
    broken: BenchDir, content: bytes
) -> None:
    (broken.sites / "b.test" / "site_config.json").write_bytes(content)
    result = run(broken, "scheduler", "status", "--site", "all", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {r["site"]: r for r in json.loads(result.stdout)}
    assert sorted(rows) == ["a.test", "b.test", "c.test"]
    assert rows["a.test"]["active"] and rows["c.test"]["active"]
    assert not rows["b.test"]["active"] and rows["b.test"]["error"].startswith(broken_file(broken))


@pytest.mark.parametrize("command, key", [
    (("scheduler", "disable"), Switch.DISABLED.value),
    (("scheduler", "pause"), Switch.PAUSED.value),
    (("set-maintenance-mode", "on"), Switch.MAINTENANCE.value),
])
def test_a_switch_for_all_sites_switches_every_good_site_then_exits_1(
    broken: BenchDir, command: tuple[str, ...], key: str
) -> None:
    # When a switch is set for every site while b.test (between the two others) is broken
    result = run(broken, *command, "--site", "all")
    # Then a.test and c.test are switched, b.test is reported by file, and the exit status is 1
    assert result.exit_code == 1
    assert "for site a.test" in result.stdout and "for site c.test" in result.stdout
    assert f"Error: {broken_file(broken)}: not UTF-8" in result.stderr
    assert f"{key} not changed for 1 site(s): b.test" in result.stderr
    for site in ("a.test", "c.test"):
        assert json.loads((broken.sites / site / "site_config.json").read_text())[key] is True
    assert (broken.sites / "b.test" / "site_config.json").read_bytes() == NOT_UTF8


def test_the_daemon_serves_the_other_sites_and_picks_up_their_resume(broken: BenchDir) -> None:
    # Given a daemon while b.test's config is not UTF-8 and c.test is paused
    bench = broken.bench()
    set_switch(bench, "c.test", Switch.PAUSED, True)
    daemon = SchedulerDaemon(bench)
    daemon.rescan()
    assert sorted(daemon.timetable.sites) == ["a.test"]
    assert broken_file(broken) in daemon.errors["b.test"]
    # When c.test is resumed
    set_switch(bench, "c.test", Switch.PAUSED, False)
    daemon.rescan()
    # Then the next rescan schedules it, b.test still refused and published for `scheduler status`
    assert sorted(daemon.timetable.sites) == ["a.test", "c.test"]
    assert b"not UTF-8" in bench.redis().hget(keys.scheduler_site_errors(bench.bench_id), "b.test")


@pytest.mark.parametrize("value", [1e12, "Infinity", "NaN", -5, 0, 86401, True, "60"])
def test_an_absurd_tick_interval_is_refused_for_that_site_only(broken: BenchDir, value: object) -> None:
    # Given c.test with an absurd scheduler_tick_interval (JSON allows Infinity and NaN literals)
    raw = value if isinstance(value, str) and value in ("Infinity", "NaN") else json.dumps(value)
    (broken.sites / "c.test" / "site_config.json").write_text(
        f'{{"installed_apps": ["testapp"], "scheduler_tick_interval": {raw}}}')
    bench = broken.bench()
    daemon = SchedulerDaemon(bench)
    # When the daemon scans twice (a rescan used to raise OverflowError for every site)
    daemon.rescan()
    daemon.rescan()
    # Then only a.test is scheduled; c.test is refused with a message naming the key and the limits
    assert sorted(daemon.timetable.sites) == ["a.test"]
    error = daemon.errors["c.test"]
    assert "scheduler_tick_interval must be a number of seconds above 0 and at most 86400" in error
    assert str(broken.sites / "c.test" / "site_config.json") in error
    # And `scheduler status` shows the same reason
    status = run(broken, "scheduler", "status", "--site", "c.test", "--format", "json")
    assert "at most 86400" in json.loads(status.stdout)[0]["error"]


def test_a_tick_interval_of_a_day_is_accepted(bench_dir: BenchDir) -> None:
    bench_dir.add_site("a.test", scheduler_tick_interval=86400)
    assert run(bench_dir, "migrate").exit_code == 0
    daemon = SchedulerDaemon(bench_dir.bench())
    daemon.rescan()
    assert daemon.timetable.sites["a.test"].interval == 86400.0
