"""Properties of next_run and due_time that hold for every expression, zone and time."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from bgcore.scheduler.due import due_time, next_run

UTC = timezone.utc
ZONES = [
    "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe",
    "America/Santiago", "Pacific/Chatham", "Europe/London", "America/St_Johns",
]
CRONS = [
    "* * * * *", "*/5 * * * *", "0 * * * *", "30 * * * *", "0 0 * * *", "30 2 * * *", "30 1 * * *",
    "59 23 * * *", "15 3 * * 1-5", "0 0 * * 0", "0 0 1 * *", "0 0 L * *", "0 12 29 2 *", "annual",
    "*/20 2 * * *", "0 2,3 * * *",
]

instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
)
# Instants near the 2024 DST transitions of the northern and southern hemisphere.
near_dst = st.sampled_from(
    [datetime(2024, 3, 10, 6, tzinfo=UTC), datetime(2024, 3, 31, 0, tzinfo=UTC),
     datetime(2024, 10, 27, 0, tzinfo=UTC), datetime(2024, 11, 3, 5, tzinfo=UTC),
     datetime(2024, 4, 6, 2, tzinfo=UTC), datetime(2024, 9, 8, 3, tzinfo=UTC),
     datetime(2024, 4, 6, 14, tzinfo=UTC), datetime(2024, 10, 5, 15, tzinfo=UTC)]
).flatmap(lambda base: st.integers(-3 * 3600, 3 * 3600).map(lambda s: base + timedelta(seconds=s)))
times = st.one_of(instants, near_dst)


@settings(max_examples=300, deadline=None)
@given(cron=st.sampled_from(CRONS), tz=st.sampled_from(ZONES), after=times)
def test_next_run_is_strictly_after_and_aware_utc(cron: str, tz: str, after: datetime) -> None:
    result = next_run(cron, after, tz)
    assert result > after
    assert result.utcoffset() == timedelta(0)


@settings(max_examples=300, deadline=None)
@given(cron=st.sampled_from(CRONS), tz=st.sampled_from(ZONES), last=times, gap=st.integers(0, 40 * 86400))
def test_due_time_is_in_last_now_and_agrees_with_next_run(cron: str, tz: str, last: datetime, gap: int) -> None:
    now = last + timedelta(seconds=gap)
    due = due_time(cron, last, now, tz)
    first = next_run(cron, last, tz)
    if due is None:
        assert first > now
    else:
        assert last < due <= now
        assert first <= due
        # coalescing: due is the latest slot, nothing else is due after it
        assert next_run(cron, due, tz) > now
        assert due_time(cron, due, now, tz) is None


@settings(max_examples=200, deadline=None)
@given(cron=st.sampled_from(CRONS), tz=st.sampled_from(ZONES), start=times)
def test_successive_runs_never_repeat_an_instant_or_a_wall_slot(cron: str, tz: str, start: datetime) -> None:
    # Given a run / When stepping next_run 60 times / Then instants strictly increase and
    # no local wall-clock time fires twice (a fall-back repeat fires once)
    zone = ZoneInfo(tz)
    t, walls = start, []
    for _ in range(60):
        nxt = next_run(cron, t, tz)
        assert nxt > t
        walls.append(nxt.astimezone(zone).replace(tzinfo=None, fold=0))
        t = nxt
    assert len(walls) == len(set(walls))


@settings(max_examples=25, deadline=None)
@given(
    tz=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    minute=st.sampled_from([0, 15, 30, 59]),
    year=st.sampled_from([2023, 2024]),
)
def test_a_daily_cron_fires_exactly_once_on_every_local_date_of_a_year(tz: str, hour: int, minute: int, year: int) -> None:
    zone = ZoneInfo(tz)
    cron = f"{minute} {hour} * * *"
    t = datetime(year, 1, 1, tzinfo=zone) - timedelta(seconds=1)
    dates: list[date] = []
    while True:
        t = next_run(cron, t, tz)
        local = t.astimezone(zone).date()
        if local.year != year:
            break
        dates.append(local)
    days = (date(year + 1, 1, 1) - date(year, 1, 1)).days
    assert len(dates) == days
    assert len(set(dates)) == days
