"""When a scheduled event is due: pure functions over cron expressions and aware times.

No I/O and no clock here: every function takes the times it reasons about as
parameters (aware :class:`~datetime.datetime` values; naive ones are refused).
Expressions are parsed and iterated with croniter; time zones come from
:mod:`zoneinfo`.

Cron expressions are evaluated in the *local wall-clock time* of the site's
time zone. croniter iterates over wall-clock slots (it is handed wall times
tagged as UTC, so none of its own DST handling is involved) and this module
turns each slot into one instant by the rule below. (croniter 7's own aware
iteration fires ``30 2 * * *`` twice on a fall-back night and an hourly job
twice at the repeated 02:00; that is why it is not used directly.)

DST rule
--------
A cron expression names wall-clock times. Each wall-clock slot fires at most
once, at one instant:

* A slot that exists once fires at that instant.
* A slot that does not exist because the clocks spring forward (02:30 on the
  night Europe/Berlin goes from 02:00 CET to 03:00 CEST) fires at the first
  instant after the gap, i.e. when the clocks show the gap's end (03:00 CEST).
  Several slots inside one gap (``*/15`` at 02:00, 02:15, ...) and a slot at
  the gap's end itself (03:00) all fall on that instant and fire there once.
* A slot that exists twice because the clocks fall back (02:30 on the night
  Europe/Berlin goes from 03:00 CEST back to 02:00 CET) fires once, at its
  first occurrence (02:30 CEST); the repeat is skipped.

Consequences: a daily job fires exactly once on every local date, also on
both DST nights (a date a zone skips entirely has no run of its own); an hourly job fires 23 times on the spring-forward day
(02:00 and 03:00 coincide) and 24 times on the 25-hour fall-back day (the
repeated hour is skipped); a ``*/5`` job pauses during the repeated hour.

Expressions have 5 fields (minute hour day-of-month month day-of-week, as
croniter reads them: when both day fields are restricted, either matches).

Due rule
--------
An event is due when the first slot strictly after its last execution (or
its registration) is at or before now. Missed slots after downtime coalesce:
:func:`due_time` returns only the latest slot in ``(last, now]``.
"""

from __future__ import annotations

import copy
import difflib
import logging
from datetime import datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from bgcore.errors import InvalidArgument, InvalidCron

logger = logging.getLogger(__name__)

UTC = timezone.utc

FREQUENCY_CRON: dict[str, str] = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
    "yearly": "0 0 1 1 *",
    "annual": "0 0 1 1 *",
}

CRON_ALIASES: dict[str, str] = {
    **FREQUENCY_CRON,
    "@hourly": FREQUENCY_CRON["hourly"],
    "@daily": FREQUENCY_CRON["daily"],
    "@midnight": FREQUENCY_CRON["daily"],
    "@weekly": FREQUENCY_CRON["weekly"],
    "@monthly": FREQUENCY_CRON["monthly"],
    "@yearly": FREQUENCY_CRON["yearly"],
    "@annually": FREQUENCY_CRON["yearly"],
}

# Upper bound on slots skipped in one search; reached only on a fall-back
# night with a per-minute cron (at most ~60 per repeated hour).
_MAX_STEPS = 100_000
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def normalize_cron(expr: str) -> str:
    """Return ``expr`` as a 5-field cron expression, or raise :class:`InvalidCron`.

    Aliases (``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly``,
    ``annual`` and ``@hourly``, ``@daily``, ``@midnight``, ``@weekly``,
    ``@monthly``, ``@yearly``, ``@annually``) map to their expression.
    Whitespace is collapsed. Expressions croniter rejects, expressions
    without exactly 5 fields and expressions that never match (``0 0 30 2 *``)
    are refused with a message naming the expression.
    """
    if not isinstance(expr, str):
        raise InvalidCron(f"cron expression {expr!r} is not a string; write it like '*/5 * * * *'")
    return _normalize(expr)


@lru_cache(maxsize=4096)
def _normalize(expr: str) -> str:
    text = " ".join(expr.split())
    alias = CRON_ALIASES.get(text.lower())
    if alias is not None:
        return alias
    aliases = ", ".join(CRON_ALIASES)
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        close = difflib.get_close_matches(text.lower(), CRON_ALIASES, n=1, cutoff=0.6) if len(fields) == 1 else []
        if close or text.startswith("@"):
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise InvalidCron(
                f"invalid cron expression {expr!r}: unknown alias{hint} Aliases are {aliases}; "
                "or write 5 fields like '*/5 * * * *'"
            )
        count = f"{len(fields)} field" + ("" if len(fields) == 1 else "s")
        raise InvalidCron(
            f"invalid cron expression {expr!r}: it has {count}, bgcore needs exactly 5 "
            f"('minute hour day-of-month month day-of-week', e.g. '*/5 * * * *') or an alias ({aliases})"
        )
    try:
        croniter(text, _REFERENCE).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidCron(f"invalid cron expression {expr!r}: it never matches any date") from None
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise InvalidCron(
            f"invalid cron expression {expr!r}: {exc}; write 5 fields like '*/5 * * * *' "
            f"or an alias ({aliases})"
        ) from None
    return text


