"""Errors that say what, where and what to do, once; root options after the command name. In-process CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from bgcore.bench import Bench
from bgcore.cli import main
from bgcore.errors import BenchNotFound
from tests.cli_support import run
from tests.conftest import FIXTURE_APPS, BenchDir


def _bare(*args: str) -> tuple[int, str, str]:
    """The CLI with no --bench before the command name and no $BGCORE_BENCH."""
    result = CliRunner(env={"BGCORE_BENCH": None}).invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_bench_and_verbose_are_accepted_after_the_command_name(bench_dir: BenchDir) -> None:
    code, out, _ = _bare("sites", "--bench", str(bench_dir.path), "--format", "json")
    assert code == 0 and '"a.test"' in out
    code, out, _ = _bare("scheduler", "status", "--site", "all", "--bench", str(bench_dir.path))
    assert code == 0 and "a.test" in out
    code, _, err = _bare("enqueue", "testapp.tasks.nope", "--site", "a.test", "--bench", str(bench_dir.path), "-v")
    assert code == 1 and "Traceback" in err and "unknown method testapp.tasks.nope" in err


def test_bench_not_found_speaks_python_in_the_api_and_cli_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(BenchNotFound) as caught:
        Bench.find(tmp_path)
    assert "bench=..." in str(caught.value) and "--bench" not in str(caught.value)
    code, _, err = _bare("--bench", str(tmp_path), "sites")
    assert code == 1 and "pass --bench DIR" in err and "bench=..." not in err


def test_a_method_outside_any_app_says_it_must_belong_to_an_installed_app(bench_dir: BenchDir) -> None:
    result = run(bench_dir, "enqueue", "os.system", "--site", "a.test", "--kwargs", '{"command": "true"}')
    assert result.exit_code == 1
    assert "a job's method must belong to an app installed on the site (installed_apps: testapp)" in result.stderr
    assert "'os' is not an app" in result.stderr and "is not installed" not in result.stderr
    other = run(bench_dir, "enqueue", "otherapp.tasks.noop", "--site", "a.test")
    assert other.exit_code == 1 and "app 'otherapp' is not installed on it" in other.stderr


def test_a_misspelt_keyword_is_named(bench_dir: BenchDir) -> None:
    result = run(bench_dir, "enqueue", "testapp.tasks.add", "--site", "a.test", "--kwargs", '{"a": 1, "bb": 2}')
    assert result.exit_code == 1
    assert "unexpected keyword argument 'bb' (did you mean 'b'?)" in result.stderr


def test_an_app_level_hooks_error_is_reported_once_naming_the_sites(bench_dir: BenchDir, tmp_path: Path) -> None:
    # Given an app whose hooks.py is broken, installed on three sites
    app = tmp_path / "apps" / "brokenapp"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    (app / "hooks.py").write_text('scheduler_events = {"hourli": ["brokenapp.tasks.tick"]}\n')
    bench_dir.write_common(apps_path=[str(tmp_path / "apps"), str(FIXTURE_APPS)])
    for site in ("a.test", "b.test", "c.test"):
        bench_dir.add_site(site, installed_apps=["brokenapp"])
    bench_dir.add_site("ok.test")
    # When the bench is migrated
    result = run(bench_dir, "migrate")
    # Then the problem is one line naming the three sites, and the healthy site migrated
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith("3 sites (a.test, b.test, c.test): FAILED: ")
    assert "hourli" in failed[0]
    assert "ok.test: created tables" in result.stdout
