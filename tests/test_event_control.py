"""Per-event control of one site: stop, start, a cron override; kept across migrate, obeyed without a restart."""

from __future__ import annotations

from datetime import timedelta

from bgcore.clock import utcnow
from bgcore.scheduler.daemon import SchedulerDaemon
from tests.cli_support import run, run_json
from tests.conftest import BenchDir
from tests.test_scheduler_daemon_support import SchedBench, make_sched_bench


def _fired(daemon: SchedulerDaemon, now) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Renew the lease and rescan (as the running daemon does every few seconds), then tick at ``now``.

    Renewing first keeps the lease valid however long the CLI calls before took on a busy machine.
    """
    daemon.lease_step()
    daemon.rescan()
    return {(o.site, o.method.rsplit(".", 1)[1]) for o in daemon.tick(1.0, now)}


def test_stop_and_start_an_event_on_one_site_without_restarting_the_daemon(bench_dir: BenchDir) -> None:
    sched: SchedBench = make_sched_bench(bench_dir, ["every", "every2"])
    sched.migrate()
    now = utcnow()
    daemon = SchedulerDaemon(bench_dir.bench(), clock=lambda: now)
    daemon.lease_step()
    method = f"{sched.app}.tasks.every"
    # When the event is stopped on a.test, and the bench is migrated again
    stopped = run(bench_dir, "scheduler", "event", "stop", method, "--site", "a.test")
    assert stopped.exit_code == 0 and f"event {method} (" in stopped.stdout and "stopped for site a.test" in stopped.stdout
    sched.migrate()
    # Then the running daemon leaves it out on a.test only
    assert _fired(daemon, now + timedelta(seconds=2)) == {
        ("a.test", "every2"), ("b.test", "every"), ("b.test", "every2")}
    rows = {(r["site"], r["method"]): r for r in run_json(bench_dir, "scheduler", "events", "--site", "all")}
    assert rows[("a.test", method)]["stopped"] is True and rows[("a.test", method)]["next_run"] is None
    assert "stopped" in run(bench_dir, "scheduler", "events", "--site", "a.test").stdout
    # And once started again, the same daemon runs it again
    assert run(bench_dir, "scheduler", "event", "start", method, "--site", "a.test").exit_code == 0
    assert ("a.test", "every") in _fired(daemon, now + timedelta(seconds=4))
    daemon.lease.release()


def test_a_cron_override_changes_one_sites_frequency_and_survives_migrate(bench_dir: BenchDir) -> None:
    sched = make_sched_bench(bench_dir, ["every"])
    sched.migrate()
    method = f"{sched.app}.tasks.every"
    result = run(bench_dir, "scheduler", "event", "set", method, "--cron", "0 3 * * *", "--site", "b.test")
    assert result.exit_code == 0 and "runs at '0 3 * * *' for site b.test" in result.stdout
    sched.migrate()
    [row] = run_json(bench_dir, "scheduler", "events", "--site", "b.test")
    assert row["cron_override"] == "0 3 * * *" and row["cron"] is None
    assert "0 3 * * * (site)" in run(bench_dir, "scheduler", "events", "--site", "b.test").stdout
    now = utcnow()
    daemon = SchedulerDaemon(bench_dir.bench(), clock=lambda: now)
    daemon.lease_step()
    # Then b.test's event no longer runs every tick, but at the next 03:00; a.test is unchanged
    assert _fired(daemon, now + timedelta(seconds=2)) == {("a.test", "every")}
    assert ("b.test", "every") in _fired(daemon, now + timedelta(days=1, seconds=2))
    # And --reset follows hooks.py again
    assert run(bench_dir, "scheduler", "event", "set", method, "--reset", "--site", "b.test").exit_code == 0
    assert run_json(bench_dir, "scheduler", "events", "--site", "b.test")[0]["cron_override"] is None
    daemon.lease.release()


def test_bad_control_requests_are_refused_with_the_reason(bench_dir: BenchDir) -> None:
    sched = make_sched_bench(bench_dir, ["every"])
    sched.migrate()
    method = f"{sched.app}.tasks.every"
    bad_cron = run(bench_dir, "scheduler", "event", "set", method, "--cron", "every tuesday", "--site", "a.test")
    assert bad_cron.exit_code == 1 and "every tuesday" in bad_cron.stderr
    neither = run(bench_dir, "scheduler", "event", "set", method, "--site", "a.test")
    assert neither.exit_code == 2 and "give either --cron EXPR or --reset" in neither.stderr
    unknown = run(bench_dir, "scheduler", "event", "stop", f"{sched.app}.tasks.evry", "--site", "a.test")
    assert unknown.exit_code == 1 and "did you mean" in unknown.stderr
