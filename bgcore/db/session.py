"""The unit of work of the current site: one connection, one transaction, after-commit actions.

A :class:`SiteSession` belongs to one site context (``ctx.db``). It opens a
connection and begins a transaction on first use only, so code that never
touches the database never connects. :meth:`commit` and :meth:`rollback` end
the transaction (the next use begins a new one); actions registered with
:meth:`after_commit` run only after a commit, and are dropped on rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.sql import Executable

from bgcore.db.engines import Database, database_for
from bgcore.errors import AfterCommitFailed, DatabaseUnavailable

if TYPE_CHECKING:
    from bgcore.context import SiteContext

logger = logging.getLogger(__name__)


class SiteSession:
    """The current site's transaction, opened lazily."""

    def __init__(self, ctx: SiteContext) -> None:
        self._ctx = ctx
        self._database: Database | None = None
        self._connection: Connection | None = None
        self._after_commit: list[Callable[[], Any]] = []

    @property
    def site(self) -> str:
        return self._ctx.site

    @property
    def database(self) -> Database:
        """The site's :class:`Database` (resolving it does not connect)."""
        if self._database is None:
            self._database = database_for(self._ctx.bench, self._ctx.config)
        return self._database

    @property
    def in_transaction(self) -> bool:
        return self._connection is not None

    def connection(self) -> Connection:
        """The connection of the current transaction, beginning one if none is open."""
        if self._connection is None:
            connection = self.database.connect()
            try:
                connection.begin()
            except Exception as exc:
                connection.close()
                raise self.database.unavailable(exc) from exc
            self._connection = connection
        return self._connection

    def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Execute ``statement`` in the current transaction.

        A table missing from the site's database raises :class:`DatabaseUnavailable`
        saying to run ``bgcore migrate``; other database errors pass unchanged.
        """
        try:
            return self.connection().execute(statement, parameters)
        except sa_exc.DBAPIError as exc:
            if _missing_table(exc):
                raise DatabaseUnavailable(
                    f"site {self.site!r}: its database {self.database.shown_url} lacks a table "
                    f"({str(exc.orig).strip().splitlines()[0]}); run 'bgcore migrate --site {self.site}'"
                ) from exc
            raise

    def after_commit(self, action: Callable[[], Any]) -> None:
        """Run ``action`` once the current transaction commits; drop it if it rolls back."""
        self._after_commit.append(action)

    def commit(self) -> None:
        """Commit the transaction (if any), then run the after-commit actions in order.

        Raises :class:`AfterCommitFailed` when an action failed; the commit stands
        and the remaining actions still run.
        """
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.commit()
            except BaseException:
                self._after_commit.clear()
                connection.close()
                raise
            connection.close()
        self._run_after_commit()

    def rollback(self) -> None:
        """Roll back the transaction (if any) and drop the after-commit actions."""
        self._after_commit.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.rollback()
            finally:
                connection.close()

    def close(self) -> None:
        """End of the site context: anything not committed is rolled back."""
        if self._connection is not None or self._after_commit:
            logger.debug("rolling back uncommitted work site=%s", self.site)
        self.rollback()

    def _run_after_commit(self) -> None:
        actions, self._after_commit = self._after_commit, []
        failures = []
        for action in actions:
            try:
                action()
            except Exception as exc:
                logger.error("after-commit action failed site=%s job=%s: %s", self.site, self._ctx.job_id, exc)
                failures.append(exc)
        if failures:
            raise AfterCommitFailed(
                f"site {self.site!r}: the transaction committed, but {len(failures)} after-commit "
                f"action(s) failed (first: {failures[0]}); the jobs they would have enqueued were not "
                "pushed, enqueue them again once the cause is fixed"
            ) from failures[0]


def _missing_table(exc: sa_exc.DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "pgcode", None) == "42P01":  # undefined_table
        return True
    args: tuple[Any, ...] = tuple(getattr(orig, "args", ()))
    if type(orig).__module__.startswith("pymysql"):
        return bool(args) and args[0] == 1146  # ER_NO_SUCH_TABLE
    return "no such table" in str(orig)


def finish(ctx: SiteContext, ok: bool) -> None:
    """End a request-like block: commit its session if ``ok``, else roll it back."""
    session: SiteSession | None = ctx.state.get("db")
    if session is None:
        return
    if ok:
        session.commit()
    else:
        session.rollback()
