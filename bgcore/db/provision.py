"""Creating a site: its directory, its ``site_config.json`` and its database schema."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from bgcore.bench import ALL_SITES, Bench, validate_site_name
from bgcore.config import SITE_CONFIG
from bgcore.db.engines import site_url
from bgcore.errors import DatabaseConfigError, InvalidSiteName, SiteExists, UnknownApp
from bgcore.migrate import MigrateReport, migrate_site

logger = logging.getLogger(__name__)


def create_site(bench: Bench, name: str, *, db_url: str | None = None,
                install_apps: Sequence[str] = ()) -> MigrateReport:
    """Create site ``name`` on ``bench`` and its schema; return the :class:`MigrateReport`.

    The database is ``db_url``, or the SQLite file inside the site directory.
    Refuses an existing site, an app that does not import, and a ``db_url``
    another site of the bench already uses. If the schema cannot be created,
    the new site directory is removed again and the error is raised.
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
    config: dict[str, object] = {"installed_apps": list(dict.fromkeys(install_apps))}
    if db_url is not None:
        config["db_url"] = db_url
    path.mkdir(parents=True)
    (path / SITE_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    try:
        report = migrate_site(bench, name)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    logger.info("created site=%s", name)
    return report


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
    for other in bench.site_names():
        try:
            other_url = site_url(bench.site_config(other))
        except Exception:
            continue
        if other_url.render_as_string(hide_password=False) == db_url:
            raise DatabaseConfigError(
                f"cannot create site {name!r}: db_url is already the database of site {other!r}; "
                "every site needs a database of its own (create one and pass its URL)"
            )
