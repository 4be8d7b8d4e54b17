"""``bgcore schedule``: one scheduler daemon for every site of a bench.

The daemon keeps a :class:`~bgcore.scheduler.timetable.Timetable` of every
active site, loaded once per site and reloaded only when the site changes
(its ``site_config.json``, the bench config, or the registry version that
``bgcore migrate`` bumps), found by a periodic rescan of ``sites/``. The
``schedule`` package drives three kinds of jobs: one tick per distinct
``scheduler_tick_interval``, the lease renewal, and the rescan, timed by a
monotonic clock (:mod:`bgcore.scheduler.clock`), so neither the host's time
zone nor a wall-clock jump changes how often they run.

Only the lease holder ticks (see :mod:`bgcore.scheduler.lease`); a standby
keeps its timetable warm and takes over when the lease lapses. A tick pops
the due occurrences, drops those of sites a switch stops, holds back events
whose last run is still queued or running, and claims and enqueues the rest
atomically (:mod:`bgcore.scheduler.occurrence`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import schedule
from sqlalchemy.exc import SQLAlchemyError

from bgcore import clock, keys, retention
from bgcore.bench import Bench

from bgcore.engine.outage import OUTAGE_ERRORS, Outage
from bgcore.errors import BgcoreError, ConfigError
from bgcore.scheduler import presence
from bgcore.scheduler.clock import Monotonic, MonotonicScheduler
from bgcore.scheduler.lease import Lease, current_holder, new_holder
from bgcore.scheduler.loader import LoadResult, RegistrySnapshot, common_stamp, last_runs, load_site, site_stamp
from bgcore.scheduler.occurrence import Occurrence, enqueue_occurrences
from bgcore.scheduler.overlap import blocked_events
from bgcore.scheduler.switches import blocking_switch
from bgcore.scheduler.timetable import Timetable
from bgcore.scheduler.watch import HooksWatcher, current_fingerprints, find_stale

logger = logging.getLogger(__name__)

DEFAULT_RESCAN_SECONDS = 10.0
# The leader prunes old failed jobs and job-log rows this often, a few sites per step.
RETENTION_SECONDS = 600.0
RETENTION_SITES_PER_STEP = 20
# A site that failed to load (database down, bad config) is tried again this often.
RETRY_FAILED_SECONDS = 60.0
Clock = clock.Clock


utcnow = clock.utcnow  # the daemon's clock seam (tests pass their own ``clock=``)


def _positive(bench: Bench, key: str, default: float) -> float:
    """A bench setting the daemon can do without: a wrong value is logged and ``default`` used."""
    try:
        value: float = bench.settings.get(key)
    except ConfigError as exc:
        logger.error("%s; using %s", exc, default)
        return default
    return value


class SchedulerDaemon:
    """The scheduler of one bench in this process (leader or standby)."""

    def __init__(self, bench: Bench, *, clock: Clock = utcnow, monotonic: Monotonic = time.monotonic) -> None:
        self.bench = bench
        bench.activate_import_path()
        self.clock = clock
        self.redis = bench.redis()
        self.lease = Lease(self.redis, bench.bench_id, new_holder(), bench.settings.get("scheduler_lease_seconds"))
        self.outage = Outage(f"scheduler bench={bench.bench_id}")
        self.rescan_seconds = _positive(bench, "scheduler_rescan_seconds", DEFAULT_RESCAN_SECONDS)
        self.timetable = Timetable()
        self.stamps: dict[str, tuple[object, ...]] = {}
        self.leading = False
        self._renewed_at = 0.0  # monotonic time of the last successful acquire/renew
        # ``clock`` says what is due (aware UTC); ``monotonic`` times the loop's steps.
        self.scheduler = MonotonicScheduler(monotonic)
        self.watcher = HooksWatcher()
        self._tick_jobs: dict[float, schedule.Job] = {}
        self._snapshots: dict[str, RegistrySnapshot] = {}
        self._hooks_paths: dict[str, Path] = {}
        self._apps_seen: set[str] = set()
        self._warned: set[tuple[str, str]] = set()
        self._failed: dict[str, float] = {}  # site -> monotonic time of its last failed load
        self.errors: dict[str, str] = {}  # site -> why it is not scheduled (published for ``scheduler status``)
        self.last_tick: datetime | None = None  # when this daemon last ticked as leader (for ``bgcore doctor``)
        self._standby_under: str | None = ""  # the leader last logged while standing by ("" = not logged yet)
        self._prune_cursor = 0  # where the next retention step starts in the list of sites
        self._held_back: set[tuple[str, str]] = set()  # (site, event) logged as "last run still queued"

    # -- sites ------------------------------------------------------------------
    def rescan(self) -> None:
        """Pick up new, changed and deleted sites (one ``stat`` per site, one MGET of versions)."""
        names = self.bench.site_names()
        for gone in set(self.stamps) - set(names):
            self.timetable.drop_site(gone)
            del self.stamps[gone]
            self._snapshots.pop(gone, None)
            self._failed.pop(gone, None)
            self.errors.pop(gone, None)
            logger.info("site removed from the scheduler site=%s", gone)
        versions = self.redis.mget([keys.registry_version(self.bench.bench_id, n) for n in names]) if names else []
        common = common_stamp(self.bench)
        retry_before = time.monotonic() - RETRY_FAILED_SECONDS
        loaded = 0
        for name, version in zip(names, versions):
            failed_at = self._failed.get(name)
            if (site_stamp(self.bench, name, version, common) != self.stamps.get(name)
                    or (failed_at is not None and failed_at < retry_before)):
                self._load(name, version)
                loaded += 1
        if loaded:
            logger.info("rescan: %d site(s) (re)loaded; %d of %d sites scheduled", loaded,
                        len(self.timetable.sites), len(names))
        self.timetable.compact()
        self._sync_tick_jobs()
        self.publish_errors()
        self._check_hooks(set(self._hooks_paths.values()))

    def reload(self, name: str) -> None:
        """Load site ``name`` again now (after a switch changed)."""
        version = self.redis.get(keys.registry_version(self.bench.bench_id, name))
        self._load(name, version)
        self.publish_errors()

    def _load(self, name: str, version: Any) -> None:
        """Load one site; whatever goes wrong with it stops that site only, never the rescan of the others."""
        try:
            self._apply(load_site(self.bench, name, version, self._snapshots.get(name)))
        except Exception as exc:  # a bug or an unforeseen bad value: this site waits, the others go on
            logger.exception("site=%s not scheduled: loading it failed", name)
            self.timetable.drop_site(name)
            self.stamps[name] = site_stamp(self.bench, name, version)
            self._failed[name] = time.monotonic()
            self.errors[name] = f"loading failed ({type(exc).__name__}: {exc})"

    def publish_errors(self) -> None:
        """Make the Redis hash of site load errors match :attr:`errors` (stale entries removed).

        One HGETALL per call, plus writes only for what changed.
        """
        key = keys.scheduler_site_errors(self.bench.bench_id)
        published = {k.decode(): v.decode(errors="replace") for k, v in self.redis.hgetall(key).items()}
        stale = [site for site in published if site not in self.errors]
        changed = {site: error for site, error in self.errors.items() if published.get(site) != error}
        if not stale and not changed:
            return
        with self.redis.pipeline() as pipe:
            if stale:
                pipe.hdel(key, *stale)
            if changed:
                pipe.hset(key, mapping=changed)
            pipe.execute()

    def _apply(self, result: LoadResult) -> None:
        previous = self.stamps.get(result.name)
        self.stamps[result.name] = result.stamp
        self._failed.pop(result.name, None)
        self.errors.pop(result.name, None)
        if result.snapshot is not None:
            self._snapshots[result.name] = result.snapshot
        else:
            self._snapshots.pop(result.name, None)
        if result.state is None:
            self.timetable.drop_site(result.name)
            if result.switch is not None:
                logger.info("site=%s scheduler stopped by %s", result.name, result.switch.value)
            else:
                self._failed[result.name] = time.monotonic()
                self.errors[result.name] = result.error or "not loaded"
                logger.warning("site=%s not scheduled (tried again in %ss or when it changes): %s",
                               result.name, int(RETRY_FAILED_SECONDS), result.error)
            return
        try:
            self.timetable.put_site(result.state)
        except BgcoreError as exc:  # e.g. a registry row with a cron croniter cannot iterate
            self.timetable.drop_site(result.name)
            self.errors[result.name] = str(exc)
            logger.error("site=%s not scheduled: %s", result.name, exc)
            return
        logger.log(logging.INFO if previous else logging.DEBUG, "site=%s %s: %d event(s), tick every %ss",
                   result.name, "reloaded" if previous else "loaded", len(result.state.events),
                   result.state.interval)
        new_apps = [a for a in result.state.apps if a not in self._apps_seen]
        if new_apps:
            self._apps_seen.update(new_apps)
            paths, _ = current_fingerprints(new_apps)
            self._hooks_paths.update({app: path.resolve() for app, path in paths.items()})
            try:
                self.watcher.watch(paths.values())
            except OSError as exc:
                logger.warning("cannot watch hooks files (%s); stale hooks are found on rescans only", exc)

    def _sync_tick_jobs(self) -> None:
        wanted = self.timetable.intervals()
        for interval in set(self._tick_jobs) - wanted:
            self.scheduler.cancel_job(self._tick_jobs.pop(interval))
        for interval in wanted - set(self._tick_jobs):
            self._tick_jobs[interval] = self._every(interval).do(self._guard, self.tick, interval)

    def _every(self, seconds: float) -> schedule.Job:
        # ``schedule`` types the interval as int but builds a timedelta from it, so
        # fractions of a second (a 2 s lease renewed every 0.67 s) work.
        return self.scheduler.every(seconds).seconds  # type: ignore[arg-type,no-any-return]

    # -- stale hooks ------------------------------------------------------------
    def _check_hooks(self, paths: set[Path]) -> None:
        apps = [app for app, path in self._hooks_paths.items() if path in paths]
        if not apps:
            return
        found_paths, prints = current_fingerprints(apps)
        stored = {s.name: s.fingerprints for s in self.timetable.sites.values()}
        installed = {s.name: s.apps for s in self.timetable.sites.values()}
        for stale in find_stale(found_paths, prints, stored, installed):
            mark = (stale.app, prints[stale.app] or "")
            if mark not in self._warned:
                self._warned.add(mark)
                logger.warning("stale hooks app=%s file=%s: %s", stale.app, stale.path, stale.message())

    # -- leadership -------------------------------------------------------------
    def lease_step(self) -> None:
        """Renew the lease (leader) or try to take it (standby)."""
        started = time.monotonic()
        held = self.lease.renew(started) if self.leading else self.lease.try_acquire(started)
        if held:
            self._renewed_at = started
        if held and not self.leading:
            self.leading = True
            logger.info("scheduler leading bench=%s holder=%s", self.bench.bench_id, self.lease.holder)
            self._refresh_last_runs()
            for interval in list(self._tick_jobs):
                self._guard(self.tick, interval)
        elif not held and self.leading:
            self.leading = False
            logger.warning("scheduler lost the lease bench=%s; standing by", self.bench.bench_id)
        if not held:
            self._log_standby()
        else:
            self._standby_under = ""
        presence.publish(self.redis, self.bench.bench_id, self.lease.holder, role="leader" if held else "standby",
                         now=self.clock(), last_tick=self.last_tick, lease_seconds=self.lease.seconds)

    def _log_standby(self) -> None:
        """Say once, and again when the leader changes, that this daemon stands by and who leads."""
        leader = current_holder(self.redis, self.bench.bench_id)
        if leader != self._standby_under:
            self._standby_under = leader
            logger.info("scheduler standby bench=%s holder=%s: %s", self.bench.bench_id, self.lease.holder,
                        f"leader is {leader}" if leader else "no leader right now; trying to take the lease")

    def _refresh_last_runs(self) -> None:
        """Take over the last runs another leader recorded while this daemon stood by."""
        sites = list(self.timetable.sites)
        for name, stored in last_runs(self.bench, sites).items():
            state = self.timetable.sites[name]
            changed = any(stored.get(e, 0.0) > state.last.get(e, 0.0) for e in state.events)
            if changed:
                state.last.update({e: ts for e, ts in stored.items() if e in state.events})
                self.timetable.put_site(state)

    # -- ticks ------------------------------------------------------------------
    def tick(self, interval: float, now: datetime | None = None) -> list[Occurrence]:
        """Enqueue what is due among sites ticking every ``interval`` s; return what was enqueued."""
        if not self.lease.valid():
            return []
        now = now or self.clock()
        self.last_tick = now
        self._check_hooks(self.watcher.changed())
        due = self.timetable.due(interval, now)
        if not due:
            return []
        try:
            return self.fire(due, now, interval)
        except Exception:
            # Redis went away mid-tick: look at these events again next tick (their last
            # run did not move, and claims keep whatever did go out from going out twice).
            self.timetable.retry(due, now + timedelta(seconds=interval))
            raise

    def fire(self, due: list[Occurrence], now: datetime, interval: float) -> list[Occurrence]:
        """Switch check, overlap check, then claim-and-enqueue for ``due``."""
        by_site: dict[str, list[Occurrence]] = defaultdict(list)
        for occ in due:
            by_site[occ.site].append(occ)
        runnable: dict[str, list[Occurrence]] = {}
        for site, items in by_site.items():
            try:
                switch = blocking_switch(self.bench.site_config(site))
            except BgcoreError as exc:
                logger.error("site=%s skipped this tick: %s", site, exc)
                continue
            if switch is not None:
                logger.info("site=%s stopped by %s; %d due event(s) not queued", site, switch.value, len(items))
                self.reload(site)
                continue
            runnable[site] = items
        blocked = blocked_events(self.bench, {s: [o.event_id for o in items] for s, items in runnable.items()},
                                 now=now)
        go = [o for items in runnable.values() for o in items if (o.site, o.event_id) not in blocked]
        wait = [o for items in runnable.values() for o in items if (o.site, o.event_id) in blocked]
        for occ in wait:  # said once per event until it runs again, not on every tick
            if (occ.site, occ.event_id) not in self._held_back:
                self._held_back.add((occ.site, occ.event_id))
                logger.info("site=%s event=%s method=%s: last run still queued or running; not queued again "
                            "until it ends (said once)", occ.site, occ.event_id, occ.method)
        self._held_back.difference_update((o.site, o.event_id) for o in go)
        self.timetable.retry(wait, now + timedelta(seconds=interval))
        report = enqueue_occurrences(self.bench, go, keep_going=self._keep_lease)
        self.timetable.retry(report.skipped, now + timedelta(seconds=interval))
        self.timetable.record(report.enqueued + report.already_claimed + [o for o, _ in report.failed])
        for occ in report.enqueued:
            logger.debug("enqueued site=%s job=%s event=%s method=%s", occ.site, occ.rq_job_id, occ.event_id,
                         occ.method)
        if report.enqueued or report.failed or report.skipped:
            logger.info("tick every %ss: %d enqueued, %d held back (still running), %d already claimed, "
                        "%d refused, %d left for the next tick", interval, len(report.enqueued), len(wait),
                        len(report.already_claimed), len(report.failed), len(report.skipped))
        return report.enqueued

    def _keep_lease(self) -> bool:
        """Between chunks of a long tick: renew the lease when due; False once it is lost."""
        moment = time.monotonic()
        if moment - self._renewed_at >= self.lease.renew_every:
            if not self.lease.renew(moment):
                self.leading = False
                logger.warning("scheduler lost the lease mid-tick bench=%s; standing by", self.bench.bench_id)
                return False
            self._renewed_at = moment
        return self.lease.valid(moment)

    # -- retention --------------------------------------------------------------
    def prune(self, now: datetime | None = None) -> int:
        """Leader only: drop failed jobs past ``failure_ttl`` and, for the next few sites, old job-log rows.

        Each call does small batches (see :mod:`bgcore.retention`); returns how much went.
        """
        if not self.leading or not self.lease.valid():
            return 0
        now = now or self.clock()
        removed = retention.prune_failed_jobs(self.bench, now)
        names = self.bench.site_names()
        if not names:
            return removed
        start = self._prune_cursor % len(names)
        chosen = (names[start:] + names[:start])[:RETENTION_SITES_PER_STEP]
        self._prune_cursor = start + len(chosen)
        for name in chosen:
            try:
                removed += retention.prune_job_log(self.bench, name, now)
            except (BgcoreError, SQLAlchemyError) as exc:  # one site's database must not stop the others
                logger.warning("job log not pruned site=%s: %s", name, exc)
        return removed

    # -- loop -------------------------------------------------------------------
    def _guard(self, step: Callable[..., Any], *args: Any) -> None:
        """Run one scheduled step; Redis or site trouble is logged, never fatal to the loop.

        A Redis outage is one line when it starts and one when it ends (bgcore.engine.outage),
        not a line per step: the steps keep being tried on their own schedule meanwhile.
        """
        try:
            step(*args)
        except OUTAGE_ERRORS as exc:
            self.outage.failed(exc)
            return
        except (redis.RedisError, BgcoreError) as exc:
            logger.error("scheduler step %s failed: %s", getattr(step, "__name__", step), exc)
        except Exception:
            logger.exception("scheduler step %s failed", getattr(step, "__name__", step))
        else:
            self.outage.recovered()

    def run(self, stop: threading.Event) -> None:
        """Serve the bench until ``stop`` is set; releases the lease on the way out."""
        logger.info("scheduler starting bench=%s holder=%s lease=%ss", self.bench.bench_id, self.lease.holder,
                    self.lease.seconds)
        self._guard(self.rescan)
        self._guard(self.lease_step)
        self._every(self.lease.renew_every).do(self._guard, self.lease_step)
        self._every(self.rescan_seconds).do(self._guard, self.rescan)
        self._every(RETENTION_SECONDS).do(self._guard, self.prune)
        try:
            while not stop.is_set():
                self.scheduler.run_pending()
                changed = self.watcher.changed()
                if changed:
                    self._guard(self._check_hooks, changed)
                idle = self.scheduler.idle_seconds
                stop.wait(0.2 if idle is None else min(max(idle, 0.0), 0.2))
        finally:
            self.watcher.stop()
            try:
                self.lease.release()
                presence.withdraw(self.redis, self.bench.bench_id, self.lease.holder)
            except redis.RedisError:
                pass
            logger.info("scheduler stopped bench=%s", self.bench.bench_id)


def run_scheduler(bench: Bench, stop: threading.Event | None = None) -> None:
    """Run the bench's scheduler daemon until ``stop`` is set (forever without one)."""
    SchedulerDaemon(bench).run(stop or threading.Event())