@lru_cache(maxsize=4096)
def _prototype(expr: str) -> croniter:
    """A parsed croniter for ``expr`` (parsing is most of the cost; this is a pure memo)."""
    return croniter(expr, _REFERENCE)


def _iterator(cron: str, start: datetime) -> croniter:
    """A private croniter over ``cron`` positioned at ``start`` (a copy: safe across threads)."""
    it = copy.copy(_prototype(normalize_cron(cron)))
    it.set_current(start, force=True)
    return it


@lru_cache(maxsize=512)
def zone(tz: str) -> tzinfo:
    """The :class:`~zoneinfo.ZoneInfo` named ``tz``, or :class:`InvalidArgument`."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidArgument(
            f"unknown time zone {tz!r}: use an IANA name such as 'UTC', 'Europe/Berlin' or 'Asia/Kolkata'"
        ) from None


def _require_aware(name: str, value: datetime) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{name}={value!r} must be an aware datetime (with tzinfo)")


def _wall(instant: datetime, tz: tzinfo) -> datetime:
    """The local wall-clock time of ``instant``, tagged UTC for croniter's plain arithmetic."""
    return instant.astimezone(tz).replace(tzinfo=UTC, fold=0)


def _local_naive(instant: datetime, tz: tzinfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def slot_instant(wall: datetime, tz: tzinfo) -> datetime:
    """The aware UTC instant at which wall-clock slot ``wall`` fires (the DST rule).

    ``wall``'s tzinfo is ignored: only its wall-clock fields count.
    """
    naive = wall.replace(tzinfo=None, fold=0)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _local_naive(first, tz) == naive:
        return first  # exists; fold=0 is the first occurrence of a repeated time
    return _gap_end(naive, tz)


def _gap_end(naive: datetime, tz: tzinfo) -> datetime:
    """The first instant after the spring-forward gap that contains ``naive``."""
    # fold=1 reads the gap with the offset after the jump (an instant before
    # the transition), fold=0 with the offset before it (at or after it).
    low = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if low > high:
        low, high = high, low
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        mid = mid.replace(microsecond=0)
        if mid <= low:
            break
        if _local_naive(mid, tz) > naive:
            high = mid
        else:
            low = mid
    return high


def next_run(cron: str, after: datetime, tz: str) -> datetime:
    """The first scheduled instant strictly after ``after``, as an aware UTC datetime.

    ``cron`` is an expression or alias (see :func:`normalize_cron`), evaluated
    in the wall-clock time of zone ``tz`` under the module's DST rule.
    """
    _require_aware("after", after)
    local_tz = zone(tz)
    it = _iterator(cron, _wall(after, local_tz))
    for _ in range(_MAX_STEPS):
        instant = slot_instant(it.get_next(datetime), local_tz)
        if instant > after:
            return instant
    raise InvalidCron(f"cron expression {cron!r} found no run after {after.isoformat()} in {tz}")


def due_time(cron: str, last: datetime, now: datetime, tz: str) -> datetime | None:
    """The latest scheduled instant in ``(last, now]`` (aware UTC), or ``None``.

    ``last`` is the event's last execution (or its registration). Every slot
    missed in between coalesces into the returned one, so an event runs once
    after downtime, not once per missed slot. ``due_time(...)`` is not None
    exactly when ``next_run(cron, last, tz) <= now``.
    """
    _require_aware("last", last)
    _require_aware("now", now)
    if now <= last:
        return None
    local_tz = zone(tz)
    local_now = now.astimezone(local_tz)
    start = _wall(now, local_tz)
    if local_now.fold == 1:
        # In the repeated hour: first occurrences of later wall times are
        # already past, so start the backward walk at the end of the repeat.
        first = local_now.replace(fold=0)
        start += (first.utcoffset() or timedelta(0)) - (local_now.utcoffset() or timedelta(0))
    it = _iterator(cron, start + _ONE_US)
    for _ in range(_MAX_STEPS):
        instant = slot_instant(it.get_prev(datetime), local_tz)
        if instant <= now:
            return instant if instant > last else None
    raise InvalidCron(f"cron expression {cron!r} found no run before {now.isoformat()} in {tz}")
