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

import difflib
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bgcore.errors import ConfigError, InvalidConfigValue

logger = logging.getLogger(__name__)

COMMON_CONFIG = "common_site_config.json"
SITE_CONFIG = "site_config.json"
MASK = "***"


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


class Invalid(Exception):
    """A value that does not fit its kind: what was expected, the value, and the nested part (``.short.timeout``)."""

    def __init__(self, expected: str, value: Any, part: str = "", *, detail: str | None = None) -> None:
        super().__init__(expected)
        self.expected, self.value, self.part, self.detail = expected, value, part, detail


Warn = Callable[[str, str], None]  # (nested part, message)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- kinds: each checks a JSON value and returns the typed one, or raises Invalid -------------
class Number:
    """A number (or integer) in a range; ``above`` makes the minimum exclusive."""

    def __init__(self, minimum: float, maximum: float | None = None, *, integer: bool = False, above: bool = False,
                 unit: str = "") -> None:
        self.minimum, self.maximum, self.integer, self.above, self.unit = minimum, maximum, integer, above, unit

    @property
    def expected(self) -> str:
        if self.integer:
            what = "an integer"
            return f"{what} from {self.minimum:g} to {self.maximum:g}" if self.maximum else f"{what} of at least {self.minimum:g}"
        unit = f" of {self.unit}" if self.unit else ""
        if self.above and self.minimum == 0:
            return (f"a number{unit} above 0 and at most {self.maximum:g}" if self.maximum is not None
                    else f"a positive number{unit}")
        return f"a number{unit} from {self.minimum:g} to {self.maximum:g}" if self.maximum is not None \
            else f"a number{unit} of at least {self.minimum:g}"

    @property
    def type_name(self) -> str:
        return "integer" if self.integer else "number"

    def __call__(self, value: Any, warn: Warn) -> Any:
        ok = isinstance(value, int) and not isinstance(value, bool) if self.integer else _number(value)
        if ok:
            low = value > self.minimum if self.above else value >= self.minimum
            if low and (self.maximum is None or value <= self.maximum):
                return int(value) if self.integer else float(value)
        raise Invalid(self.expected, value)


class Text:
    """A non-empty string, optionally starting with one of ``prefixes``."""

    type_name = "string"

    def __init__(self, prefixes: tuple[str, ...] = ()) -> None:
        self.prefixes = prefixes

    @property
    def expected(self) -> str:
        if self.prefixes:
            return "a URL starting with " + " or ".join(f"{p}" for p in self.prefixes)
        return "a non-empty string"

    def __call__(self, value: Any, warn: Warn) -> str:
        if isinstance(value, str) and value.strip() and value.startswith(self.prefixes or ("",)):
            return value
        raise Invalid(self.expected, value)


_OFF = frozenset({"", "0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on"})


class Switch:
    """On or off: ``true``/``false``, or as before ``1``/``0`` and the strings ``"on"``, ``"off"``, ``"yes"``, ..."""

    type_name = "switch"
    expected = "true or false"

    def __call__(self, value: Any, warn: Warn) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.strip().lower() in _OFF | _ON:
            return value.strip().lower() in _ON
        raise Invalid(self.expected, value)


class Flag:
    """A JSON boolean, nothing else."""

    type_name = "boolean"
    expected = "true or false"

    def __call__(self, value: Any, warn: Warn) -> bool:
        if isinstance(value, bool):
            return value
        raise Invalid(self.expected, value)


_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class Names:
    """A list of non-empty strings (as a tuple); ``dotted`` wants ``module.Class`` paths; ``one_ok`` takes a lone string."""

    type_name = "list of strings"

    def __init__(self, expected: str, *, dotted: bool = False, one_ok: bool = False) -> None:
        self.expected, self.dotted, self.one_ok = expected, dotted, one_ok

    def __call__(self, value: Any, warn: Warn) -> tuple[str, ...]:
        if self.one_ok and isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v.strip() for v in value):
            if not self.dotted or all(_DOTTED.match(v) for v in value):
                return tuple(value)
        raise Invalid(self.expected, value)


@lru_cache(maxsize=256)
def _known_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


class TimeZone:
    """An IANA time zone name (checked against the zone database)."""

    type_name = "string"
    expected = "an IANA time zone name such as 'Europe/Berlin' or 'UTC'"

    def __call__(self, value: Any, warn: Warn) -> str:
        if isinstance(value, str) and value.strip() and _known_zone(value):
            return value
        raise Invalid(self.expected, value)


def _suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


_QUEUE_KEYS = ("timeout", "background_workers", "retry")


