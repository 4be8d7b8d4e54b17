"""The one config schema: every key's checks, unknown keys, sources, masking, `config check` and `config show`."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from bgcore.config_schema import (
    SCHEMA, SETTINGS, Flag, Names, Number, Scope, Sentinel, Setting, Switch, Text, TimeZone, Workers, check_file,
    markdown_table, mask_url,
)
from bgcore.errors import ConfigError, InvalidConfigValue
from bgcore.queues import QueueSpec
from bgcore.retry import Retry
from bgcore.scheduler.status import site_status
from tests.cli_support import run
from tests.conftest import BenchDir

README = Path(__file__).parent.parent / "README.md"


def wrong_type(setting: Setting) -> Any:
    """A JSON value of the wrong type for ``setting``."""
    kind = setting.kind
    if isinstance(kind, Number):
        return "12"  # a number written as a string
    if isinstance(kind, Switch):
        return ["on"]
    if isinstance(kind, Flag):
        return "true"
    if isinstance(kind, (Text, TimeZone, Names)):
        return 42
    if isinstance(kind, Workers):
        return ["short"]
    assert isinstance(kind, Sentinel), kind
    return "127.0.0.1:26379"


def files_of(setting: Setting) -> list[str]:
    """The files a key may be written in: ``common``, ``site`` or both."""
    return {Scope.BENCH: ["common"], Scope.SITE: ["site"], Scope.BOTH: ["common", "site"]}[setting.scope]


CASES = [pytest.param(s, where, id=f"{s.key}-{where}") for s in SCHEMA for where in files_of(s)]


def write(bench_dir: BenchDir, where: str, **config: Any) -> Path:
    """Write ``config`` into the bench's file (``common``) or a.test's own file (``site``); return the file."""
    if where == "common":
        bench_dir.write_common(**config)
        (bench_dir.sites / "a.test" / "site_config.json").write_text("{}")  # nothing of its own to override
        return bench_dir.sites / "common_site_config.json"
    return bench_dir.add_site("a.test", **config) / "site_config.json"


def read(bench_dir: BenchDir, key: str) -> Any:
    """``key`` as the code reads it: the site's effective value (a.test)."""
    return bench_dir.bench().site_config("a.test").setting(key)


# -- every key, the wrong type -------------------------------------------------------------------
@pytest.mark.parametrize(("setting", "where"), CASES)
def test_a_value_of_the_wrong_type_is_one_error_naming_file_key_value_and_expected(
        bench_dir: BenchDir, setting: Setting, where: str) -> None:
    # Given the key written with a value of the wrong type
    value = wrong_type(setting)
    path = write(bench_dir, where, **{setting.key: value})
    # When the code reads the key
    with pytest.raises(InvalidConfigValue) as caught:
        read(bench_dir, setting.key)
    # Then one error names the file, the key, the value found (masked when secret) and what is expected
    error = caught.value
    message = str(error)
    assert message.startswith(f"{path}: {setting.key} must be ")
    assert f"found {setting.shown(value)!r}" in message and error.expected in message
    assert (error.file, error.key) == (str(path), setting.key)
    assert "\n" not in message
    # And `config check` reports it once, as an error of that file and key
    result = run(bench_dir, "config", "check", "--format", "json")
    assert result.exit_code == 1
    errors = [p for p in json.loads(result.stdout)["problems"] if p["level"] == "error"]
    assert [(p["file"], p["key"], p["message"]) for p in errors] == [(str(path), setting.key, message)]


def test_every_key_has_a_description_a_scope_and_a_default_that_passes_its_own_check() -> None:
    assert len(SETTINGS) == len(SCHEMA)
    for setting in SCHEMA:
        assert setting.description and setting.scope in Scope
        if setting.default is not None and not isinstance(setting.kind, Workers):
            assert setting.kind(setting.default, lambda *_: None) == setting.default, setting.key


# -- ranges and nested values --------------------------------------------------------------------
def _out_of_range() -> list[Any]:
    cases = []
    for s in SCHEMA:
        if isinstance(s.kind, Number):
            low = s.kind.minimum if s.kind.above else s.kind.minimum - (1 if s.kind.integer else 0.05)
            cases.append(pytest.param(s.key, low, id=f"{s.key}-low"))
            if s.kind.maximum is not None:
                cases.append(pytest.param(s.key, s.kind.maximum + 1, id=f"{s.key}-high"))
            if s.kind.integer:
                cases.append(pytest.param(s.key, s.kind.minimum + 0.5, id=f"{s.key}-fraction"))
            cases.append(pytest.param(s.key, True, id=f"{s.key}-boolean"))
    return cases


