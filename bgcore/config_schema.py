"""The one schema of the bench and site config keys, and their checks.

Every key bgcore reads from ``sites/common_site_config.json`` (the bench) or
``sites/<site>/site_config.json`` (a site) is declared once in :data:`SCHEMA`:
its kind (type and range), default, where it may be set and what it means.
:func:`check_file` checks one parsed file against it; :class:`BenchSettings`
and :class:`SiteSettings` hold the checked, typed values (``Bench.settings``
and ``SiteConfig.settings`` build them once per version of the files).

Decisions:

- A small declarative table rather than pydantic: the worker pool and every
  CLI command import the config before anything else (start-up time is
  benchmarked), the values are ~30 flat keys and two small objects, and the
  messages must name the file, the key, the value (masked when secret) and
  what is expected in bgcore's one-line form; a model library would add an
  import of tens of milliseconds and its own message format to translate.
- A wrong value is an error of that key only: reading it raises its
  :class:`~bgcore.errors.InvalidConfigValue`, other keys stay readable, so a
  bad ``doctor_max_queue_age_seconds`` never stops the workers (as before)
  and a broken site never stops the others. ``bgcore config check`` lists
  every error of every file.
- An unknown key is a warning (with "did you mean" when one is close): apps
  keep their own keys in these files. A bench key in a site file is ignored,
  with a warning, because the code reads it from the bench file only.
- ``null`` means "not set" only for keys whose default is "none"
  (``redis_queue``, ``bench_id``, ``db_url``, ...), ``workers`` and ``time_zone``.

``python -m bgcore.config_schema --markdown`` prints the README's table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bgcore.config_kinds import (
    Flag, Invalid, Kind, Names, Number, RedisUrl, Sentinel, Switch, Text, TimeZone, Workers, mask_secret, mask_sentinel,
    mask_url,
    suggest,
)
from bgcore.errors import ConfigError, InvalidConfigValue

logger = logging.getLogger(__name__)

COMMON_CONFIG = "common_site_config.json"
SITE_CONFIG = "site_config.json"


class Scope(StrEnum):
    """Where a key may be set."""

    BENCH = "common"  # common_site_config.json only (a site's value would be ignored)
    SITE = "site"  # site_config.json only
    BOTH = "site/common"  # either; a site's own value overrides the bench's


class Source(StrEnum):
    """Where an effective value came from (``bgcore config show``)."""

    DEFAULT = "default"
    COMMON = COMMON_CONFIG
    SITE = SITE_CONFIG


# -- the schema -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One config key: its kind, default, where it may be set, and what it means."""

    key: str
    kind: Kind
    default: Any
    scope: Scope
    description: str
    default_text: str | None = None  # the README's wording of the default, when it is not the value
    nullable: bool = False  # null (or "") means not set
    mask: Callable[[Any], Any] | None = None  # how to show a value without its secrets

    def shown(self, value: Any) -> Any:
        """``value`` as it may be printed (secrets masked)."""
        return self.mask(value) if self.mask is not None else value


_SECONDS = Number(0, 86400, above=True, unit="seconds")  # a day: longer is a mistake (and overflows datetimes)
_MANY = 10**9

