"""The daemon's in-memory timetable: every active site's events and their next runs.

Pure bookkeeping, no I/O: the daemon loads a :class:`SiteState` from the
registry once and replaces it only when the site changes. Cron events sit in
one heap per tick interval keyed by their next run, so a tick pops only what
is due: its cost grows with the number of due events, not with the number of
sites or events. ``all`` events are due on every tick by definition.

Times are epoch seconds (UTC) inside; the cron arithmetic is the scheduler
core's (:mod:`bgcore.scheduler.due`) on aware datetimes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from bgcore.scheduler.due import due_time, next_run
from bgcore.scheduler.occurrence import Occurrence

UTC = timezone.utc


@dataclass(frozen=True)
class TimedEvent:
    """What the timetable needs of one registered event."""

    event_id: str
    method: str
    queue: str
    cron: str | None  # None: an ``all`` event, due on every tick
    timeout: int | None = None
    app: str = ""
    frequency: str = ""


@dataclass
class SiteState:
    """One site as the daemon holds it between reloads.

    ``last`` maps event id -> epoch seconds of its last occurrence (or its
    registration); ``stamp`` is what the site looked like when loaded
    (config mtime, registry version), compared on rescans; ``fingerprints``
    are the hooks fingerprints stored by the site's last migrate.
    """

    name: str
    tz: str
    interval: float
    events: dict[str, TimedEvent]
    last: dict[str, float]
    stamp: tuple[object, ...] = ()
    fingerprints: dict[str, str] = field(default_factory=dict)
    apps: tuple[str, ...] = ()
    next_at: dict[str, float] = field(default_factory=dict)
    every_tick: list[str] = field(default_factory=list)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Timetable:
    """Every active site's events, with one heap of next runs per tick interval."""

    def __init__(self) -> None:
        self.sites: dict[str, SiteState] = {}
        self._heaps: dict[float, list[tuple[float, str, str]]] = {}
        self._every_tick: dict[float, dict[str, SiteState]] = {}
        self._next_cache: dict[tuple[str, str, float], float] = {}

    # -- sites ----------------------------------------------------------------
    def intervals(self) -> set[float]:
        """The tick intervals some active site uses."""
        return {s.interval for s in self.sites.values()}

    def put_site(self, state: SiteState) -> None:
        """Add ``state`` (or replace the site's previous state) and schedule its events."""
        self.drop_site(state.name)
        self.sites[state.name] = state
        heap = self._heaps.setdefault(state.interval, [])
        state.next_at.clear()
        state.every_tick = []
        for event in state.events.values():
            if event.cron is None:
                state.every_tick.append(event.event_id)
                continue
            last = state.last.get(event.event_id, 0.0)
            at = self._next(event.cron, state.tz, last)
            state.next_at[event.event_id] = at
            heapq.heappush(heap, (at, state.name, event.event_id))
        if state.every_tick:
            self._every_tick.setdefault(state.interval, {})[state.name] = state

    def compact(self) -> None:
        """Rebuild the heaps from the live next runs when stale entries pile up (after many reloads)."""
        live = sum(len(s.next_at) for s in self.sites.values())
        if sum(len(h) for h in self._heaps.values()) <= 2 * live + 1024:
            return
        heaps: dict[float, list[tuple[float, str, str]]] = {}
        for state in self.sites.values():
            heap = heaps.setdefault(state.interval, [])
            heap.extend((at, state.name, event_id) for event_id, at in state.next_at.items())
        for heap in heaps.values():
            heapq.heapify(heap)
        self._heaps = heaps

    def drop_site(self, name: str) -> None:
        """Forget site ``name``; its heap entries become stale and are skipped when popped."""
        state = self.sites.pop(name, None)
        if state is not None:
            self._every_tick.get(state.interval, {}).pop(name, None)

    def _next(self, cron: str, tz: str, after: float) -> float:
        # Many sites share cron, zone and last slot: memoise (bounded; cleared when it grows).
        key = (cron, tz, after)
        found = self._next_cache.get(key)
        if found is None:
            if len(self._next_cache) > 100_000:
                self._next_cache.clear()
            found = self._next_cache[key] = next_run(cron, _dt(after), tz).timestamp()
        return found

    # -- ticks ----------------------------------------------------------------
    def due(self, interval: float, now: datetime) -> list[Occurrence]:
        """The occurrences due at ``now`` among sites ticking every ``interval`` seconds.

        Popping a cron event schedules its next run after ``now``; call
        :meth:`record` for each occurrence enqueued and :meth:`retry` for one
        that must wait (its last run still going).
        """
        ts = now.timestamp()
        found: list[Occurrence] = []
        heap = self._heaps.get(interval, [])
        due_cache: dict[tuple[str, str, float], float | None] = {}
        while heap and heap[0][0] <= ts:
            at, site, event_id = heapq.heappop(heap)
            state = self.sites.get(site)
            if state is None or state.interval != interval or state.next_at.get(event_id) != at:
                continue  # stale entry: site dropped/reloaded or event rescheduled
            event = state.events[event_id]
            assert event.cron is not None
            last = state.last.get(event_id, 0.0)
            key = (event.cron, state.tz, last)
            if key not in due_cache:
                slot = due_time(event.cron, _dt(last), now, state.tz)
                due_cache[key] = slot.timestamp() if slot is not None else None
            slot_ts = due_cache[key]
            self._schedule(state, event_id, self._next(event.cron, state.tz, ts), heap)
            if slot_ts is not None:
                found.append(_occurrence(state, event, slot_ts))
        bucket = math.floor(ts / interval) * interval
        for state in self._every_tick.get(interval, {}).values():
            for event_id in state.every_tick:
                if state.last.get(event_id, 0.0) < bucket:
                    found.append(_occurrence(state, state.events[event_id], bucket))
        return found

    def _schedule(self, state: SiteState, event_id: str, at: float, heap: list[tuple[float, str, str]]) -> None:
        state.next_at[event_id] = at
        heapq.heappush(heap, (at, state.name, event_id))

    def record(self, occurrences: Iterable[Occurrence]) -> None:
        """Remember that these occurrences were enqueued (their due time is the new last run)."""
        for occ in occurrences:
            state = self.sites.get(occ.site)
            if state is not None and occ.due > state.last.get(occ.event_id, 0.0):
                state.last[occ.event_id] = occ.due

    def retry(self, occurrences: Iterable[Occurrence], at: datetime) -> None:
        """Look at these (not yet enqueued) occurrences' events again at ``at``."""
        ts = at.timestamp()
        for occ in occurrences:
            state = self.sites.get(occ.site)
            event = state.events.get(occ.event_id) if state is not None else None
            if state is None or event is None or event.cron is None:
                continue  # ``all`` events are looked at on every tick anyway
            self._schedule(state, occ.event_id, ts, self._heaps.setdefault(state.interval, []))

    def next_run_of(self, site: str, event_id: str) -> float | None:
        """When the event is next looked at (epoch seconds), if the site is active."""
        state = self.sites.get(site)
        return state.next_at.get(event_id) if state is not None else None


def _occurrence(state: SiteState, event: TimedEvent, due: float) -> Occurrence:
    return Occurrence(site=state.name, event_id=event.event_id, method=event.method, queue=event.queue,
                      due=due, timeout=event.timeout)