@pytest.mark.parametrize(("key", "value"), _out_of_range())
def test_a_number_out_of_its_range_is_an_error(bench_dir: BenchDir, key: str, value: Any) -> None:
    path = write(bench_dir, "common", **{key: value})
    with pytest.raises(InvalidConfigValue, match=re.escape(f"{path}: {key} must be")):
        read(bench_dir, key)


@pytest.mark.parametrize(("key", "value", "says"), [
    ("workers", {"q": {"timeout": 0}}, "workers.q.timeout must be a positive integer"),
    ("workers", {"q": {"background_workers": -1}}, "workers.q.background_workers must be a positive integer"),
    ("workers", {"q": 5}, "workers.q must be an object"),
    ("workers", {"a,b": {}}, "workers key 'a,b' must be a queue name"),
    ("workers", {"q": {"retry": {"max": "x"}}}, "workers.q: retry max must be an integer"),
    ("redis_sentinel", {"sentinels": [], "master": "m"}, "redis_sentinel.sentinels must be a non-empty list"),
    ("redis_sentinel", {"sentinels": ["h"], "master": "m"}, "redis_sentinel.sentinels must be a \"host:port\""),
    ("redis_sentinel", {"sentinels": ["h:99999"], "master": "m"}, "port 1 to 65535"),
    ("redis_sentinel", {"sentinels": ["h:26379"]}, "redis_sentinel.master must be"),
    ("redis_sentinel", {"sentinels": ["h:26379"], "master": "m", "db": -1}, "redis_sentinel.db must be"),
    ("redis_sentinel", {"sentinels": ["h:26379"], "master": "m", "password": 5}, "redis_sentinel.password must be"),
    ("worker_middleware", ["nodots"], "worker_middleware must be a list of dotted class paths"),
    ("time_zone", "Mars/Olympus", "time_zone must be an IANA time zone name"),
    ("redis_queue", "http://127.0.0.1:6379", "redis_queue must be a URL starting with redis://"),
    ("maintenance_mode", "maybe", "maintenance_mode must be true or false"),
])
def test_a_wrong_nested_or_shaped_value_names_the_part(bench_dir: BenchDir, key: str, value: Any, says: str) -> None:
    write(bench_dir, "common", **{key: value})
    with pytest.raises(InvalidConfigValue, match=re.escape(says)):
        read(bench_dir, key)


def test_good_values_come_back_typed(bench_dir: BenchDir) -> None:
    bench_dir.write_common(workers={"q": {"timeout": 60, "background_workers": 2, "retry": 3}}, apps_path="apps",
                           redis_sentinel={"sentinels": ["h:26379"], "master": "m"}, pause_scheduler="off",
                           scheduler_lease_seconds=9)
    bench = bench_dir.bench()
    assert bench.settings.get("workers") == {"q": QueueSpec("q", 60, 2, Retry(max=3))}
    assert list(bench.queues) == ["short", "default", "long", "q"]
    assert bench.settings.get("apps_path") == ("apps",)
    assert bench.settings.get("redis_sentinel") == {"sentinels": ["h:26379"], "master": "m", "password": None,
                                                    "sentinel_password": None, "db": 0}
    assert bench.settings.get("pause_scheduler") is False
    assert bench.settings.get("scheduler_lease_seconds") == 9.0


def test_every_key_left_out_is_its_default(bench_dir: BenchDir) -> None:
    (bench_dir.sites / "common_site_config.json").write_text("{}")
    bench_dir.add_site("a.test")
    config = bench_dir.bench().site_config("a.test")
    for setting in SCHEMA:
        expected = ("testapp",) if setting.key == "installed_apps" else setting.default
        assert config.setting(setting.key) == expected, setting.key


# -- where a key may be set ----------------------------------------------------------------------
def test_a_site_value_overrides_the_bench_value_and_says_where_it_came_from(bench_dir: BenchDir) -> None:
    bench_dir.write_common(time_zone="Asia/Kolkata", scheduler_tick_interval=30)
    bench_dir.add_site("a.test", time_zone="Europe/Berlin")
    settings = bench_dir.bench().site_config("a.test").settings
    assert settings.lookup("time_zone") == ("Europe/Berlin", "site_config.json")
    assert settings.lookup("scheduler_tick_interval") == (30.0, "common_site_config.json")
    assert settings.lookup("failure_ttl") == (604800.0, "default")


def test_a_bench_key_in_a_site_file_is_ignored_with_a_warning(bench_dir: BenchDir) -> None:
    bench_dir.write_common(shutdown_grace_seconds=12)
    site = bench_dir.add_site("a.test", shutdown_grace_seconds=99)
    config = bench_dir.bench().site_config("a.test")
    assert config.setting("shutdown_grace_seconds") == 12.0
    [warning] = config.settings.own.warnings
    assert warning.message == (f"{site / 'site_config.json'}: shutdown_grace_seconds is a bench key, read only from "
                               "common_site_config.json; the value here has no effect (move it there)")