SCHEMA: tuple[Setting, ...] = (
    Setting("redis_queue", RedisUrl(), None, Scope.BENCH,
            "URL of the bench's Redis: `redis://[user]:password@host:port/db` (an ACL user, or `:password@` alone "
            "for `requirepass`), `rediss://…` for TLS with redis-py's options as query parameters (`ssl_ca_certs`, "
            "`ssl_ca_path`, `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs`, `ssl_check_hostname`), or "
            "`unix:///path/redis.sock?db=0`; see \"Redis in production\"",
            "private Redis of `bgcore start`", nullable=True, mask=mask_url),
    Setting("redis_sentinel", Sentinel(), None, Scope.BENCH,
            'Redis through Sentinel: `{"sentinels": ["host:26379"], "master": "mymaster", "password": "…", '
            '"sentinel_password": "…", "db": 0}` (also `username`, `sentinel_username` for ACL users); '
            'not together with `redis_queue`; see "Redis in production"', "none", nullable=True, mask=mask_sentinel),
    Setting("redis_wait_replicas", Number(0, 16, integer=True), 0, Scope.BENCH,
            "replicas that must confirm every push, take and finish (Redis `WAIT`, up to 1 s each), so that an "
            "acknowledged enqueue survives a failover (see \"Redis in production\")", "`0`"),
    Setting("bench_id", Text(), None, Scope.BENCH,
            "namespace of this bench in Redis; set the same value on every host of one bench",
            "hash of the bench path", nullable=True),
    Setting("apps_path", Names("a list of directories (relative to the bench)", one_ok=True), (), Scope.BENCH,
            "list of directories (relative to the bench) added to the import path", "`[]`"),
    Setting("workers", Workers(), {}, Scope.BENCH,
            'custom queues and pool sizes: `{"myqueue": {"timeout": 5000, "background_workers": 4, "retry": 3}}`; '
            "may also tune `short`/`default`/`long`; `bgcore start` runs one pool of `background_workers` horses "
            "per queue (0: none); queues with the same `group` (a pool name) share one worker pool "
            "(`bgcore worker --queue short,default`) with their `background_workers` added up; "
            "`retry` is the queue's default retry policy: a number of retries, or "
            '`{"max": 3, "intervals": [10, 60], "backoff": 2, "jitter": true}`',
            "1 horse per queue, no retry", nullable=True),
    Setting("installed_apps", Names("a list of app names"), (), Scope.BOTH,
            "apps of the site, in hook order (`bgcore install-app` edits the site's own file)", "`[]`"),
    Setting("db_url", Text(), None, Scope.SITE,
            "the site's database: `postgresql+psycopg2://…` or `mysql+pymysql://…`; refused in "
            "`common_site_config.json`, and for two sites that resolve to one database",
            "`sites/<site>/site.sqlite3`", nullable=True, mask=mask_url),
    Setting("db_engine_cache_size", Number(1, 10_000, integer=True), 16, Scope.BENCH,
            "open database engines (pools) one process keeps; least recently used are closed"),
    Setting("time_zone", TimeZone(), "UTC", Scope.BOTH,
            "the site's time zone (IANA name); cron times are evaluated in it, and every command shows the "
            "site's times in it", nullable=True),
    Setting("scheduler_tick_interval", _SECONDS, 60.0, Scope.BOTH,
            "seconds between scheduler ticks of the site; `all` events run every tick"),
    Setting("shutdown_grace_seconds", Number(0, _MANY, unit="seconds"), 30.0, Scope.BENCH,
            "how long a worker (and `bgcore start`) lets running jobs finish on SIGTERM / Ctrl-C before a cold stop"),
    Setting("max_jobs_per_horse", Number(1, _MANY, integer=True), 5000, Scope.BENCH,
            "a work-horse is replaced by a fresh one after this many jobs"),
    Setting("max_horse_memory_mb", Number(16, _MANY, integer=True), 1024, Scope.BENCH,
            "a work-horse whose RSS is over this after a job is replaced"),
    Setting("worker_heartbeat_seconds", Number(0.1, _MANY, unit="seconds"), 5.0, Scope.BENCH,
            "how often a pool renews its horses' worker records (a record lapses after 2 heartbeats) and looks "
            "for dead workers of the bench"),
    Setting("max_payload_bytes", Number(1024, _MANY, integer=True), 2**20, Scope.BENCH,
            "`enqueue` refuses a job whose serialised call (JSON) is larger, naming its size"),
    Setting("max_result_bytes", Number(1024, _MANY, integer=True), 2**20, Scope.BENCH,
            "a larger result is stored truncated, with a note giving its size"),
    Setting("worker_middleware", Names("a list of dotted class paths", dotted=True), (), Scope.BENCH,
            "dotted paths of `bgcore.engine.Middleware` subclasses every job also runs through", "`[]`"),
    Setting("scheduler_lease_seconds", _SECONDS, 15.0, Scope.BENCH,
            "leader lease of the scheduler; a standby takes over within lease + lease/3"),
    Setting("scheduler_rescan_seconds", _SECONDS, 10.0, Scope.BENCH,
            "how often the daemon looks for new, deleted and changed sites (a bad value: logged, default used)"),
    Setting("doctor_max_queue_age_seconds", Number(0, above=True, unit="seconds"), 600.0, Scope.BENCH,
            "`bgcore doctor` is unhealthy when a queued job has waited longer"),
    Setting("failure_ttl", Number(0, above=True, unit="seconds"), 604800.0, Scope.BENCH,
            "seconds a failed job (hash, result stream, registry entry) stays in Redis; the scheduler leader "
            "prunes older ones in small batches", "`604800` (7 days)"),
    Setting("job_log_keep_days", Number(0, above=True, unit="days"), 30.0, Scope.BENCH,
            "days a site's `job_log` keeps rows; the scheduler leader prunes older ones in small batches"),
    Setting("maintenance_mode", Switch(), False, Scope.BOTH, "switch: no scheduled runs (strongest)", "off"),
    Setting("pause_scheduler", Switch(), False, Scope.BOTH, "switch: scheduled runs held", "off"),
    Setting("scheduler_disabled", Switch(), False, Scope.BOTH,
            "switch: scheduler off for the site (`bgcore scheduler disable`)", "off"),
    Setting("hold_jobs", Switch(), False, Scope.BOTH,
            "hold the site's jobs (`bgcore hold-jobs`), e.g. during an upgrade: workers pass the site's turns and "
            "leave its jobs queued, `bgcore enqueue` warns; a hand edit takes effect within a pool heartbeat", "off"),
    Setting("dashboard_host", Text(), "127.0.0.1", Scope.BENCH, "address `bgcore dashboard` listens on"),
    Setting("dashboard_port", Number(1, 65535, integer=True), 8009, Scope.BENCH, "port of `bgcore dashboard`"),
    Setting("dashboard_password", Text(), None, Scope.BENCH,
            "password of the dashboard; required to listen on an address other than loopback", "none",
            nullable=True, mask=mask_secret),
    Setting("metrics_site_labels", Flag(), False, Scope.BENCH,
            "`/metrics` also exports queued and failed gauges per site (one series per site)", "`false`"),
)
SETTINGS: dict[str, Setting] = {s.key: s for s in SCHEMA}


