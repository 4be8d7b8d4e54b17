"""Running a job's method in its site's transaction, retrying transient database errors.

Transient means the same work can succeed if simply run again: a deadlock, a
serialization failure or a lock-wait timeout (and SQLite's "database is
locked"). Each retry rolls back, waits (exponential backoff with jitter), and
calls the method again with a fresh copy of the original kwargs, as the same
user, in the same site.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bgcore.context import SiteContext

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
    that never touches the database opens no connection. This is the worker's own
    transaction step (``bgcore.engine.middleware.Transaction`` through the job
    lifecycle), for code that runs a function in an open site context.
    """
    from bgcore.engine.lifecycle import JobRun, Middleware, perform
    from bgcore.engine.middleware import Transaction

    class _InContext(Middleware):
        def before_job(self, run: JobRun) -> None:
            run.ctx, run.function = ctx, function

    run = JobRun(bench=ctx.bench, job_id=ctx.job_id, site=ctx.site, method=getattr(function, "__qualname__", ""),
                 kwargs=kwargs, user=ctx.user)
    perform(run, [_InContext(), Transaction(max_retries)], sleep=sleep)
    if run.error is not None:
        raise run.error
    return run.result
