"""Finding and connecting to a bench's Redis: the one place that builds a Redis client for it.

A bench names its Redis in ``sites/common_site_config.json`` in one of two ways:

* ``redis_queue``: a URL. ``redis://[user:]password@host:port/db`` (``user`` an ACL
  user; ``:password@`` alone is the ``requirepass`` password of the ``default`` user),
  ``rediss://`` for TLS, or ``unix:///path/to/redis.sock?db=0``. TLS options are
  redis-py's, as query parameters: ``ssl_ca_certs`` (a CA bundle file), ``ssl_ca_path``,
  ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate), ``ssl_cert_reqs``
  (``required``, the default, ``optional`` or ``none``) and ``ssl_check_hostname``.
* ``redis_sentinel``: ``{"sentinels": ["host:port", ...], "master": "name",
  "password": "...", "sentinel_password": "...", "db": 0}`` (also ``username`` and
  ``sentinel_username`` for ACL users). Every new connection asks the Sentinels for
  the current master, so after a failover clients reach the promoted replica.

Without either, the private Redis that ``bgcore start`` runs is used.

Passwords never leave this module in clear: :func:`describe` and :func:`redact`
are what messages, log lines and reports show.
"""

from __future__ import annotations

import difflib
import logging
import re
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from bgcore.errors import RedisAuthFailed, RedisConfigError, RedisTLSFailed, RedisUnavailable

if TYPE_CHECKING:
    from bgcore.bench import Bench

logger = logging.getLogger(__name__)

COMMON = "sites/common_site_config.json"
SCHEMES = ("redis://", "rediss://", "unix://")
TLS_OPTIONS = frozenset({"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
                         "ssl_check_hostname", "ssl_min_version"})
TLS_FILES = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
CERT_REQS = ("required", "optional", "none")
URL_OPTIONS = frozenset(URL_QUERY_ARGUMENT_PARSERS) | TLS_OPTIONS | {"password", "username"}
SENTINEL_KEYS = ("sentinels", "master", "password", "sentinel_password", "username", "sentinel_username", "db")
SENTINEL_SECRETS = ("password", "sentinel_password")

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to Redis (a host that drops packets fails, not hangs)
# Seconds to wait for any answer. Without it, a master whose host vanished (no TCP reset: power loss,
# a partition) would hang every client for ever and no failover would reach them; with it, the wait
# ends as a TimeoutError, an outage like any other. Above bgcore's longest blocking command (a
# horse's 2 s BLPOP) and its largest pipelines.
READ_TIMEOUT = 15.0
# Seconds for one Sentinel to accept a connection and answer "which is the master?". Short, because
# every new connection asks (a pool parent that supervises horses must not hang on a dead Sentinel).
SENTINEL_TIMEOUT = 1.0
# When no Sentinel names a master (all down, or a failover under way) clients ask again this many
# times, these many seconds apart, before they give up: ~1.5 s, enough for a Sentinel restart or
# the tail of a failover, short enough for a command line. Daemons then ride it out as an outage.
SENTINEL_RETRY_DELAYS = (0.5, 1.0)

# The secret runs to the last "@" before the path (a raw "@" in a password must not leak its tail).
_SECRET_IN_URL = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*):(?P<secret>[^/\s]*)@")
_SECRET_IN_QUERY = re.compile(r"(?P<head>[?&](?:password|ssl_password)=)[^&\s]*")


# -- what the bench names -----------------------------------------------------------------------
@dataclass(frozen=True)
class SentinelConfig:
    """A parsed ``redis_sentinel``: where the Sentinels are, the master's name, the credentials."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    password: str | None = None
    sentinel_password: str | None = None
    username: str | None = None
    sentinel_username: str | None = None
    db: int = 0

    def describe(self) -> str:
        """How messages name it (no password)."""
        where = ", ".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"Sentinel master {self.master!r} (db {self.db}) via {where}"


@dataclass(frozen=True)
class RedisTarget:
    """The bench's Redis: a URL (``redis_queue`` or the private Redis), or a Sentinel service."""

    url: str | None = None
    sentinel: SentinelConfig | None = None
    private: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.url and self.url.startswith("rediss://"))

    def describe(self) -> str:
        """The target as every message shows it: a URL with its password replaced by ``***``."""
        if self.sentinel is not None:
            return self.sentinel.describe()
        return redact(self.url or "")


def configured(bench: Bench) -> bool:
    """Whether the bench names its own Redis (``redis_queue`` or ``redis_sentinel``); else ``bgcore start``
    runs a private one."""
    common = bench.common_config
    return bool(common.get("redis_queue")) or common.get("redis_sentinel") is not None