# -- checking -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One finding of :func:`check_file`: an error (a wrong value) or a warning (an unknown or misplaced key)."""

    level: str  # "error" | "warning"
    file: str
    key: str
    message: str


def _error(setting: Setting, file: str, exc: Invalid) -> InvalidConfigValue:
    key = f"{setting.key}{exc.part}"
    shown = setting.shown(exc.value)
    if exc.detail is not None:  # a nested check that words its own message (the retry policy)
        message = f"{file}: {exc.detail}; fix the value"
    else:
        message = f"{file}: {key} must be {exc.expected}, found {shown!r}; fix the value"
    if file.rsplit("/", 1)[-1] == SITE_CONFIG:
        message += " (other sites keep working meanwhile)"
    return InvalidConfigValue(message, file=file, key=key, value=shown, expected=exc.expected or exc.detail or "")


def check_value(key: str, value: Any, file: str) -> Any:
    """``value`` of ``key`` checked and typed (the default when it is not set); :class:`InvalidConfigValue` if wrong."""
    setting = SETTINGS[key]
    if value is None and setting.nullable or (setting.nullable and value == ""):
        return setting.default
    try:
        return setting.kind(value, lambda part, message: None)
    except Invalid as exc:
        raise _error(setting, file, exc) from None


@dataclass(frozen=True)
class FileCheck:
    """One config file checked: typed values of its valid keys, the error of each wrong key, the warnings."""

    file: str
    values: Mapping[str, Any]
    errors: Mapping[str, InvalidConfigValue]
    warnings: tuple[Problem, ...]

    def problems(self) -> list[Problem]:
        found = [Problem("error", self.file, e.key, str(e)) for e in self.errors.values()]
        return found + list(self.warnings)


_LOGGED: set[str] = set()  # typo warnings already logged by this process (each file version is checked once)


