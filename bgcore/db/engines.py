"""One database per site: its URL, its pooled engine, and a bounded cache of engines.

A site's database is ``db_url`` from its config, or by default the SQLite file
``sites/<site>/site.sqlite3``. Engines are cached per (bench, site, url) in one
bounded LRU per process, so a worker serving many sites keeps at most
``db_engine_cache_size`` (bench config, default 16) pools open; the least
recently used is disposed. A forked child drops inherited pools without
closing the parent's connections.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc as sa_exc
from sqlalchemy.engine import Connection, Engine, URL

from bgcore.bench import Bench, SiteConfig
from bgcore.errors import DatabaseConfigError, DatabaseUnavailable

logger = logging.getLogger(__name__)

SQLITE_FILE = "site.sqlite3"
DEFAULT_CACHE_SIZE = 16
CONNECT_TIMEOUT = 5


def sqlite_path(config: SiteConfig) -> Path:
    """The default database file of a site."""
    return config.path / SQLITE_FILE


def site_url(config: SiteConfig) -> URL:
    """The parsed database URL of a site, or :class:`DatabaseConfigError` naming the site."""
    raw = config.get("db_url")
    if raw is None:
        return sa.make_url(f"sqlite:///{sqlite_path(config)}")
    if not isinstance(raw, str) or not raw.strip():
        raise _bad_url(config, repr(raw), "it must be a non-empty string")
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
        url = site_url(config)
        key = (str(bench.path), config.name, url.render_as_string(hide_password=False))
        limit = _cache_size(bench)
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
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
    value = bench.common_config.get("db_engine_cache_size", DEFAULT_CACHE_SIZE)
    return value if isinstance(value, int) and value > 0 else DEFAULT_CACHE_SIZE


ENGINES = EngineCache()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=ENGINES.after_fork)


def database_for(bench: Bench, config: SiteConfig, *, create: bool = False) -> Database:
    """The database of site ``config`` on ``bench`` (engine shared through the bounded cache).

    ``create=True`` lets a missing SQLite file be created (``new-site``, ``migrate``);
    otherwise a missing file raises :class:`DatabaseUnavailable`.
    """
    return Database(config.name, ENGINES.get(bench, config, create=create))
