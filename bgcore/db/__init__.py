"""Site databases: ``bgcore.db`` is the current site's database handle.

Inside a site (``with bgcore.connect(site):`` or a job)::

    bgcore.db.execute(sa.select(...))   # in the site's current transaction
    bgcore.db.commit()                  # then after-commit enqueues go out
    bgcore.db.rollback()                # and they are dropped

A job's transaction is committed by the worker when the method returns and
rolled back when it raises; a ``bgcore.connect`` block likewise commits when it
ends normally and rolls back when it raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.sql import Executable

from bgcore.context import current
from bgcore.db.engines import Database, database_for
from bgcore.db.session import SiteSession

__all__ = [
    "Database", "SiteSession", "after_commit", "commit", "connection", "database_for",
    "execute", "get_db", "rollback", "session",
]


def session() -> SiteSession:
    """The current site's transaction (:class:`NoSiteContext` outside a site)."""
    return current().db


def get_db() -> Database:
    """The current site's :class:`Database` (engine; ``transaction()`` for separate work)."""
    return current().db.database


def connection() -> Connection:
    """The connection of the current site's transaction (begun on first use)."""
    return session().connection()


def execute(statement: Executable, parameters: Any = None) -> CursorResult[Any]:
    """Execute ``statement`` in the current site's transaction."""
    return session().execute(statement, parameters)


def commit() -> None:
    """Commit the current site's transaction, then push its after-commit jobs."""
    session().commit()


def rollback() -> None:
    """Roll back the current site's transaction and drop its after-commit jobs."""
    session().rollback()


def after_commit(action: Callable[[], Any]) -> None:
    """Run ``action`` after the current site's transaction commits (never if it rolls back)."""
    session().after_commit(action)
