"""Per-site scheduler switches: order of strength and atomic writes to site_config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgcore.bench import Bench, SiteConfig
from bgcore.errors import SiteNotFound
from bgcore.scheduler.switches import Switch, blocking_switch, set_switch


def config(**data: object) -> SiteConfig:
    return SiteConfig(name="a.test", path=Path("/nonexistent"), data=dict(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, None),
        ({"scheduler_disabled": True}, Switch.DISABLED),
        ({"pause_scheduler": 1}, Switch.PAUSED),
        ({"maintenance_mode": "1"}, Switch.MAINTENANCE),
        ({"maintenance_mode": 0, "pause_scheduler": "false", "scheduler_disabled": "off"}, None),
        ({"maintenance_mode": True, "pause_scheduler": True, "scheduler_disabled": True}, Switch.MAINTENANCE),
        ({"pause_scheduler": True, "scheduler_disabled": True}, Switch.PAUSED),
    ],
)
def test_the_strongest_switch_that_is_on_names_the_stop(data: dict[str, object], expected: Switch | None) -> None:
    assert blocking_switch(config(**data)) == expected


def _bench(tmp_path: Path, common: dict[str, object] | None = None) -> Bench:
    sites = tmp_path / "sites"
    (sites / "a.test").mkdir(parents=True)
    (sites / "common_site_config.json").write_text(json.dumps(common or {}))
    (sites / "a.test" / "site_config.json").write_text(json.dumps({"installed_apps": ["x"], "db_url": "keep"}))
    return Bench(tmp_path)


def test_set_switch_keeps_other_keys_and_the_bench_sees_it_at_once(tmp_path: Path) -> None:
    # Given a site with its own keys
    bench = _bench(tmp_path)
    assert blocking_switch(bench.site_config("a.test")) is None
    # When it is paused
    path = set_switch(bench, "a.test", Switch.PAUSED, True)
    # Then the file keeps its keys, gains the switch, and the cached config sees it
    assert json.loads(path.read_text()) == {"installed_apps": ["x"], "db_url": "keep", "pause_scheduler": True}
    assert blocking_switch(bench.site_config("a.test")) == Switch.PAUSED
    # And turning it off removes the key again, leaving no temporary files behind
    set_switch(bench, "a.test", Switch.PAUSED, False)
    assert "pause_scheduler" not in json.loads(path.read_text())
    assert blocking_switch(bench.site_config("a.test")) is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["site_config.json"]


def test_switch_off_overrides_a_bench_wide_switch(tmp_path: Path) -> None:
    bench = _bench(tmp_path, {"maintenance_mode": True})
    assert blocking_switch(bench.site_config("a.test")) == Switch.MAINTENANCE
    set_switch(bench, "a.test", Switch.MAINTENANCE, False)
    assert blocking_switch(bench.site_config("a.test")) is None


def test_switch_on_an_unknown_site_is_refused(tmp_path: Path) -> None:
    bench = _bench(tmp_path)
    with pytest.raises(SiteNotFound, match="nope.test"):
        set_switch(bench, "nope.test", Switch.DISABLED, True)