def check_file(data: Mapping[str, Any], file: str, *, bench: bool) -> FileCheck:
    """Check the keys of one parsed config file (``bench``: ``common_site_config.json``, else a site's)."""
    values: dict[str, Any] = {}
    errors: dict[str, InvalidConfigValue] = {}
    warnings: list[Problem] = []
    for key, value in data.items():
        setting = SETTINGS.get(key)
        if setting is None:
            warnings.append(Problem("warning", file, key,
                                    f"{file}: unknown key {key!r} (bgcore ignores it){suggest(key, SETTINGS)}"))
            continue
        if bench and setting.scope is Scope.SITE:
            errors[key] = InvalidConfigValue(
                f"{file}: {key} is not allowed in the bench config (every site would share it); remove it and "
                f"set it in each site's {SITE_CONFIG}", file=file, key=key, value=setting.shown(value),
                expected=f"set in {SITE_CONFIG}")
            continue
        if not bench and setting.scope is Scope.BENCH:
            warnings.append(Problem("warning", file, key, f"{file}: {key} is a bench key, read only from "
                                    f"{COMMON_CONFIG}; the value here has no effect (move it there)"))
            continue

        def warn(part: str, message: str, key: str = key) -> None:
            warnings.append(Problem("warning", file, f"{key}{part}", f"{file}: {key}{part}: {message}"))

        if setting.nullable and (value is None or value == ""):
            continue
        try:
            values[key] = setting.kind(value, warn)
        except Invalid as exc:
            errors[key] = _error(setting, file, exc)
    for problem in warnings:
        if "did you mean" in problem.message and problem.message not in _LOGGED:  # a likely typo: log it once
            _LOGGED.add(problem.message)
            logger.warning("%s", problem.message)
    return FileCheck(file, values, errors, tuple(warnings))


def _raise_or_get(check: FileCheck, key: str) -> tuple[bool, Any]:
    if key in check.errors:
        raise check.errors[key]
    if key in check.values:
        return True, check.values[key]
    return False, None


@dataclass(frozen=True)
class BenchSettings:
    """The checked ``common_site_config.json``: :meth:`get` gives a key's typed value or its default."""

    check: FileCheck

    @classmethod
    def of(cls, data: Mapping[str, Any], file: str) -> BenchSettings:
        return cls(check_file(data, file, bench=True))

    def get(self, key: str) -> Any:
        """The typed value of bench key ``key`` (its default when unset); :class:`InvalidConfigValue` if wrong."""
        setting = SETTINGS[key]
        found, value = _raise_or_get(self.check, key) if setting.scope is not Scope.SITE else (False, None)
        return value if found else setting.default

    def source(self, key: str) -> Source:
        return Source.COMMON if key in self.check.values or key in self.check.errors else Source.DEFAULT


@dataclass(frozen=True)
class SiteSettings:
    """One site's checked keys over the bench's: a site's own value overrides the bench's where both may set it."""

    own: FileCheck
    bench: BenchSettings | None = field(default=None)

    def get(self, key: str) -> Any:
        """The typed effective value of ``key`` for the site; :class:`InvalidConfigValue` names the file it came from."""
        return self.lookup(key)[0]

    def lookup(self, key: str) -> tuple[Any, Source]:
        setting = SETTINGS[key]
        if setting.scope is not Scope.BENCH:
            found, value = _raise_or_get(self.own, key)
            if found:
                return value, Source.SITE
        if setting.scope is not Scope.SITE and self.bench is not None:
            return self.bench.get(key), self.bench.source(key)
        return setting.default, Source.DEFAULT


def markdown_table() -> str:
    """The README's configuration table, generated from :data:`SCHEMA`."""
    lines = ["| key | where | type | meaning | default |", "|---|---|---|---|---|"]
    for s in SCHEMA:
        default = s.default_text or (f"`{s.default:g}`" if isinstance(s.default, float)
                                     else f"`{s.default}`" if s.default is not None else "none")
        kind = s.kind.type_name
        if isinstance(s.kind, Number):
            kind = f"{kind} {_range(s.kind)}"
        lines.append(f"| `{s.key}` | {s.scope.value} | {kind} | {s.description} | {default} |")
    return "\n".join(lines)


def _range(kind: Number) -> str:
    low = f"> {kind.minimum:g}" if kind.above else f"≥ {kind.minimum:g}"
    return f"{low}, ≤ {kind.maximum:g}" if kind.maximum is not None else low


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bgcore.config_schema",
                                     description="Print the configuration table of the README.")
    parser.add_argument("--markdown", action="store_true", help="print the README's table (the default)")
    parser.parse_args(argv)
    print(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())


__all__ = ["SCHEMA", "SETTINGS", "BenchSettings", "ConfigError", "FileCheck", "Flag", "Names", "Number", "Problem",
           "Scope", "Sentinel", "Setting", "SiteSettings", "Source", "Switch", "Text", "TimeZone", "Workers",
           "check_file", "check_value", "mask_url", "markdown_table"]
