"""Running a job's method in its site's transaction, retrying transient database errors.

Transient means the same work can succeed if simply run again: a deadlock, a
serialization failure or a lock-wait timeout (and SQLite's "database is
locked"). Each retry rolls back, waits (exponential backoff with jitter), and
calls the method again with a fresh copy of the original kwargs, as the same
user, in the same site.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bgcore.context import SiteContext

logger = logging.getLogger(__name__)

MAX_RETRIES = 3
BASE_DELAY = 0.05

# PostgreSQL SQLSTATEs: serialization_failure, deadlock_detected, lock_not_available.
_PG_CODES = frozenset({"40001", "40P01", "55P03"})
# MySQL/MariaDB error numbers: lock wait timeout, deadlock.
_MYSQL_CODES = frozenset({1205, 1213})
_SQLITE_MESSAGES = ("database is locked", "database table is locked")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a retryable database error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_transient_one(getattr(current, "orig", None) or current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_transient_one(error: BaseException) -> bool:
    if getattr(error, "pgcode", None) in _PG_CODES:
        return True
    args: tuple[Any, ...] = tuple(getattr(error, "args", ()))
    module = type(error).__module__
    if module.startswith("pymysql") or module.startswith("MySQLdb"):
        return bool(args) and args[0] in _MYSQL_CODES
    if module.startswith("sqlite3"):
        return any(m in str(error) for m in _SQLITE_MESSAGES)
    return False


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based)."""
    return float(BASE_DELAY * (2 ** (attempt - 1)) * (1 + random.random()))


def run_in_transaction(
    ctx: SiteContext,
    function: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    max_retries: int = MAX_RETRIES,
    sleep: Callable[[float], Any] = time.sleep,
) -> Any:
    """Call ``function(**kwargs)`` in ``ctx``'s transaction; commit on return, roll back on raise.

    A transient database error is retried up to ``max_retries`` times; any other
    error (or the last transient one) is raised after the rollback. A method
    that never touches the database opens no connection.
    """
    attempt = 0
    while True:
        call_kwargs = copy.deepcopy(kwargs) if kwargs else {}
        try:
            result = function(**call_kwargs)
            session = ctx.state.get("db")
            if session is not None:
                session.commit()
            return result
        except BaseException as exc:
            session = ctx.state.get("db")
            if session is not None:
                _quiet_rollback(ctx, session)
            if attempt >= max_retries or not is_transient(exc):
                raise
            attempt += 1
            delay = backoff(attempt)
            logger.warning(
                "retrying site=%s job=%s attempt=%d/%d in %.2fs after transient database error: %s",
                ctx.site, ctx.job_id, attempt, max_retries, delay, str(exc).splitlines()[0],
            )
            sleep(delay)


def _quiet_rollback(ctx: SiteContext, session: Any) -> None:
    """Roll back without hiding the job's own error behind a rollback error."""
    try:
        session.rollback()
    except Exception as exc:
        logger.error("rollback failed site=%s job=%s: %s", ctx.site, ctx.job_id, exc)
