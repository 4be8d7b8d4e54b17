"""Tables fit an 80-column terminal, one line per row; long ids only with --wide. In-process CLI."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from click.testing import CliRunner

import bgcore
from bgcore import keys
from bgcore.cli import main
from bgcore.db import joblog
from bgcore.migrate import migrate_site
from tests.cli_support import run
from tests.conftest import BenchDir
from tests.test_scheduler_daemon_support import make_sched_bench

UTC = timezone.utc


def _at_80(bench: BenchDir, *args: str) -> list[str]:
    """The table a command prints on an 80-column terminal, as lines."""
    result = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["--bench", str(bench.path), *args],
                                                     catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()


def _body(lines: list[str]) -> list[str]:
    """The data lines of a rich table (between the header rule and the bottom rule)."""
    start = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    return [line for line in lines[start + 1:] if line.startswith("│")]


def test_failed_jobs_fit_80_columns_and_name_document_jobs(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    migrate_site(bench, "a.test")
    with bgcore.connect("a.test", bench):
        doc_job = bgcore.enqueue_doc("ToDo", "inv-0042", "append_note", note="x")
    start = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    for n, (job_id, method) in enumerate([(doc_job.id, "bgcore.documents.run_doc_method"),
                                          (keys.job_id("a.test", "x" * 32), "testapp.tasks.fail")]):
        joblog.write(bench, bench.site_config("a.test"), joblog.JobLogEntry(
            job_id=job_id, method=method, queue="default", status="failed",
            started_at=start + timedelta(minutes=n), ended_at=start + timedelta(minutes=n), duration_ms=3,
            exception="RuntimeError: " + "a very long reason that goes on " * 5,
            traceback="Traceback (most recent call last):\n  ...\nRuntimeError: boom"))
    lines = _at_80(bench_dir, "jobs", "failed", "--site", "a.test")
    assert max(len(line) for line in lines) <= 80
    body = _body(lines)
    assert len(body) == 2  # one line per job, nothing folded
    assert "ToDo inv-0042.append_note" in "\n".join(body)
    assert "x" * 32 not in "\n".join(lines)
    wide = run(bench_dir, "jobs", "failed", "--site", "a.test", "--wide").stdout
    assert "x" * 32 in wide and "bgcore.documents.run_doc_method" in wide


def test_scheduler_events_fit_80_columns(bench_dir: BenchDir) -> None:
    sched = make_sched_bench(bench_dir, ["every", "every2", "slow"])
    sched.migrate()
    lines = _at_80(bench_dir, "scheduler", "events", "--site", "a.test")
    assert max(len(line) for line in lines) <= 80
    assert len(_body(lines)) == 3
    assert "event_id" not in "\n".join(lines)
    assert "event_id" in run(bench_dir, "scheduler", "events", "--site", "a.test", "--wide").stdout


def test_pending_jobs_list_fits_80_columns_and_shows_the_document(bench_dir: BenchDir) -> None:
    with bgcore.connect("a.test", bench_dir.bench()):
        bgcore.enqueue_doc("ToDo", "t1", "append_note", note="x")
        bgcore.enqueue("testapp.tasks.noop", job_id="nightly-report-for-all-customers")
    lines = _at_80(bench_dir, "show-pending-jobs", "--list", "--site", "a.test")
    assert max(len(line) for line in lines) <= 80 and len(_body(lines)) == 2
    assert "ToDo t1.append_note" in "\n".join(lines)
    wide = run(bench_dir, "show-pending-jobs", "--list", "--wide").stdout
    assert "nightly-report-for-all-customers" in wide
