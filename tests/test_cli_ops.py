"""The operator's commands, through the real CLI entry point (in-process, click's CliRunner)."""

from __future__ import annotations

import pytest

from tests.cli_support import run, run_json
from tests.conftest import BenchDir


def test_sites_json_gives_installed_apps_as_a_list(bench_dir: BenchDir) -> None:
    # Given a site with two apps, one with none, and one whose config is broken
    bench_dir.add_site("two.test", installed_apps=["testapp", "otherapp"])
    bench_dir.add_site("none.test", installed_apps=[])
    (bench_dir.add_site("broken.test") / "site_config.json").write_text("{")
    # When the sites are listed as JSON
    rows = {row["site"]: row for row in run_json(bench_dir, "sites")}
    # Then installed_apps is a list, in hook order, for every site
    assert rows["two.test"]["installed_apps"] == ["testapp", "otherapp"]
    assert rows["none.test"]["installed_apps"] == []
    assert rows["broken.test"]["installed_apps"] == [] and rows["broken.test"]["config"].startswith("ERROR:")
    # And the table still joins them for people
    assert "testapp, otherapp" in run(bench_dir, "sites").stdout


@pytest.mark.parametrize("queues", ["", " ", ",", " , ", "short,,long", "short,"])
def test_worker_with_an_empty_or_blank_queue_list_is_a_usage_error(bench_dir: BenchDir, queues: str) -> None:
    result = run(bench_dir, "worker", "--burst", "--queue", queues)
    assert result.exit_code == 2
    assert "Invalid value for '--queue'" in result.stderr and "names no queue or has an empty name" in result.stderr


def test_parse_queue_list_never_reads_an_empty_list_as_every_queue(bench_dir: BenchDir) -> None:
    from bgcore.errors import UnknownQueue
    from bgcore.queues import parse_queue_list

    queues = bench_dir.bench().queues
    assert [q.name for q in parse_queue_list(queues, None)] == ["short", "default", "long"]
    for text in ("", " , "):
        with pytest.raises(UnknownQueue, match="names no queue"):
            parse_queue_list(queues, text)
    with pytest.raises(UnknownQueue, match="has an empty queue name"):
        parse_queue_list(queues, "short,,long")
