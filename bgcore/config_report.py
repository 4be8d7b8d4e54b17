"""What ``bgcore config check`` and ``bgcore config show`` report, built on :mod:`bgcore.config_schema`.

:func:`check_bench` checks every config file of a bench (the bench's, then
each site's) and returns one :class:`Problem` per wrong value (error) or
unknown / misplaced key (warning). :func:`effective` gives a site's (or the
bench's) value of every key and where it came from, secrets masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bgcore.bench import Bench
from bgcore.config import COMMON_CONFIG, SITE_CONFIG
from bgcore.config_schema import SCHEMA, BenchSettings, Problem, Scope, Source
from bgcore.errors import BgcoreError, ConfigError, DatabaseConfigError


def check_bench(bench: Bench) -> tuple[list[Problem], list[str]]:
    """Every problem of every config file of ``bench``, and the files checked (a broken file never hides the others)."""
    common_file = str(bench.sites_path / COMMON_CONFIG)
    problems: list[Problem] = []
    files = [common_file]
    try:
        settings: BenchSettings | None = bench.settings
    except ConfigError as exc:  # not JSON, not an object, unreadable
        problems.append(Problem("error", common_file, "", str(exc)))
        settings = None
    if settings is not None:
        problems.extend(settings.check.problems())
    for site in bench.site_names():
        site_file = str(bench.sites_path / site / SITE_CONFIG)
        files.append(site_file)
        try:
            own = bench.site_config(site).settings.own
        except ConfigError as exc:
            if str(exc).startswith(common_file):
                continue  # the bench file's own error, reported once above
            problems.append(Problem("error", site_file, "", str(exc)))
            continue
        problems.extend(own.problems())
        if "db_url" in own.values:
            problems.extend(_db_url_problem(bench, site, site_file))
    for name in bench.misnamed_sites():
        problems.append(Problem("warning", str(bench.sites_path / name / SITE_CONFIG), "",
                                f"sites/{name} has a {SITE_CONFIG} but {name!r} is not a valid site name, so it "
                                "is never served; rename it to a host-like name such as 'a.example.com'"))
    return problems, files


def _db_url_problem(bench: Bench, site: str, site_file: str) -> list[Problem]:
    """A ``db_url`` that is a string but not a usable SQLAlchemy URL (checked where the dialects are)."""
    from bgcore.db.engines import site_url

    try:
        site_url(bench.site_config(site))
    except DatabaseConfigError as exc:
        return [Problem("error", site_file, "db_url", str(exc))]
    return []


@dataclass(frozen=True)
class Effective:
    """One key's effective value for a site (or the bench), as it may be shown, and where it came from."""

    key: str
    value: Any
    source: str
    scope: str
    error: str | None = None


def effective(bench: Bench, site: str | None) -> list[Effective]:
    """Every schema key's effective value for ``site`` (``None``: the bench's keys), secrets masked.

    The value is the one written in the file it came from (or the default); a
    wrong one is shown with its error.
    """
    common = bench.common_config
    own: dict[str, Any] = {}
    lookup: Any
    if site is None:
        settings = bench.settings
        lookup = lambda key: (settings.get(key), settings.source(key))  # noqa: E731
    else:
        config = bench.site_config(site)
        own = dict(config.own or {})
        lookup = config.settings.lookup
    found = []
    for setting in SCHEMA:
        if site is None and setting.scope is Scope.SITE:
            continue
        error = None
        try:
            source = lookup(setting.key)[1]
        except BgcoreError as exc:
            error = str(exc)
            source = Source.SITE if setting.key in own and setting.scope is not Scope.BENCH else Source.COMMON
        raw = {Source.SITE: own, Source.COMMON: common}.get(source, {}).get(setting.key, setting.default)
        found.append(Effective(setting.key, _plain(setting.shown(raw)), str(source), setting.scope.value, error))
    return found


def _plain(value: Any) -> Any:
    """``value`` as JSON shows it (tuples as lists, ``60.0`` as ``60``)."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