def target(bench: Bench) -> RedisTarget:
    """The bench's Redis, checked; :class:`RedisConfigError` for a malformed key, :class:`RedisUnavailable`
    when there is none."""
    common = bench.common_config
    url, sentinel = common.get("redis_queue"), common.get("redis_sentinel")
    if url and sentinel is not None:
        raise RedisConfigError(f"{COMMON}: both redis_queue and redis_sentinel are set; keep one "
                               "(redis_sentinel for a Sentinel-managed master, redis_queue for one server)")
    if sentinel is not None:  # present: checked, even when empty
        return RedisTarget(sentinel=parse_sentinel(sentinel, where=COMMON))
    if url:
        return RedisTarget(url=parse_redis_url(url, where=f"{COMMON}: redis_queue"))
    from bgcore.embedded_redis import running_url

    private = running_url(bench)
    if private is None:
        raise RedisUnavailable(
            f"bench {bench.path} has no Redis: set 'redis_queue' (or 'redis_sentinel') in "
            "sites/common_site_config.json or run 'bgcore start' to run a private one")
    return RedisTarget(url=private, private=True)


def wait_replicas(bench: Bench) -> int:
    """``redis_wait_replicas``: how many replicas must confirm each push, take and finish (``WAIT``); 0 (the
    default) waits for none. See README, "What a failover can lose"."""
    value: int = bench.settings.get("redis_wait_replicas")  # checked by the schema (0 to 16)
    return value


def describe(bench: Bench) -> str:
    """The bench's Redis as messages name it (password hidden), or why it has none."""
    try:
        return target(bench).describe()
    except RedisUnavailable:
        return "the bench's Redis"


