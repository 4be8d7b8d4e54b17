"""The kinds of config values (number, text, switch, list, time zone, ``workers``, ``redis_sentinel``) and masks.

Each kind checks one JSON value and returns its typed form, or raises
:class:`Invalid` saying what was expected (and which nested part was wrong);
:mod:`bgcore.config_schema` turns that into the one error naming the file and key.
Plain classes, not dataclasses: this is imported before the worker pool forks.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"


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


class RedisUrl(Text):
    """``redis_queue``: a ``redis://``, ``rediss://`` or ``unix://`` URL whose options redis-py knows,
    checked by :func:`bgcore.connection.parse_redis_url` (the one check of a Redis URL)."""

    def __init__(self) -> None:
        super().__init__(("redis://", "rediss://", "unix://"))

    def __call__(self, value: Any, warn: Warn) -> str:
        from bgcore.connection import parse_redis_url, redact
        from bgcore.errors import RedisConfigError

        text = super().__call__(value, warn)
        try:
            return parse_redis_url(text, where="redis_queue")
        except RedisConfigError as exc:
            raise Invalid("", redact(text), detail=str(exc)) from None


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


def suggest(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


_QUEUE_KEYS = ("timeout", "background_workers", "retry", "group")


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
                                         f"{suggest(other, _QUEUE_KEYS)}")
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
            group = settings.get("group")
            if group is not None and (not isinstance(group, str) or not group
                                      or not all(c.isalnum() or c in "-_" for c in group)):
                raise Invalid("a pool name (letters, digits, '-', '_')", group, f".{name}.group")
            specs[name] = QueueSpec(name, timeout, pool, retry, group)
        return specs


_SENTINEL_KEYS = ("sentinels", "master", "password", "sentinel_password", "username", "sentinel_username", "db")
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
            warn(f".{other}", f"unknown key {other!r} (known: {', '.join(_SENTINEL_KEYS)}){suggest(other, _SENTINEL_KEYS)}")
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
                raise Invalid("a string", MASK, f".{key}")  # never show a password, even a wrong one
        for key in ("username", "sentinel_username"):
            if value.get(key) is not None and not isinstance(value[key], str):
                raise Invalid("a string", value[key], f".{key}")
        db = value.get("db", 0)
        if not isinstance(db, int) or isinstance(db, bool) or db < 0:
            raise Invalid("an integer of at least 0", db, ".db")
        return {"sentinels": list(sentinels), "master": master, "password": value.get("password"),
                "sentinel_password": value.get("sentinel_password"), "db": db}


Kind = Number | Text | RedisUrl | Switch | Flag | Names | TimeZone | Workers | Sentinel


# -- masking --------------------------------------------------------------------------------
def mask_url(url: Any) -> Any:
    """``url`` with the password of its user part (and any ``password=`` query value) replaced by ``***``."""
    if not isinstance(url, str):
        return url if url is None or isinstance(url, (bool, int, float)) else MASK
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
