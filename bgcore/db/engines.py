"""One database per site: its URL, its pooled engine, and a bounded cache of engines.

A site's database is ``db_url`` from its config, or by default the SQLite file
``sites/<site>/site.sqlite3``. Every site has a database of its own: a
``db_url`` in ``common_site_config.json`` is refused, and so is a site whose
database is another site's (checked when its engine is made, against an
index of the bench's sites at most a few seconds old). Engines are cached per
(bench, site, url) in one bounded LRU per process, so a worker serving many sites keeps at most
``db_engine_cache_size`` (bench config, default 16) pools open; the least
recently used is disposed. A forked child drops inherited pools without
closing the parent's connections.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc as sa_exc
from sqlalchemy.engine import Connection, Engine, URL

from bgcore.bench import Bench, SiteConfig
from bgcore.config import COMMON_CONFIG, SITE_CONFIG
from bgcore.errors import BgcoreError, DatabaseConfigError, DatabaseUnavailable

logger = logging.getLogger(__name__)

SQLITE_FILE = "site.sqlite3"
DEFAULT_CACHE_SIZE = 16
CONNECT_TIMEOUT = 5


def sqlite_path(config: SiteConfig) -> Path:
    """The default database file of a site."""
    return config.path / SQLITE_FILE


def site_url(config: SiteConfig) -> URL:
    """The parsed database URL of a site, or :class:`DatabaseConfigError` naming the site."""
    raw = config.setting("db_url")  # a non-empty string, or None (checked by the schema)
    if raw is None:
        return sa.make_url(f"sqlite:///{sqlite_path(config)}")
    try:
        url = sa.make_url(raw)
        url.get_dialect()
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ValueError) as exc:
        raise _bad_url(config, _mask(raw), str(exc)) from None
    return url


def _mask(raw: str) -> str:
    try:
        return sa.make_url(raw).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable>"


def _bad_url(config: SiteConfig, shown: str, reason: str) -> DatabaseConfigError:
    return DatabaseConfigError(
        f"site {config.name!r}: db_url {shown} in {config.path / 'site_config.json'} is not a usable "
        f"database URL ({reason}); use e.g. postgresql+psycopg2://user@host/db or "
        "mysql+pymysql://user@host/db, or remove db_url to use the site's SQLite file"
    )


_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
_LOOPBACK = frozenset({"", "localhost", "127.0.0.1", "::1"})


def database_identity(url: URL) -> tuple[str, ...]:
    """What makes two URLs the same database: server family, host, port and name, or the SQLite file.

    The driver, user, password and query are left out (``postgresql+psycopg2://u@localhost/db``
    and ``postgresql://v@127.0.0.1:5432/db`` are one database).
    """
    backend = url.get_backend_name()
    if backend == "sqlite":
        path = url.database or ""
        return ("sqlite", path if path in ("", ":memory:") else str(Path(path).resolve()))
    host = (url.host or "").lower()
    port = url.port or _DEFAULT_PORTS.get(backend) or ""
    family = "mysql" if backend == "mariadb" else backend
    return (family, "localhost" if host in _LOOPBACK else host, str(port), url.database or "")


def refuse_common_db_url(bench: Bench) -> None:
    """Raise :class:`DatabaseConfigError` when ``common_site_config.json`` sets ``db_url`` (one database for all)."""
    raw = bench.common_config.get("db_url")
    if raw is not None:
        shown = _mask(raw) if isinstance(raw, str) else repr(raw)
        raise DatabaseConfigError(
            f"{bench.sites_path / COMMON_CONFIG}: db_url {shown} is not allowed in the bench config, because every "
            "site would share that one database; remove it and give each site that needs a server database "
            f"its own db_url in its {SITE_CONFIG}"
        )


def refuse_shared_database(bench: Bench, config: SiteConfig, url: URL | None = None) -> None:
    """Raise :class:`DatabaseConfigError` naming both sites when another site of ``bench`` has the same database."""
    url = url if url is not None else site_url(config)
    mine = database_identity(url)
    if mine[0] == "sqlite" and mine[1] in ("", ":memory:"):
        return  # never shared: each connection gets its own
    for other in _DATABASES.sites_of(bench, mine):
        if other == config.name:
            continue
        try:  # the index may be a few seconds old: confirm with the other site's config as it is now
            theirs = database_identity(site_url(bench.site_config(other)))
        except BgcoreError:
            continue  # a broken site is reported on its own
        if theirs == mine:
            raise DatabaseConfigError(
                f"site {config.name!r}: its database {url.render_as_string(hide_password=True)} is also the "
                f"database of site {other!r}; every site needs a database of its own: give one of them another db_url in "
                f"{config.path / SITE_CONFIG} or {bench.site_path(other) / SITE_CONFIG}"
            )


class DatabaseIndex:
    """Database identity -> the sites that resolve to it, per bench, rebuilt at most every ``max_age`` seconds.

    Opening the engines of 10,000 sites (the scheduler's first load) reads every
    site's config once per ``max_age``, not once per engine.
    """

    def __init__(self, max_age: float = 5.0) -> None:
        self.max_age = max_age
        self._built: dict[Path, tuple[float, dict[tuple[str, ...], list[str]]]] = {}
        self._lock = threading.Lock()

    def sites_of(self, bench: Bench, identity: tuple[str, ...]) -> list[str]:
        with self._lock:
            built = self._built.get(bench.path)
            if built is None or time.monotonic() - built[0] > self.max_age:
                built = self._built[bench.path] = (time.monotonic(), _index(bench))
        return built[1].get(identity, [])

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (another thread of the parent may have held it)."""
        self._lock = threading.Lock()


def _index(bench: Bench) -> dict[tuple[str, ...], list[str]]:
    found: dict[tuple[str, ...], list[str]] = {}
    for name in bench.site_names():
        try:
            found.setdefault(database_identity(site_url(bench.site_config(name))), []).append(name)
        except BgcoreError:
            continue
    return found


_DATABASES = DatabaseIndex()


class Database:
    """A site's database: a pooled engine plus the site it belongs to (for messages)."""

    def __init__(self, site: str, engine: Engine) -> None:
        self.site = site
        self.engine = engine

    @property
    def shown_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def connect(self) -> Connection:
        """A pooled connection, or :class:`DatabaseUnavailable` naming the site and what to do."""
        try:
            return self.engine.connect()
        except sa_exc.DBAPIError as exc:
            raise self.unavailable(exc) from exc

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        """The error that says this site's database cannot be used, and why."""
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if "file is not a database" in reason or "database disk image is malformed" in reason:
            advice = ("the SQLite file is corrupt: restore it from a backup, or move it aside and run "
                      f"'bgcore migrate --site {self.site}' to start an empty one")
        elif self.engine.url.get_backend_name() == "sqlite":
            advice = f"check the file and its permissions, then run 'bgcore migrate --site {self.site}'"
        else:
            advice = (f"check db_url in sites/{self.site}/site_config.json and that the server is running "
                      "and reachable")
        return DatabaseUnavailable(f"site {self.site!r}: its database {self.shown_url} cannot be used ({reason}); {advice}")

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in a transaction: committed when the block succeeds, rolled back when it raises."""
        with self.connect() as connection, connection.begin():
            yield connection


def _make_engine(config: SiteConfig, url: URL, *, create: bool) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(config, url, create=create)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() in ("postgresql", "mysql", "mariadb"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args)


def _sqlite_engine(config: SiteConfig, url: URL, *, create: bool) -> Engine:
    path = url.database
    if path and path != ":memory:" and not create and not Path(path).exists():
        raise DatabaseUnavailable(
            f"site {config.name!r}: its database file {path} does not exist; "
            f"create it with 'bgcore migrate --site {config.name}'"
        )
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    # pysqlite's own transaction handling defers BEGIN; take control so a
    # transaction really begins where SQLAlchemy begins one (SQLAlchemy recipe).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # Reads the header (a corrupt file fails here) and lets readers and the
            # one writer of a site (several workers, the scheduler) proceed together.
            cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


class EngineCache:
    """A bounded LRU of engines; evicted engines are disposed."""

    def __init__(self) -> None:
        self._engines: OrderedDict[tuple[str, str, str], Engine] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bench: Bench, config: SiteConfig, *, create: bool = False) -> Engine:
        refuse_common_db_url(bench)
        url = site_url(config)
        key = (str(bench.path), config.name, url.render_as_string(hide_password=False))
        limit = _cache_size(bench)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
            refuse_shared_database(bench, config, url)
            engine = _make_engine(config, url, create=create)
            self._engines[key] = engine
            while len(self._engines) > limit:
                _, old = self._engines.popitem(last=False)
                logger.debug("disposing engine %s (engine cache full)", old.url)
                old.dispose()
            return engine

    def __len__(self) -> int:
        return len(self._engines)

    def dispose_all(self) -> None:
        """Close every pooled connection and forget every engine."""
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()

    def after_fork(self) -> None:
        """In a forked child: drop inherited pools without closing the parent's connections."""
        self._lock = threading.Lock()
        for engine in self._engines.values():
            engine.dispose(close=False)


def _cache_size(bench: Bench) -> int:
    size: int = bench.settings.get("db_engine_cache_size")
    return size


ENGINES = EngineCache()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=ENGINES.after_fork)
    os.register_at_fork(after_in_child=_DATABASES.after_fork)


def database_for(bench: Bench, config: SiteConfig, *, create: bool = False) -> Database:
    """The database of site ``config`` on ``bench`` (engine shared through the bounded cache).

    ``create=True`` lets a missing SQLite file be created (``new-site``, ``migrate``);
    otherwise a missing file raises :class:`DatabaseUnavailable`. A ``db_url`` in the
    bench config, or a database another site also resolves to, raises
    :class:`DatabaseConfigError` (the second is checked when the site's engine is made).
    """
    return Database(config.name, ENGINES.get(bench, config, create=create))
