"""Creating a site: its directory, its ``site_config.json`` and its database schema."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from bgcore.bench import ALL_SITES, Bench, validate_site_name
from bgcore.config import SITE_CONFIG
from bgcore.db.engines import database_identity, site_url
from bgcore.errors import (
    BgcoreError, DatabaseConfigError, DatabaseUnavailable, InvalidSiteName, SiteExists, UnknownApp)
from bgcore.migrate import MigrateReport, migrate_site

logger = logging.getLogger(__name__)


def create_site(bench: Bench, name: str, *, db_url: str | None = None,
                install_apps: Sequence[str] = (), create_db: bool = False,
                db_root_url: str | None = None) -> MigrateReport:
    """Create site ``name`` on ``bench`` and its schema; return the :class:`MigrateReport`.

    The database is ``db_url``, or the SQLite file inside the site directory.
    With ``create_db``, a PostgreSQL or MariaDB database missing on its server
    is created first, through ``db_root_url`` (a URL with admin rights) or
    ``db_url`` itself. Refuses an existing site, an app that does not import,
    and a ``db_url`` another site of the bench already uses. If the schema
    cannot be created, the new site directory is removed again and the error is
    raised, worded without pointing into the removed directory.
    """
    path = bench.site_path(validate_site_name(name))
    if name == ALL_SITES:
        raise InvalidSiteName(f"a site cannot be named {ALL_SITES!r}: '--site {ALL_SITES}' means every site; "
                              "choose a host-like name such as 'all.example.com'")
    if (path / SITE_CONFIG).exists():
        raise SiteExists(f"site {name!r} already exists at {path}; choose another name or use 'bgcore migrate'")
    if path.exists():
        raise SiteExists(f"{path} exists but is not a site (no {SITE_CONFIG}); remove it or choose another name")
    bench.activate_import_path()
    for app in install_apps:
        if importlib.util.find_spec(app) is None:
            raise UnknownApp(
                f"cannot install app {app!r} on new site {name!r}: it does not import; "
                "put it on the bench's apps_path or install it in the virtualenv"
            )
    if db_url is not None:
        _check_url(name, db_url)
        _refuse_shared_url(bench, name, db_url)
        if create_db:
            create_database(name, db_url, db_root_url)
    config: dict[str, object] = {"installed_apps": list(dict.fromkeys(install_apps))}
    if db_url is not None:
        config["db_url"] = db_url
    path.mkdir(parents=True)
    (path / SITE_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    try:
        report = migrate_site(bench, name)
    except BgcoreError as exc:
        shutil.rmtree(path, ignore_errors=True)
        raise _without_removed_files(exc, name) from exc
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    logger.info("created site=%s", name)
    return report


def _without_removed_files(exc: BgcoreError, name: str) -> BgcoreError:
    """``exc`` reworded for a site that no longer exists: advice about its config file becomes --db-url."""
    text = str(exc).replace(f"check db_url in sites/{name}/site_config.json", "check --db-url")
    text = text.replace(f"sites/{name}/site_config.json", "--db-url")
    text = text.replace(f"; run 'bgcore migrate --site {name}'", "")
    text = f"{text}; site {name!r} was not created (nothing was left behind)"
    try:
        return type(exc)(text)
    except TypeError:  # an error class with a constructor of its own
        return BgcoreError(text)


def _admin_url(db_url: str, db_root_url: str | None) -> tuple[sa.URL, str]:
    """The server URL to create or drop ``db_url``'s database through, and that database's name."""
    url = sa.make_url(db_url)
    if not url.database:
        raise DatabaseConfigError(f"--db-url {url.render_as_string()} names no database; add one, e.g. .../site1")
    admin = sa.make_url(db_root_url) if db_root_url else url
    backend = admin.get_backend_name()
    if backend == "postgresql":
        admin = admin.set(database="postgres")
    elif backend in ("mysql", "mariadb"):
        admin = admin._replace(database=None)  # URL.set() cannot clear a field
    else:
        raise DatabaseConfigError(f"creating or dropping a database needs PostgreSQL or MariaDB, not {backend}")
    return admin, url.database


def create_database(name: str, db_url: str, db_root_url: str | None = None) -> bool:
    """Create the database of ``db_url`` on its server if it is missing; True if it was created.

    Connects with ``db_root_url`` (admin rights) if given, else with ``db_url``'s own user.
    """
    admin, database = _admin_url(db_url, db_root_url)
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    quoted = engine.dialect.identifier_preparer.quote(database)
    try:
        with engine.connect() as conn:
            if _exists(conn, admin.get_backend_name(), database):
                return False
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    except sa_exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        raise DatabaseUnavailable(
            f"cannot create database {database!r} for site {name!r} ({reason}); give a user with the right to "
            "create databases in --db-url or --db-root-url, or create it yourself and leave out --create-db"
        ) from None
    finally:
        engine.dispose()
    logger.info("created database %s for site=%s", database, name)
    return True


def _exists(conn: Any, backend: str, database: str) -> bool:
    """Whether the server behind ``conn`` (PostgreSQL or MariaDB) has a database named ``database``."""
    if backend == "postgresql":
        return conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).first() is not None
    return conn.exec_driver_sql("SHOW DATABASES LIKE %s", (database,)).first() is not None


def drop_database(name: str, db_url: str, db_root_url: str | None = None) -> bool:
    """Drop the database of ``db_url`` (PostgreSQL: after ending its sessions); True if it existed."""
    admin, database = _admin_url(db_url, db_root_url)
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    quoted = engine.dialect.identifier_preparer.quote(database)
    try:
        with engine.connect() as conn:
            exists = _exists(conn, admin.get_backend_name(), database)
            if admin.get_backend_name() == "postgresql":
                conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                                     "AND pid <> pg_backend_pid()", (database,))
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
    except sa_exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        raise DatabaseUnavailable(f"cannot drop database {database!r} of site {name!r} ({reason}); give a user "
                                  "with the right to drop it in --db-root-url") from None
    finally:
        engine.dispose()
    return exists


def _check_url(name: str, db_url: str) -> None:
    """Refuse a ``--db-url`` that is not a database URL, before anything is written."""
    try:
        sa.make_url(db_url).get_dialect()
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ValueError) as exc:
        shown = db_url if "@" not in db_url else "<hidden: it may hold a password>"
        raise DatabaseConfigError(
            f"cannot create site {name!r}: --db-url {shown} is not a usable database URL ({exc}); use e.g. "
            "postgresql+psycopg2://user@host/db or mysql+pymysql://user@host/db, or leave it out for SQLite"
        ) from None


def _refuse_shared_url(bench: Bench, name: str, db_url: str) -> None:
    wanted = database_identity(sa.make_url(db_url))
    for other in bench.site_names():
        try:
            other_url = site_url(bench.site_config(other))
        except Exception:
            continue
        if database_identity(other_url) == wanted:
            raise DatabaseConfigError(
                f"cannot create site {name!r}: db_url is already the database of site {other!r}; "
                "every site needs a database of its own (create one and pass its URL)"
            )