class Workers:
    """``{"queue": {"timeout": N, "background_workers": N, "retry": ...}}`` -> ``{name: QueueSpec}``."""

    type_name = "object"
    expected = 'an object of queue name -> settings, like {"myqueue": {"timeout": 300, "background_workers": 2}}'

    def __call__(self, value: Any, warn: Warn) -> dict[str, Any]:
        from bgcore.errors import BgcoreError
        from bgcore.queues import DEFAULT_TIMEOUTS, DEFAULT_WORKERS, QueueSpec
        from bgcore.retry import Retry

        if not isinstance(value, dict):
            raise Invalid(self.expected, value)
        specs = {}
        for name, settings in value.items():
            if not name or ":" in name or "," in name or name.strip() != name:
                raise Invalid("a queue name without ':', ',' or spaces", name, f" key {name!r}")
            if not isinstance(settings, dict):
                raise Invalid('an object like {"timeout": 300}', settings, f".{name}")
            for other in settings.keys() - set(_QUEUE_KEYS):
                warn(f".{name}.{other}", f"unknown queue setting {other!r} (known: {', '.join(_QUEUE_KEYS)})"
                                         f"{_suggest(other, _QUEUE_KEYS)}")
            timeout = settings.get("timeout", DEFAULT_TIMEOUTS.get(name, 300))
            pool = settings.get("background_workers", DEFAULT_WORKERS)
            if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
                raise Invalid("a positive integer (seconds)", timeout, f".{name}.timeout")
            if not isinstance(pool, int) or isinstance(pool, bool) or pool < 0:
                raise Invalid("a positive integer (0: no pool)", pool, f".{name}.background_workers")
            try:
                retry = Retry.parse(settings.get("retry"), f"workers.{name}")
            except BgcoreError as exc:
                raise Invalid("", settings.get("retry"), f".{name}.retry", detail=str(exc)) from None
            specs[name] = QueueSpec(name, timeout, pool, retry)
        return specs


_SENTINEL_KEYS = ("sentinels", "master", "password", "sentinel_password", "db")
_HOST_PORT = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:(\d{1,5})$")


class Sentinel:
    """``{"sentinels": ["host:port", ...], "master": "name", "password": ..., "sentinel_password": ..., "db": 0}``."""

    type_name = "object"
    expected = ('an object like {"sentinels": ["host:26379", ...], "master": "mymaster", '
                     '"password": "...", "sentinel_password": "...", "db": 0}')

    def __call__(self, value: Any, warn: Warn) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid(self.expected, value)
        for other in value.keys() - set(_SENTINEL_KEYS):
            warn(f".{other}", f"unknown key {other!r} (known: {', '.join(_SENTINEL_KEYS)}){_suggest(other, _SENTINEL_KEYS)}")
        sentinels = value.get("sentinels")
        if not isinstance(sentinels, list) or not sentinels:
            raise Invalid('a non-empty list of "host:port" addresses', sentinels, ".sentinels")
        for address in sentinels:
            found = _HOST_PORT.match(address) if isinstance(address, str) else None
            if found is None or not 0 < int(found[1]) < 65536:
                raise Invalid('a "host:port" address (port 1 to 65535)', address, ".sentinels")
        master = value.get("master")
        if not isinstance(master, str) or not master.strip():
            raise Invalid("the master's name as Sentinel knows it (a non-empty string)", master, ".master")
        for key in ("password", "sentinel_password"):
            if value.get(key) is not None and not isinstance(value[key], str):
                raise Invalid("a string", value[key], f".{key}")
        db = value.get("db", 0)
        if not isinstance(db, int) or isinstance(db, bool) or db < 0:
            raise Invalid("an integer of at least 0", db, ".db")
        return {"sentinels": list(sentinels), "master": master, "password": value.get("password"),
                "sentinel_password": value.get("sentinel_password"), "db": db}


Kind = Number | Text | Switch | Flag | Names | TimeZone | Workers | Sentinel


# -- masking --------------------------------------------------------------------------------
def mask_url(url: Any) -> Any:
    """``url`` with the password of its user part (and any ``password=`` query value) replaced by ``***``."""
    if not isinstance(url, str):
        return url
    text = re.sub(r"(?i)(password=)[^&]*", rf"\g<1>{MASK}", url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return MASK
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
            text = urlunsplit(parts._replace(netloc=netloc))
    return text


def mask_secret(value: Any) -> Any:
    return None if value is None else MASK


def mask_sentinel(value: Any) -> Any:
    if not isinstance(value, dict):
        return value if not isinstance(value, str) else MASK
    return {k: (MASK if k in ("password", "sentinel_password") and v is not None else v) for k, v in value.items()}


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
    Setting("redis_queue", Text(("redis://", "rediss://", "unix://")), None, Scope.BENCH,
            "URL of the bench's Redis (`redis://user:password@host:port/db`, `rediss://` for TLS, `unix://`)",
            "private Redis of `bgcore start`", nullable=True, mask=mask_url),
    Setting("redis_sentinel", Sentinel(), None, Scope.BENCH,
            'Redis through Sentinel: `{"sentinels": ["host:26379"], "master": "mymaster", "password": "…", '
            '"sentinel_password": "…", "db": 0}`', "none", nullable=True, mask=mask_sentinel),
    Setting("bench_id", Text(), None, Scope.BENCH,
            "namespace of this bench in Redis; set the same value on every host of one bench",
            "hash of the bench path", nullable=True),
    Setting("apps_path", Names("a list of directories (relative to the bench)", one_ok=True), (), Scope.BENCH,
            "list of directories (relative to the bench) added to the import path", "`[]`"),
    Setting("workers", Workers(), {}, Scope.BENCH,
            'custom queues and pool sizes: `{"myqueue": {"timeout": 5000, "background_workers": 4, "retry": 3}}`; '
            "may also tune `short`/`default`/`long`; `bgcore start` runs one pool of `background_workers` horses "
            "per queue (0: none); `retry` is the queue's default retry policy: a number of retries, or "
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
                                    f"{file}: unknown key {key!r} (bgcore ignores it){_suggest(key, SETTINGS)}"))
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


__all__ = ["SCHEMA", "SETTINGS", "BenchSettings", "ConfigError", "FileCheck", "Problem", "Scope", "Setting",
           "SiteSettings", "Source", "check_file", "check_value", "mask_url", "markdown_table"]
