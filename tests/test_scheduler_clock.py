"""The daemon's ``schedule`` loop is timed by a monotonic clock: immune to the host's zone and to clock jumps."""

from __future__ import annotations

import datetime as dt
import time
import types
from collections.abc import Callable, Iterator

import pytest
import schedule

from bgcore.scheduler.clock import MonotonicScheduler
from bgcore.scheduler.daemon import SchedulerDaemon
from tests.conftest import BenchDir

UTC = dt.timezone.utc
FALL_BACK = dt.datetime(2026, 10, 25, 1, 0, tzinfo=UTC).timestamp()  # Berlin 03:00 CEST -> 02:00 CET
SPRING_FORWARD = dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()  # Berlin 02:00 CET -> 03:00 CEST


class FakeClocks:
    """A fake host: true elapsed time (``monotonic``) and a wall clock that may be set by an operator."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.elapsed = 0.0
        self.wall_offset = 0.0

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    def wall(self) -> float:
        return self.start + self.elapsed + self.wall_offset


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's zone is Europe/Berlin for this test."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fake_local_now(monkeypatch: pytest.MonkeyPatch, clocks: FakeClocks) -> None:
    """What ``schedule`` reads as ``datetime.datetime.now()``: the fake wall clock in the host's local zone."""

    class FakeDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:  # type: ignore[override]
            return dt.datetime.fromtimestamp(clocks.wall(), tz)

    shim = types.SimpleNamespace(**{name: getattr(dt, name) for name in dir(dt) if not name.startswith("__")})
    shim.datetime = FakeDatetime
    monkeypatch.setattr(schedule, "datetime", shim)


def run_for(scheduler: schedule.Scheduler, clocks: FakeClocks, seconds: float,
            at: Callable[[float], None] = lambda elapsed: None) -> list[float]:
    """Drive ``scheduler`` like the daemon's loop for ``seconds``; return the true times (UTC) of a 60 s job's runs."""
    runs: list[float] = []
    scheduler.every(60).seconds.do(lambda: runs.append(clocks.start + clocks.elapsed))
    while clocks.elapsed < seconds:
        scheduler.run_pending()
        clocks.elapsed += 0.5
        at(clocks.elapsed)
    return runs


def gaps(runs: list[float]) -> list[float]:
    return [b - a for a, b in zip(runs, runs[1:])]


@pytest.mark.parametrize("change", [FALL_BACK, SPRING_FORWARD], ids=["fall-back", "spring-forward"])
def test_every_60_seconds_runs_every_60_seconds_across_berlin_dst_changes(
    berlin: None, monkeypatch: pytest.MonkeyPatch, change: float
) -> None:
    # Given a host in Europe/Berlin whose clock crosses a DST change half an hour into two hours
    clocks = FakeClocks(change - 1800)
    fake_local_now(monkeypatch, clocks)
    # When the daemon's scheduler runs a 60 s job for those two hours
    runs = run_for(MonotonicScheduler(clocks.monotonic), clocks, 7200)
    # Then it ran every 60 s throughout: 119 runs, 60 s apart, none longer
    assert len(runs) == 119
    assert max(gaps(runs)) == pytest.approx(60, abs=0.5)


def test_the_plain_schedule_package_stalls_an_hour_at_the_fall_back(berlin: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the same fake host (this shows the harness reproduces the bug the clock fixes)
    clocks = FakeClocks(FALL_BACK - 1800)
    fake_local_now(monkeypatch, clocks)
    # When plain schedule.Scheduler (naive local now) runs the 60 s job across the fall-back
    runs = run_for(schedule.Scheduler(), clocks, 7200)
    # Then it waits an hour when local time repeats
    assert max(gaps(runs)) >= 3600
    assert len(runs) < 70


@pytest.mark.parametrize("jump", [-3600.0, 3600.0, -86400.0], ids=["back-1h", "forward-1h", "back-1d"])
def test_a_wall_clock_jump_does_not_change_the_cadence(monkeypatch: pytest.MonkeyPatch, jump: float) -> None:
    # Given a host whose wall clock is set back or forward by an operator (or NTP) halfway through
    clocks = FakeClocks(dt.datetime(2026, 6, 1, tzinfo=UTC).timestamp())
    fake_local_now(monkeypatch, clocks)

    def set_clock(elapsed: float) -> None:
        if elapsed == 1800:
            clocks.wall_offset = jump

    # When the daemon's scheduler runs a 60 s job for an hour
    runs = run_for(MonotonicScheduler(clocks.monotonic), clocks, 3600, at=set_clock)
    # Then the job kept running every 60 s of true time
    assert len(runs) == 59
    assert max(gaps(runs)) == pytest.approx(60, abs=0.5)


def test_idle_seconds_counts_on_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = FakeClocks(FALL_BACK)
    fake_local_now(monkeypatch, clocks)
    scheduler = MonotonicScheduler(clocks.monotonic)
    scheduler.every(10).seconds.do(lambda: None)
    clocks.wall_offset = -3600  # a wall-clock jump does not move the next run
    clocks.elapsed = 4
    assert scheduler.idle_seconds == pytest.approx(6)


def test_wall_clock_features_of_schedule_are_refused() -> None:
    scheduler = MonotonicScheduler(lambda: 0.0)
    with pytest.raises(schedule.ScheduleValueError, match="wall clock"):
        scheduler.every().day.at("10:00").do(lambda: None)


def test_the_daemon_times_its_steps_on_the_injected_monotonic_clock(
    bench_dir: BenchDir, berlin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a daemon on a Berlin host, with a fake monotonic clock
    clocks = FakeClocks(FALL_BACK - 1800)
    fake_local_now(monkeypatch, clocks)
    daemon = SchedulerDaemon(bench_dir.bench(), monotonic=clocks.monotonic)
    # When its loop runs its every-60-s step across the fall-back
    runs: list[float] = []
    daemon._every(60).do(lambda: runs.append(clocks.elapsed))
    while clocks.elapsed < 7200:
        daemon.scheduler.run_pending()
        clocks.elapsed += 0.5
    # Then the step ran every 60 s
    assert len(runs) == 119 and max(gaps(runs)) == pytest.approx(60, abs=0.5)