def parse_redis_url(value: Any, *, where: str) -> str:
    """``value`` if it is a Redis URL redis-py can use with options it knows; else :class:`RedisConfigError`."""
    if not isinstance(value, str) or not value.startswith(SCHEMES):
        shown = repr(redact(value)) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"
        raise RedisConfigError(f"{where} must be a redis://, rediss:// or unix:// URL "
                               f"(redis://user:password@host:6379/0), found {shown}")
    shown = redact(value)
    try:
        parse_url(value)  # type: ignore[no-untyped-call]
    except (ValueError, TypeError) as exc:
        raise RedisConfigError(f"{where}: {shown!r} is not a valid Redis URL ({exc})") from None
    query = {name: values[-1] for name, values in parse_qs(urlsplit(value).query).items()}
    for name, option in query.items():
        if name not in URL_OPTIONS:
            near = difflib.get_close_matches(name, sorted(URL_OPTIONS), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f" (known: {', '.join(sorted(TLS_OPTIONS))}, ...)"
            raise RedisConfigError(f"{where}: {shown!r} has an unknown option {name!r}{hint}")
        if name in TLS_OPTIONS and not value.startswith("rediss://"):
            raise RedisConfigError(f"{where}: {shown!r} sets the TLS option {name!r} but is not a rediss:// URL; "
                                   "use rediss:// for TLS")
        if name in TLS_FILES and not Path(option).exists():
            raise RedisConfigError(f"{where}: {name}={option!r} does not exist; give the path of the file "
                                   "(absolute, or relative to the bench directory's working directory)")
        if name == "ssl_cert_reqs" and option not in CERT_REQS:
            raise RedisConfigError(f"{where}: ssl_cert_reqs={option!r} must be one of {', '.join(CERT_REQS)}")
    return value


def parse_sentinel(value: Any, *, where: str = COMMON) -> SentinelConfig:
    """A ``redis_sentinel`` value checked and parsed; :class:`RedisConfigError` names what is wrong."""
    key = f"{where}: redis_sentinel"
    shape = '{"sentinels": ["host:26379", ...], "master": "mymaster", "password": "...", "db": 0}'
    if not isinstance(value, Mapping):
        raise RedisConfigError(f"{key} must be an object like {shape}, found {type(value).__name__}")
    for name in value:
        if name not in SENTINEL_KEYS:
            near = difflib.get_close_matches(str(name), SENTINEL_KEYS, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(SENTINEL_KEYS)}"
            raise RedisConfigError(f"{key} has an unknown key {name!r}; {hint}")
    listed = value.get("sentinels")
    if not isinstance(listed, list) or not listed:
        raise RedisConfigError(f"{key}.sentinels must be a non-empty list of \"host:port\" strings, "
                               f"found {listed!r}")
    sentinels = tuple(_address(entry, f"{key}.sentinels") for entry in listed)
    master = value.get("master")
    if not isinstance(master, str) or not master.strip():
        raise RedisConfigError(f"{key}.master must be the name the Sentinels monitor (sentinel monitor NAME ...), "
                               f"found {master!r}")
    texts: dict[str, str | None] = {}
    for name in ("password", "sentinel_password", "username", "sentinel_username"):
        found = value.get(name)
        if found is not None and not isinstance(found, str):
            raise RedisConfigError(f"{key}.{name} must be a string, found {type(found).__name__}")
        texts[name] = found or None
    db = value.get("db", 0)
    if isinstance(db, bool) or not isinstance(db, int) or db < 0:
        raise RedisConfigError(f"{key}.db must be a database number (0 or more), found {db!r}")
    return SentinelConfig(sentinels=sentinels, master=master, db=db, **texts)


def _address(entry: Any, where: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":") if isinstance(entry, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisConfigError(f"{where}: {entry!r} is not a \"host:port\" address (e.g. \"10.0.0.5:26379\")")
    return host.strip("[]"), int(port)


# -- clients --------------------------------------------------------------------------------------
def connect(bench: Bench) -> redis.Redis:
    """A client for the bench's Redis (connects lazily; see :func:`ping`). Every bgcore client is made here."""
    found = target(bench)
    if found.sentinel is not None:
        return sentinel_master(found.sentinel)
    assert found.url is not None
    return client_for_url(found.url)


def client_for_url(url: str, **options: Any) -> redis.Redis:
    """A client for ``url`` with bgcore's connection options (``options`` override them)."""
    settings: dict[str, Any] = {"health_check_interval": 30, "socket_connect_timeout": CONNECT_TIMEOUT,
                                "socket_timeout": READ_TIMEOUT}
    if not url.startswith("unix://"):
        settings["socket_keepalive"] = True  # TCP only
    settings.update(options)
    return redis.Redis.from_url(url, **settings)


class SentinelRefused(MasterNotFoundError):
    """A Sentinel refused ``sentinel_password`` / ``sentinel_username`` (a ConnectionError, as redis-py has it)."""


class _Sentinel(Sentinel):
    """redis-py's :class:`Sentinel` that asks again before saying no master is known, and says why."""

    def discover_master(self, service_name: str) -> Any:
        for delay in (*SENTINEL_RETRY_DELAYS, None):
            try:
                return super().discover_master(service_name)  # type: ignore[no-untyped-call]
            except MasterNotFoundError:
                if delay is None:
                    break
                logger.debug("no master %r known to the Sentinels yet; asking again in %ss", service_name, delay)
                time.sleep(delay)
        why, refused = self._why(service_name)
        raise (SentinelRefused if refused else MasterNotFoundError)(why) from None

    def _why(self, service_name: str) -> tuple[str, bool]:
        """One line: no Sentinel answers, one refuses the credentials, or none knows a healthy master."""
        tries = f"asked {len(SENTINEL_RETRY_DELAYS) + 1} times over {sum(SENTINEL_RETRY_DELAYS):g}s"
        answered, failures = [], []
        for client in self.sentinels:
            address = "{host}:{port}".format_map(client.connection_pool.connection_kwargs)
            try:
                client.ping()
                answered.append(address)
            except redis.AuthenticationError as exc:
                return (f"the Sentinel at {address} refused the credentials ({exc}); check sentinel_password "
                        "(and sentinel_username) in redis_sentinel"), True
            except redis.RedisError as exc:
                failures.append(f"{address}: {str(exc).rstrip('.')}")
        if not answered:
            return (f"no Sentinel answers for master {service_name!r} ({tries}; {'; '.join(failures)}); "
                    "start the Sentinels or fix 'sentinels' in redis_sentinel"), False
        return (f"the Sentinels at {', '.join(answered)} know no healthy master named {service_name!r} ({tries}); "
                "check 'master' in redis_sentinel (sentinel monitor NAME), or wait for the failover to finish"), False


def sentinel_master(config: SentinelConfig) -> redis.Redis:
    """A client that always talks to the current master of ``config`` (asking the Sentinels at each connect)."""
    sentinel_options: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),  # _Sentinel retries, all Sentinels at once
        "password": config.sentinel_password, "username": config.sentinel_username,
    }
    manager = _Sentinel(list(config.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
        config.master, db=config.db, password=config.password, username=config.username,
        socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=READ_TIMEOUT, socket_keepalive=True,
        health_check_interval=30)
    return client


# -- errors ---------------------------------------------------------------------------------------
def redact(text: str) -> str:
    """``text`` with the password of every URL in it (``user:secret@``, ``?password=``) replaced by ``***``."""
    text = _SECRET_IN_URL.sub(lambda m: f"{m['head']}:***@", text)
    return _SECRET_IN_QUERY.sub(lambda m: f"{m['head']}***", text)


def _is_tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "SSL" in str(seen) or "TLS" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def explain(exc: BaseException, where: str, *, tls: bool = False) -> str:
    """The one line that says what a Redis failure of ``where`` (see :func:`describe`) means and what to do.

    ``tls``: the URL was ``rediss://`` (a plain-text server never answers the TLS handshake: it times out).
    """
    detail = redact(f"{type(exc).__name__}: {exc}".rstrip(".: "))
    if isinstance(exc, MasterNotFoundError):
        return redact(f"{where}: {exc}")
    if isinstance(exc, redis.AuthenticationError):
        return (f"{where} refused the credentials ({detail}); check the user and password in redis_queue "
                "(redis://user:password@host:port/db) or 'password' in redis_sentinel")
    if isinstance(exc, (redis.exceptions.AuthorizationError, redis.exceptions.NoPermissionError)):
        return (f"{where}: the ACL user may not run a command bgcore needs ({detail}); "
                "give it at least '~* &* +@all' (or the commands and keys it names)")
    if isinstance(exc, redis.ReadOnlyError):
        return (f"{where} is a read-only replica ({detail}); point redis_queue at the master, "
                "or use redis_sentinel so clients follow failovers")
    if tls and isinstance(exc, redis.TimeoutError) and "connecting" in str(exc):
        return (f"{where}: no answer to the TLS handshake ({detail}); a plain-text server on that port never "
                "answers one: use redis:// for it, or the port the server listens for TLS on (tls-port)")
    if isinstance(exc, redis.ConnectionError) and _is_tls_failure(exc):
        return (f"{where}: the TLS handshake failed ({detail}); is the server listening for TLS on that port "
                "(tls-port), and do ssl_ca_certs / ssl_cert_reqs match its certificate? (use redis:// for a "
                "plain-text server)")
    if not tls and isinstance(exc, redis.ConnectionError) and ("reset by peer" in str(exc) or "closed by" in str(exc)):
        return (f"{where} closed the connection ({detail}); if that port speaks only TLS (tls-port), use a "
                "rediss:// URL")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return (f"Redis at {where} failed ({detail}); is it running and reachable? "
                "('bgcore doctor' checks it; 'bgcore start' runs a private one when redis_queue is unset)")
    return f"{where} failed ({detail})"


_REFUSALS = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError,
             redis.exceptions.NoPermissionError)