def test_a_site_key_in_the_bench_file_is_an_error(bench_dir: BenchDir) -> None:
    bench_dir.write_common(db_url="postgresql://u:secret@h/db")
    result = run(bench_dir, "config", "check")
    assert result.exit_code == 1
    assert "db_url is not allowed in the bench config" in result.stdout and "secret" not in result.stdout


# -- unknown keys --------------------------------------------------------------------------------
def test_an_unknown_key_is_a_warning_with_a_suggestion_logged_once(bench_dir: BenchDir,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    # Given a misspelt key in the bench file and an app's own key in a site file
    bench_dir.write_common(schduler_tick_interval=5, workers={"q": {"timout": 5}})
    site = bench_dir.add_site("a.test", encryption_key="x")
    common = bench_dir.sites / "common_site_config.json"
    # When the config is read (twice) and checked
    with caplog.at_level(logging.WARNING, logger="bgcore.config_schema"):
        bench_dir.bench().site_config("a.test").setting("time_zone")
        bench_dir.bench().site_config("a.test").setting("time_zone")
    result = run(bench_dir, "config", "check")
    # Then the typo is a warning with "did you mean", logged once; the app's key a plain warning; exit 0
    typo = (f"{common}: unknown key 'schduler_tick_interval' (bgcore ignores it); "
            "did you mean 'scheduler_tick_interval'?")
    assert [r.getMessage() for r in caplog.records].count(typo) == 1
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"warning: {typo}" in lines
    assert (f"warning: {common}: workers.q.timout: unknown queue setting 'timout' (known: timeout, "
            "background_workers, retry, group); did you mean 'timeout'?") in lines
    assert f"warning: {site / 'site_config.json'}: unknown key 'encryption_key' (bgcore ignores it)" in lines
    assert lines[-1] == "3 file(s) checked: 0 error(s), 3 warning(s)"


def test_check_file_collects_every_error_and_warning_of_one_file() -> None:
    checked = check_file({"failure_ttl": 0, "job_log_keep_days": "x", "bench_idd": "b", "hold_jobs": True},
                         "/b/sites/common_site_config.json", bench=True)
    assert sorted(checked.errors) == ["failure_ttl", "job_log_keep_days"]
    assert [w.key for w in checked.warnings] == ["bench_idd"] and checked.values == {"hold_jobs": True}


# -- config check ------------------------------------------------------------------------------
def test_config_check_lists_problems_of_every_site_and_keeps_going_past_a_broken_file(bench_dir: BenchDir) -> None:
    # Given a clean bench, then one site with a wrong value and one whose file is not JSON
    assert run(bench_dir, "config", "check").exit_code == 0
    bad = bench_dir.add_site("bad.test", scheduler_tick_interval=0)
    broken = bench_dir.add_site("broken.test")
    (broken / "site_config.json").write_text('{"installed_apps": [')
    # When the bench is checked
    result = run(bench_dir, "config", "check")
    # Then both are named, one line each, and the exit status is 1
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"error: {bad / 'site_config.json'}: scheduler_tick_interval must be") for line in lines)
    assert any(line.startswith(f"error: {broken / 'site_config.json'}: invalid JSON at line 1") for line in lines)
    assert lines[-1] == "5 file(s) checked: 2 error(s), 0 warning(s)"


def test_config_check_reports_a_db_url_no_dialect_knows(bench_dir: BenchDir) -> None:
    bench_dir.add_site("a.test", db_url="nosuchdb://u:hidden@h/x")
    result = run(bench_dir, "config", "check", "--format", "json")
    assert result.exit_code == 1 and "hidden" not in result.stdout
    [problem] = json.loads(result.stdout)["problems"]
    assert problem["key"] == "db_url" and "not a usable database URL" in problem["message"]


# -- config show ---------------------------------------------------------------------------------
def test_config_show_gives_each_value_and_its_source(bench_dir: BenchDir) -> None:
    bench_dir.write_common(scheduler_tick_interval=30, time_zone="Asia/Kolkata")
    bench_dir.add_site("a.test", time_zone="Europe/Berlin", pause_scheduler=True)
    result = run(bench_dir, "config", "show", "--site", "a.test", "--format", "json")
    assert result.exit_code == 0, result.output
    shown = {row["key"]: (row["value"], row["source"]) for row in json.loads(result.stdout)}
    assert shown["time_zone"] == ("Europe/Berlin", "site_config.json")
    assert shown["scheduler_tick_interval"] == (30, "common_site_config.json")
    assert shown["pause_scheduler"] == (True, "site_config.json")
    assert shown["max_jobs_per_horse"] == (5000, "default")
    assert set(shown) == set(SETTINGS)
    table = run(bench_dir, "config", "show", "--site", "a.test")
    assert table.exit_code == 0 and "Europe/Berlin" in table.stdout and "site_config.json" in table.stdout


