"""Due-ness of scheduled events: next_run, due_time and normalize_cron as tables.

Times are written as local wall times of the zone under test (``L(...)``) and
compared as instants; the DST cases spell out the expected UTC instant too.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bgcore.errors import InvalidArgument, InvalidCron
from bgcore.scheduler.due import FREQUENCY_CRON, due_time, next_run, normalize_cron, slot_instant

UTC = timezone.utc


def U(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


def L(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold)  # type: ignore[arg-type,misc]


# -- normalize_cron ------------------------------------------------------------

@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("hourly", "0 * * * *"), ("daily", "0 0 * * *"), ("weekly", "0 0 * * 0"),
        ("monthly", "0 0 1 * *"), ("yearly", "0 0 1 1 *"), ("annual", "0 0 1 1 *"),
        ("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"), ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"), ("Annual", "0 0 1 1 *"), ("  */5   *  * * * ", "*/5 * * * *"),
        ("15 18 * * *", "15 18 * * *"), ("0 9 * * mon-fri", "0 9 * * mon-fri"), ("0 0 L * *", "0 0 L * *"),
    ],
)
def test_normalize_cron_maps_aliases_and_keeps_expressions(alias: str, expected: str) -> None:
    # Given an alias or expression / When normalized / Then it is the 5-field form
    assert normalize_cron(alias) == expected


def test_frequency_table_matches_the_spec() -> None:
    assert FREQUENCY_CRON == {
        "hourly": "0 * * * *", "daily": "0 0 * * *", "weekly": "0 0 * * 0",
        "monthly": "0 0 1 * *", "yearly": "0 0 1 1 *", "annual": "0 0 1 1 *",
    }


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("", "0 fields"), ("* * * *", "4 fields"), ("* * * * * *", "6 fields"), ("61 * * * *", "61 * * * *"),
        ("0 0 30 2 *", "never matches"), ("@reboot", "@reboot"), ("every day", "every day"),
        ("H * * * *", "H * * * *"), ("0 25 * * *", "0 25 * * *"),
    ],
)
def test_normalize_cron_refuses_bad_expressions_naming_them(expr: str, fragment: str) -> None:
    # Given a bad expression / When normalized / Then InvalidCron names the problem
    with pytest.raises(InvalidCron) as info:
        normalize_cron(expr)
    assert fragment in str(info.value)
    assert repr(expr) in str(info.value)


@pytest.mark.parametrize(
    ("expr", "suggestion"),
    [("@dialy", "'@daily'"), ("dailly", "'daily'"), ("@hourli", "'@hourly'"), ("@midnite", "'@midnight'"),
     ("wekly", "'weekly'")],
)
def test_a_misspelled_alias_gets_a_did_you_mean(expr: str, suggestion: str) -> None:
    # Given an alias with a typo / When normalized / Then the message suggests the alias, punctuated once
    with pytest.raises(InvalidCron) as info:
        normalize_cron(expr)
    message = str(info.value)
    assert f"unknown alias; did you mean {suggestion}? Aliases are" in message
    assert "?." not in message and "field" not in message.split("Aliases")[0]


def test_field_counts_are_spelled_right() -> None:
    with pytest.raises(InvalidCron) as info:
        normalize_cron("5")
    assert "it has 1 field," in str(info.value)
    with pytest.raises(InvalidCron, match="unknown alias. Aliases are"):
        normalize_cron("@reboot")


def test_normalize_cron_refuses_non_strings() -> None:
    with pytest.raises(InvalidCron, match="not a string"):
        normalize_cron(5)  # type: ignore[arg-type]


# -- next_run: every key, zones, month ends ------------------------------------

@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        # every frequency in UTC
        ("hourly", "UTC", U(2024, 5, 1, 10, 0), U(2024, 5, 1, 11, 0)),
        ("hourly", "UTC", U(2024, 5, 1, 10, 59, 59), U(2024, 5, 1, 11, 0)),
        ("daily", "UTC", U(2024, 5, 1, 0, 0), U(2024, 5, 2, 0, 0)),
        ("weekly", "UTC", U(2024, 5, 1, 12, 0), U(2024, 5, 5, 0, 0)),  # next Sunday
        ("monthly", "UTC", U(2024, 5, 1, 0, 0), U(2024, 6, 1, 0, 0)),
        ("yearly", "UTC", U(2024, 5, 1), U(2025, 1, 1)),
        ("annual", "UTC", U(2024, 12, 31, 23, 59), U(2025, 1, 1)),
        ("*/5 * * * *", "UTC", U(2024, 5, 1, 10, 3), U(2024, 5, 1, 10, 5)),
        ("15 18 * * *", "UTC", U(2024, 5, 1, 18, 15), U(2024, 5, 2, 18, 15)),
        # the site's zone decides where midnight is
        ("daily", "Europe/Berlin", U(2024, 1, 10, 12), L("Europe/Berlin", 2024, 1, 11)),
        ("daily", "Europe/Berlin", U(2024, 7, 10, 12), U(2024, 7, 10, 22)),
        ("daily", "America/New_York", U(2024, 1, 10, 12), U(2024, 1, 11, 5)),
        ("daily", "Asia/Kolkata", U(2024, 1, 10, 12), U(2024, 1, 10, 18, 30)),
        ("hourly", "Asia/Kolkata", U(2024, 1, 10, 12, 0), U(2024, 1, 10, 12, 30)),
        ("monthly", "Asia/Kolkata", U(2024, 1, 15), U(2024, 1, 31, 18, 30)),
        ("yearly", "America/New_York", U(2024, 6, 1), U(2025, 1, 1, 5)),
        # month ends and leap years
        ("0 0 31 * *", "UTC", U(2024, 1, 31, 0, 0), U(2024, 3, 31)),  # Feb and no 31st
        ("0 0 L * *", "UTC", U(2024, 1, 31, 0, 0), U(2024, 2, 29)),
        ("0 0 L * *", "UTC", U(2023, 1, 31, 0, 0), U(2023, 2, 28)),
        ("0 0 29 2 *", "UTC", U(2024, 3, 1), U(2028, 2, 29)),
        ("0 0 29 2 *", "Europe/Berlin", U(2023, 1, 1), L("Europe/Berlin", 2024, 2, 29)),
        ("monthly", "UTC", U(2024, 1, 31, 12), U(2024, 2, 1)),
    ],
)
def test_next_run_table(cron: str, tz: str, after: datetime, expected: datetime) -> None:
    # Given an expression, a zone and a time / When next_run / Then the first slot strictly after
    result = next_run(cron, after, tz)
    assert result == expected
    assert result.tzinfo == UTC


def test_next_run_is_strictly_after_a_slot() -> None:
    assert next_run("*/5 * * * *", U(2024, 5, 1, 10, 5), "UTC") == U(2024, 5, 1, 10, 10)


def test_next_run_accepts_any_aware_input_zone() -> None:
    after = L("Asia/Kolkata", 2024, 5, 1, 5, 29)  # = 23:59 UTC the day before
    assert next_run("daily", after, "UTC") == U(2024, 5, 1)


def test_naive_times_and_unknown_zones_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="aware"):
        next_run("daily", datetime(2024, 1, 1), "UTC")  # noqa: DTZ001 - the point of the test
    with pytest.raises(InvalidArgument, match="aware"):
        due_time("daily", U(2024, 1, 1), datetime(2024, 1, 2), "UTC")  # noqa: DTZ001
    with pytest.raises(InvalidArgument, match="Mars/Olympus"):
        next_run("daily", U(2024, 1, 1), "Mars/Olympus")


# -- DST: spring forward -----------------------------------------------------------

BERLIN, NEW_YORK = "Europe/Berlin", "America/New_York"


@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        # Berlin 2024-03-31: 02:00 CET -> 03:00 CEST (01:00 UTC); 02:30 does not exist
        ("30 2 * * *", BERLIN, U(2024, 3, 30, 12), U(2024, 3, 31, 1, 0)),       # fires at 03:00 CEST
        ("30 2 * * *", BERLIN, U(2024, 3, 31, 1, 0), U(2024, 4, 1, 0, 30)),    # then back to 02:30 CEST
        ("0 0 * * *", BERLIN, U(2024, 3, 30, 12), U(2024, 3, 30, 23, 0)),      # midnight unaffected
        ("0 0 * * *", BERLIN, U(2024, 3, 30, 23, 0), U(2024, 3, 31, 22, 0)),
        ("0 * * * *", BERLIN, U(2024, 3, 31, 0, 0), U(2024, 3, 31, 1, 0)),     # 02:00 == 03:00 CEST
        ("0 * * * *", BERLIN, U(2024, 3, 31, 1, 0), U(2024, 3, 31, 2, 0)),     # 04:00 CEST, no double
        ("*/15 * * * *", BERLIN, U(2024, 3, 31, 0, 45), U(2024, 3, 31, 1, 0)),  # whole gap -> one run
        ("*/15 * * * *", BERLIN, U(2024, 3, 31, 1, 0), U(2024, 3, 31, 1, 15)),
        # New York 2024-03-10: 02:00 EST -> 03:00 EDT (07:00 UTC)
        ("30 2 * * *", NEW_YORK, U(2024, 3, 9, 12), U(2024, 3, 10, 7, 0)),
        ("30 2 * * *", NEW_YORK, U(2024, 3, 10, 7, 0), U(2024, 3, 11, 6, 30)),
        ("0 0 * * *", NEW_YORK, U(2024, 3, 9, 12), U(2024, 3, 10, 5, 0)),
        ("0 0 * * *", NEW_YORK, U(2024, 3, 10, 5, 0), U(2024, 3, 11, 4, 0)),
        ("0 * * * *", NEW_YORK, U(2024, 3, 10, 6, 0), U(2024, 3, 10, 7, 0)),
        ("0 * * * *", NEW_YORK, U(2024, 3, 10, 7, 0), U(2024, 3, 10, 8, 0)),
    ],
)
def test_spring_forward_gap_fires_once_at_the_gap_end(cron: str, tz: str, after: datetime, expected: datetime) -> None:
    assert next_run(cron, after, tz) == expected


@pytest.mark.parametrize(
    ("tz", "wall", "expected"),
    [
        ("Europe/Berlin", datetime(2024, 3, 31, 2, 30), U(2024, 3, 31, 1, 0)),      # gap -> 03:00 CEST
        ("Europe/Berlin", datetime(2024, 3, 31, 3, 0), U(2024, 3, 31, 1, 0)),       # the gap's end itself
        ("Europe/Berlin", datetime(2024, 10, 27, 2, 30), U(2024, 10, 27, 0, 30)),   # repeat -> first (CEST)
        ("America/New_York", datetime(2024, 3, 10, 2, 59), U(2024, 3, 10, 7, 0)),
        ("America/New_York", datetime(2024, 11, 3, 1, 0), U(2024, 11, 3, 5, 0)),
        ("Australia/Lord_Howe", datetime(2024, 10, 6, 2, 15), U(2024, 10, 5, 15, 30)),  # 30-minute gap
        ("Australia/Lord_Howe", datetime(2024, 4, 7, 1, 45), U(2024, 4, 6, 14, 45)),    # 30-minute repeat
        ("Pacific/Apia", datetime(2011, 12, 30, 9, 0), U(2011, 12, 30, 10, 0)),     # a skipped day
        ("Asia/Kolkata", datetime(2024, 3, 31, 2, 30), U(2024, 3, 30, 21, 0)),      # no DST at all
    ],
)
def test_slot_instant_states_the_dst_rule(tz: str, wall: datetime, expected: datetime) -> None:
    # Given a wall-clock slot / When turned into an instant / Then the DST rule's instant
    assert slot_instant(wall, ZoneInfo(tz)) == expected


# -- DST: fall back ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        # Berlin 2024-10-27: 03:00 CEST -> 02:00 CET (01:00 UTC); 02:00-02:59 happen twice
        ("30 2 * * *", BERLIN, U(2024, 10, 26, 12), U(2024, 10, 27, 0, 30)),    # first 02:30 (CEST)
        ("30 2 * * *", BERLIN, U(2024, 10, 27, 0, 30), U(2024, 10, 28, 1, 30)),  # not the repeat
        ("30 2 * * *", BERLIN, U(2024, 10, 27, 1, 10), U(2024, 10, 28, 1, 30)),  # from inside the repeat
        ("0 0 * * *", BERLIN, U(2024, 10, 26, 12), U(2024, 10, 26, 22, 0)),
        ("0 0 * * *", BERLIN, U(2024, 10, 26, 22, 0), U(2024, 10, 27, 23, 0)),
        ("0 * * * *", BERLIN, U(2024, 10, 26, 23, 0), U(2024, 10, 27, 0, 0)),   # 02:00 CEST
        ("0 * * * *", BERLIN, U(2024, 10, 27, 0, 0), U(2024, 10, 27, 2, 0)),    # 03:00 CET, repeat skipped
        ("0 * * * *", BERLIN, U(2024, 10, 27, 1, 30), U(2024, 10, 27, 2, 0)),
        # New York 2024-11-03: 02:00 EDT -> 01:00 EST (06:00 UTC); 01:00-01:59 twice
        ("30 1 * * *", NEW_YORK, U(2024, 11, 2, 12), U(2024, 11, 3, 5, 30)),    # first 01:30 (EDT)
        ("30 1 * * *", NEW_YORK, U(2024, 11, 3, 5, 30), U(2024, 11, 4, 6, 30)),
        ("30 2 * * *", NEW_YORK, U(2024, 11, 2, 12), U(2024, 11, 3, 7, 30)),
        ("0 0 * * *", NEW_YORK, U(2024, 11, 3, 4, 0), U(2024, 11, 4, 5, 0)),
        ("0 * * * *", NEW_YORK, U(2024, 11, 3, 5, 0), U(2024, 11, 3, 7, 0)),    # 01:00 EDT -> 02:00 EST
    ],
)
def test_fall_back_repeat_fires_once_at_the_first_occurrence(cron: str, tz: str, after: datetime, expected: datetime) -> None:
    assert next_run(cron, after, tz) == expected


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK])
@pytest.mark.parametrize("cron", ["30 2 * * *", "0 0 * * *", "30 1 * * *"])
@pytest.mark.parametrize("month", [3, 10, 11])
def test_daily_fires_once_per_local_date_across_dst(tz: str, cron: str, month: int) -> None:
    # Given a daily cron in a DST month / When iterating next_run / Then one run per local date
    zone = ZoneInfo(tz)
    t = U(2024, month, 1)
    dates = []
    while t < U(2024, month, 28):
        t = next_run(cron, t, tz)
        dates.append(t.astimezone(zone).date())
    assert len(dates) == len(set(dates))
    assert dates == sorted(dates)
    assert all((b - a).days == 1 for a, b in zip(dates, dates[1:]))


@pytest.mark.parametrize(
    ("tz", "day", "runs"),
    [(BERLIN, (2024, 3, 31), 23), (BERLIN, (2024, 10, 27), 24), (NEW_YORK, (2024, 3, 10), 23),
     (NEW_YORK, (2024, 11, 3), 24), ("UTC", (2024, 3, 31), 24), ("Asia/Kolkata", (2024, 3, 31), 24)],
)
def test_hourly_runs_per_local_day(tz: str, day: tuple[int, int, int], runs: int) -> None:
    # Given an hourly event / When counting runs on one local date / Then 23 on spring-forward, 24 otherwise
    zone = ZoneInfo(tz)
    start = datetime(*day, tzinfo=zone)
    t, seen = start - timedelta(seconds=1), []
    while True:
        t = next_run("hourly", t, tz)
        if t.astimezone(zone).date() != start.date():
            break
        seen.append(t)
    assert len(seen) == runs == len(set(seen))


# -- due_time and downtime ---------------------------------------------------------

@pytest.mark.parametrize(
    ("cron", "tz", "last", "now", "expected"),
    [
        ("hourly", "UTC", U(2024, 5, 1, 10, 0), U(2024, 5, 1, 10, 59), None),
        ("hourly", "UTC", U(2024, 5, 1, 10, 0), U(2024, 5, 1, 11, 0), U(2024, 5, 1, 11, 0)),  # at the slot
        ("hourly", "UTC", U(2024, 5, 1, 10, 0), U(2024, 5, 1, 11, 0, 30), U(2024, 5, 1, 11, 0)),
        # three days down: one run, for the latest slot
        ("hourly", "UTC", U(2024, 5, 1, 10, 0), U(2024, 5, 4, 7, 42), U(2024, 5, 4, 7, 0)),
        ("daily", "UTC", U(2024, 5, 1, 0, 0), U(2024, 5, 9, 13, 0), U(2024, 5, 9, 0, 0)),
        ("*/5 * * * *", "UTC", U(2024, 1, 1), U(2024, 12, 31, 23, 59), U(2024, 12, 31, 23, 55)),
        ("daily", "Asia/Kolkata", U(2024, 5, 1, 18, 30), U(2024, 5, 2, 18, 29), None),
        ("daily", "Asia/Kolkata", U(2024, 5, 1, 18, 30), U(2024, 5, 2, 18, 30), U(2024, 5, 2, 18, 30)),
        ("weekly", "America/New_York", U(2024, 5, 5, 4), U(2024, 5, 20), U(2024, 5, 19, 4)),
        ("yearly", "UTC", U(2023, 1, 1), U(2026, 6, 1), U(2026, 1, 1)),
        # registration just now: nothing due yet; last after now: nothing
        ("hourly", "UTC", U(2024, 5, 1, 10, 30), U(2024, 5, 1, 10, 30), None),
        ("hourly", "UTC", U(2024, 5, 1, 12, 0), U(2024, 5, 1, 11, 0), None),
        # DST: the gap's runs land on 03:00 CEST; the repeat hour is not a new slot
        ("30 2 * * *", BERLIN, U(2024, 3, 30, 1), U(2024, 3, 31, 1, 5), U(2024, 3, 31, 1, 0)),
        ("30 2 * * *", BERLIN, U(2024, 10, 27, 0, 30), U(2024, 10, 27, 1, 45), None),  # 02:45 CET again
        ("0 * * * *", BERLIN, U(2024, 10, 27, 0, 0), U(2024, 10, 27, 1, 59), None),
        ("*/5 * * * *", BERLIN, U(2024, 10, 26, 22), U(2024, 10, 27, 1, 40), U(2024, 10, 27, 0, 55)),
        ("0 * * * *", NEW_YORK, U(2024, 11, 3, 5, 0), U(2024, 11, 3, 6, 30), None),
    ],
)
def test_due_time_table(cron: str, tz: str, last: datetime, now: datetime, expected: datetime | None) -> None:
    # Given the last run and now / When due_time / Then the latest slot in (last, now] or None
    assert due_time(cron, last, now, tz) == expected


def test_a_run_at_the_due_slot_is_not_due_again_until_the_next_slot() -> None:
    # Given a run recorded at its due slot / When asked again before the next slot / Then not due
    slot = due_time("hourly", U(2024, 5, 1, 9, 0), U(2024, 5, 1, 10, 0, 5), "UTC")
    assert slot == U(2024, 5, 1, 10, 0)
    assert due_time("hourly", slot, U(2024, 5, 1, 10, 59, 59), "UTC") is None
    assert due_time("hourly", slot, U(2024, 5, 1, 11, 0), "UTC") == U(2024, 5, 1, 11, 0)