def as_error(exc: redis.RedisError, found: RedisTarget) -> RedisUnavailable:
    """``exc`` as bgcore's error: :class:`RedisAuthFailed`, :class:`RedisTLSFailed` or :class:`RedisUnavailable`."""
    tls = found.tls
    message = explain(exc, found.describe(), tls=tls)
    if isinstance(exc, (*_REFUSALS, SentinelRefused)):
        return RedisAuthFailed(message)
    if isinstance(exc, redis.ConnectionError) and _is_tls_failure(exc):
        return RedisTLSFailed(message)
    if tls and isinstance(exc, redis.TimeoutError) and "connecting" in str(exc):
        return RedisTLSFailed(message)
    return RedisUnavailable(message)


def explain_for(bench: Bench, exc: BaseException) -> str:
    """:func:`explain` for the bench's own Redis (how the CLI words an unexpected Redis error)."""
    try:
        found = target(bench)
    except RedisUnavailable:
        return explain(exc, "the bench's Redis")
    return explain(exc, found.describe(), tls=found.tls)


def ping(bench: Bench) -> None:
    """Check that the bench's Redis answers, or raise :class:`RedisUnavailable` (or a subclass) saying why."""
    found = target(bench)
    try:
        bench.redis().ping()
    except redis.RedisError as exc:
        raise as_error(exc, found) from None


def refuse_misconfigured(bench: Bench) -> None:
    """For a daemon starting: raise when the bench has no Redis, its config is malformed, or its Redis refuses
    the credentials or the TLS handshake, since waiting cannot fix those; a Redis that is merely down (or a
    Sentinel failover under way) is left to the caller's outage loop."""
    found = target(bench)
    try:
        bench.redis().ping()
    except redis.RedisError as exc:
        error = as_error(exc, found)
        if isinstance(error, (RedisAuthFailed, RedisTLSFailed)):
            raise error from None
        logger.debug("Redis not reachable yet at start (%s); waiting for it", error)