def test_config_show_marks_a_wrong_value_and_refuses_an_unknown_site(bench_dir: BenchDir) -> None:
    bench_dir.add_site("a.test", scheduler_tick_interval="soon")
    rows = json.loads(run(bench_dir, "config", "show", "--site", "a.test", "--format", "json").stdout)
    [row] = [r for r in rows if r["key"] == "scheduler_tick_interval"]
    assert row["value"] == "soon" and row["source"] == "site_config.json" and "must be a number" in row["error"]
    missing = run(bench_dir, "config", "show", "--site", "nope.test")
    assert missing.exit_code == 1 and "unknown site 'nope.test'" in missing.stderr


SECRETS = dict(
    redis_queue="redis://app:hunter2@127.0.0.1:6379/0",
    dashboard_password="hunter2",
    redis_sentinel={"sentinels": ["h:26379"], "master": "m", "password": "hunter2", "sentinel_password": "hunter2"},
)


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_config_show_and_check_never_print_a_password(bench_dir: BenchDir, fmt: str) -> None:
    bench_dir.write_common(**SECRETS)
    bench_dir.add_site("a.test", db_url="postgresql+psycopg2://u:hunter2@127.0.0.1/x")
    bench_dir.add_site("b.test", dashboard_password="hunter2", redis_queue="rediss://:hunter2@h/0")  # misplaced
    for args in (["config", "show", "--site", "a.test"], ["config", "show"], ["config", "check"]):
        result = run(bench_dir, *args, "--format", fmt)
        assert "hunter2" not in result.output + result.stderr, args
    shown = {r["key"]: r["value"] for r in json.loads(run(bench_dir, "config", "show", "--site", "a.test",
                                                          "--format", "json").stdout)}
    assert shown["redis_queue"] == "redis://app:***@127.0.0.1:6379/0"
    assert shown["db_url"] == "postgresql+psycopg2://u:***@127.0.0.1/x"
    assert shown["dashboard_password"] == "***"
    assert shown["redis_sentinel"]["password"] == shown["redis_sentinel"]["sentinel_password"] == "***"


@pytest.mark.parametrize(("key", "value", "shown"), [
    ("redis_queue", "http://app:hunter2@h:6379", "http://app:***@h:6379"),
    ("redis_sentinel", {"sentinels": ["h:26379"], "master": "m", "password": ["hunter2"]}, "'***'"),
    ("redis_sentinel", "hunter2", "'***'"),
    ("dashboard_password", ["hunter2"], "'***'"),
])
def test_a_wrong_secret_value_is_masked_in_its_error(bench_dir: BenchDir, key: str, value: Any, shown: str) -> None:
    bench_dir.write_common(**{key: value})
    with pytest.raises(ConfigError) as caught:
        bench_dir.bench().settings.get(key)
    assert "hunter2" not in str(caught.value) and shown in str(caught.value)


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:p%40ss@h/0", "redis://user:***@h/0"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("unix:///tmp/r.sock?db=0&password=pw", "unix:///tmp/r.sock?db=0&password=***"),
    ("mysql+pymysql://root@127.0.0.1/test", "mysql+pymysql://root@127.0.0.1/test"),
])
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_a_switch_that_is_neither_on_nor_off_is_that_sites_error_only(bench_dir: BenchDir,
                                                                      redis_client: Any) -> None:
    # Given b.test with a switch value that means neither on nor off
    bench_dir.add_site("b.test", pause_scheduler="maybe")
    # When the scheduler's status of every site is asked for
    rows = {r.site: r for r in site_status(bench_dir.bench(), ["a.test", "b.test"])}
    # Then b.test is refused naming the key, and a.test is still shown as active
    assert rows["a.test"].active and rows["a.test"].error is None
    assert not rows["b.test"].active and "pause_scheduler must be true or false, found 'maybe'" in str(rows["b.test"].error)


# -- checked once per file version ---------------------------------------------------------------
def test_settings_are_checked_once_per_version_of_the_file(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    first = bench.settings
    assert bench.settings is first
    bench_dir.write_common(max_jobs_per_horse=7, worker_heartbeat_seconds=0.25)
    assert bench.settings is not first and bench.settings.get("max_jobs_per_horse") == 7


# -- the README ----------------------------------------------------------------------------------
def test_the_readme_table_is_the_one_the_schema_generates() -> None:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- config-table:[^\n]*-->\n(.*?)\n<!-- config-table end -->", text, re.S)
    assert found is not None, "README.md lost its config-table markers"
    assert found[1] == markdown_table(), "run: python -m bgcore.config_schema --markdown, and paste it into README.md"
