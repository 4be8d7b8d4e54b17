"""Bench, sites and config: discovery, overlays, names, broken files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgcore.bench import Bench, validate_site_name
from bgcore.errors import BenchNotFound, ConfigError, InvalidSiteName, SiteNotFound, UnknownQueue
from bgcore.queues import parse_queue_list

from tests.conftest import BenchDir


def test_sites_are_directories_with_a_site_config(bench_dir: BenchDir) -> None:
    # Given a directory without site_config.json and a hidden directory
    (bench_dir.sites / "not-a-site").mkdir()
    (bench_dir.sites / ".hidden").mkdir()
    (bench_dir.sites / ".hidden" / "site_config.json").write_text("{}")
    # Then only the real sites are listed
    assert bench_dir.bench().site_names() == ["a.test", "b.test"]


def test_site_config_overrides_common_config(bench_dir: BenchDir) -> None:
    bench_dir.write_common(time_zone="UTC", scheduler_tick_interval=30)
    bench_dir.add_site("c.test", time_zone="Asia/Kolkata")
    config = bench_dir.bench().site_config("c.test")
    assert config.get("time_zone") == "Asia/Kolkata"
    assert config.get("scheduler_tick_interval") == 30
    assert config.installed_apps == ("testapp",)


def test_bench_is_found_from_argument_env_then_cwd(bench_dir: BenchDir, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BGCORE_BENCH", raising=False)
    monkeypatch.chdir(bench_dir.path)
    assert Bench.find().path == bench_dir.path
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BGCORE_BENCH", str(bench_dir.path))
    assert Bench.find().path == bench_dir.path
    assert Bench.find(bench_dir.path).path == bench_dir.path


def test_a_directory_without_sites_is_not_a_bench(tmp_path: Path) -> None:
    with pytest.raises(BenchNotFound, match=r"has no sites/ directory; pass the bench directory \(bench=\.\.\. to "
                                            r"bgcore.connect or Bench.find\) or set \$BGCORE_BENCH"):
        Bench(tmp_path)


@pytest.mark.parametrize("name", ["a.example.com", "site1.localhost", "erp", "my_site", "a-b.c-d"])
def test_host_like_site_names_are_accepted(name: str) -> None:
    assert validate_site_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "a/../../b", "/etc/passwd", ".hidden", "a..b",
                                  "a/b", "a\\b", "a b", "-a", "a.", "site||x"])
def test_names_that_could_leave_sites_are_refused(bench_dir: BenchDir, name: str) -> None:
    with pytest.raises(InvalidSiteName, match="site name"):
        bench_dir.bench().site_config(name)


def test_unknown_site_names_the_file_and_lists_known_sites(bench_dir: BenchDir) -> None:
    with pytest.raises(SiteNotFound, match=r"unknown site 'nope\.test'.*sites on this bench: a\.test, b\.test"):
        bench_dir.bench().site_config("nope.test")


def test_broken_site_config_names_file_and_problem_and_spares_other_sites(bench_dir: BenchDir) -> None:
    # Given one site whose site_config.json is not valid JSON
    broken = bench_dir.add_site("broken.test")
    (broken / "site_config.json").write_text('{"installed_apps": ["testapp",]')
    bench = bench_dir.bench()
    # Then it is still listed, its error names the file, line and problem
    assert "broken.test" in bench.site_names()
    with pytest.raises(ConfigError) as info:
        bench.site_config("broken.test")
    message = str(info.value)
    assert str(broken / "site_config.json") in message
    assert "invalid JSON at line 1" in message
    # And the other sites still load
    assert bench.site_config("a.test").installed_apps == ("testapp",)


def test_site_config_must_be_an_object(bench_dir: BenchDir) -> None:
    site = bench_dir.add_site("list.test")
    (site / "site_config.json").write_text(json.dumps(["testapp"]))
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        bench_dir.bench().site_config("list.test")


def test_installed_apps_must_be_a_list_of_names(bench_dir: BenchDir) -> None:
    bench_dir.add_site("bad.test", installed_apps="testapp")
    with pytest.raises(ConfigError, match="installed_apps must be a list"):
        bench_dir.bench().site_config("bad.test").installed_apps


def test_default_and_custom_queues(bench_dir: BenchDir) -> None:
    bench_dir.write_common(workers={"myqueue": {"timeout": 5000, "background_workers": 4}})
    queues = bench_dir.bench().queues
    assert [(q.name, q.timeout) for q in queues.values()] == [
        ("short", 300), ("default", 300), ("long", 1500), ("myqueue", 5000)]
    assert queues["myqueue"].background_workers == 4


def test_queue_list_keeps_priority_order_and_refuses_unknown(bench_dir: BenchDir) -> None:
    queues = bench_dir.bench().queues
    assert [q.name for q in parse_queue_list(queues, "long,short")] == ["long", "short"]
    with pytest.raises(UnknownQueue, match="unknown queue 'nope'; valid queues are: short, default, long"):
        parse_queue_list(queues, "short,nope")


@pytest.mark.parametrize("workers", [{"q": {"timeout": "soon"}}, {"q": 5}, {"bad:name": {}}, []])
def test_broken_workers_config_is_a_clear_error(bench_dir: BenchDir, workers: object) -> None:
    bench_dir.write_common(workers=workers)
    with pytest.raises(ConfigError, match="common_site_config.json"):
        bench_dir.bench().queues
