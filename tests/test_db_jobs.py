"""Jobs and site databases: one transaction per job, after-commit jobs, retries, the job log.

Workers are real: either ``run_worker`` in this process (it forks a work horse
per job, as in production) or the ``bgcore worker --burst`` console script.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from rq.job import Job

import bgcore
from bgcore import keys
from bgcore.db import joblog
from bgcore.errors import DocumentMethodNotFound, DocumentNotFound, UnknownDoctype
from bgcore.migrate import migrate_site
from bgcore.enqueue import EXECUTE_JOB
from bgcore.rqbridge import SERIALIZER, rq_queue
from bgcore.worker import run_worker
from tests.test_db_support import backend, db_bench, mariadb_databases, postgres_databases  # noqa: F401


def _job(bench, job_id: str) -> Job:  # type: ignore[no-untyped-def]
    return Job.fetch(job_id, connection=bench.redis(), serializer=SERIALIZER)


def _error(bench, job_id: str) -> str:  # type: ignore[no-untyped-def]
    result = _job(bench, job_id).latest_result()
    return str(result.exc_string if result else "")


def _lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _log(bench, site: str) -> list[joblog.JobLogEntry]:  # type: ignore[no-untyped-def]
    return joblog.failures(bench, bench.site_config(site))


def test_after_commit_jobs_of_a_job_go_out_only_if_it_commits(db_bench, tmp_path):
    bench = db_bench.bench()
    out = tmp_path / "follow-ups.jsonl"
    # Given two documents, and one job per document that enqueues a follow-up after commit
    with bgcore.connect("a.test", bench):
        bgcore.new_doc("ToDo", "ok", status="new").save()
        bgcore.new_doc("ToDo", "bad", status="new").save()
    with bgcore.connect("a.test", bench):
        committed = bgcore.enqueue_doc("ToDo", "ok", "enqueue_follow_up", out=str(out))
        rolled_back = bgcore.enqueue_doc("ToDo", "bad", "enqueue_follow_up", out=str(out), fail=True)
    # When a worker drains the queues (the follow-up is queued during the run)
    run_worker(bench, burst=True, quiet=True)
    # Then exactly one follow-up ran: the committed job's; the failed job left nothing
    assert [line["tag"] for line in _lines(out)] == ["follow-up"]
    assert _job(bench, committed.id).get_status() == "finished"
    assert _job(bench, rolled_back.id).get_status() == "failed"
    with bgcore.connect("a.test", bench):
        assert bgcore.get_doc("ToDo", "ok").get("status") == "followed"
        assert bgcore.get_doc("ToDo", "bad").get("status") == "new"


def test_a_job_that_raises_leaves_no_partial_writes_and_is_logged(db_bench):
    bench = db_bench.bench()
    with bgcore.connect("a.test", bench):
        bgcore.new_doc("ToDo", "t1", status="new").save()
        job = bgcore.enqueue_doc("ToDo", "t1", "write_then_fail", note="half-done")
    # When the job saves two documents and then raises
    run_worker(bench, burst=True, quiet=True)
    # Then neither write is kept
    with bgcore.connect("a.test", bench):
        assert bgcore.get_doc("ToDo", "t1").get("status") == "new"
        with pytest.raises(DocumentNotFound):
            bgcore.get_doc("ToDo", "t1-child")
    # And the failure is in the site's job log with its traceback
    [entry] = _log(bench, "a.test")
    assert entry.job_id == job.id and entry.status == "failed" and entry.queue == "default"
    assert entry.method == "bgcore.documents.run_doc_method"
    assert entry.exception == "RuntimeError: failed after writing half-done"
    assert "write_then_fail" in (entry.traceback or "")


def test_two_sites_documents_never_mix_in_one_worker(db_bench):
    bench = db_bench.bench()
    # Given a document of the same name in both sites
    for site in ("a.test", "b.test"):
        with bgcore.connect(site, bench):
            bgcore.new_doc("ToDo", "shared", notes=[]).save()
    # And jobs for both sites, interleaved on one queue
    for n in range(3):
        for site in ("a.test", "b.test"):
            with bgcore.connect(site, bench):
                bgcore.enqueue_doc("ToDo", "shared", "append_note", note=str(n))
    # When one real worker process runs them all in turn
    result = db_bench.cli("worker", "--burst", "--quiet")
    assert result.returncode == 0, result.stderr
    # Then each site's document holds only its own site's notes, in order
    for site in ("a.test", "b.test"):
        with bgcore.connect(site, bench):
            assert bgcore.get_doc("ToDo", "shared").get("notes") == [f"{site}:{n}" for n in range(3)]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_serialization_failure_is_retried_then_succeeds(db_bench, tmp_path):
    bench = db_bench.bench()
    marker = tmp_path / "first-attempt"
    with bgcore.connect("a.test", bench, user="alice"):
        bgcore.new_doc("ToDo", "counter", count=0).save()
        job = bgcore.enqueue("testapp.todo.bump_serializable", name="counter", marker=str(marker))
    # When the job's first attempt meets a concurrent update of the same row (a real 40001)
    result = db_bench.cli("worker", "--burst")
    # Then the worker logs the retry, and the second attempt commits
    assert result.returncode == 0, result.stderr
    assert "retrying site=a.test job=" in result.stderr and "attempt=1/3" in result.stderr
    assert "could not serialize access" in result.stderr
    assert _job(bench, job.id).get_status() == "finished"
    assert _job(bench, job.id).return_value() == 2
    with bgcore.connect("a.test", bench):
        assert bgcore.get_doc("ToDo", "counter").get("count") == 2
    assert _log(bench, "a.test") == []


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_deadlock_is_retried_then_succeeds(db_bench, tmp_path):
    bench = db_bench.bench()
    with bgcore.connect("a.test", bench):
        for name in "abcde":
            bgcore.new_doc("ToDo", name).save()
        job = bgcore.enqueue("testapp.todo.deadlock_once", marker=str(tmp_path / "first-attempt"))
    # When the job's first attempt deadlocks with another transaction (InnoDB picks the job)
    result = db_bench.cli("worker", "--burst")
    # Then the worker logs the retry and the second attempt commits
    assert result.returncode == 0, result.stderr
    assert "retrying site=a.test job=" in result.stderr and "Deadlock found" in result.stderr
    assert _job(bench, job.id).get_status() == "finished"
    with bgcore.connect("a.test", bench):
        assert {n: bgcore.get_doc("ToDo", n).fields["by"] for n in "abcde"} == {
            "a": "job", "b": "job", "c": "other", "d": "other", "e": "other"}


def test_missing_document_method_and_doctype_fail_with_recorded_errors(db_bench):
    bench = db_bench.bench()
    db_bench.add_site("other.test", installed_apps=["otherapp", "testapp"])
    migrate_site(bench, "other.test")
    with bgcore.connect("a.test", bench):
        bgcore.new_doc("ToDo", "t1").save()
        # An unknown doctype or method is refused at enqueue time already
        with pytest.raises(UnknownDoctype, match="unknown doctype 'Nope'"):
            bgcore.enqueue_doc("Nope", "t1", "append_note")
        with pytest.raises(DocumentMethodNotFound, match="has no public method 'fly'.*append_note"):
            bgcore.enqueue_doc("ToDo", "t1", "fly")
        missing_doc = bgcore.enqueue_doc("ToDo", "ghost", "append_note", note="x")
        # Given jobs whose method or doctype went away between enqueue and run
        missing_method = bgcore.enqueue("bgcore.documents.run_doc_method", job_kwargs=dict(
            doctype="ToDo", name="t1", method="fly", kwargs={}))
    with bgcore.connect("other.test", bench):
        unknown_doctype = bgcore.enqueue("bgcore.documents.run_doc_method", job_kwargs=dict(
            doctype="Invoice", name="i1", method="submit", kwargs={}))
    # When a worker runs them
    run_worker(bench, burst=True, quiet=True)
    # Then each failed, and its site's job log says why
    errors = {e.job_id: e.exception for e in _log(bench, "a.test") + _log(bench, "other.test")}
    assert errors[missing_doc.id] == "DocumentNotFound: site 'a.test': ToDo 'ghost' not found; it was never saved or was deleted"
    assert errors[missing_method.id].startswith("DocumentMethodNotFound: site 'a.test': ToDo controller")
    assert errors[unknown_doctype.id].startswith("UnknownDoctype: site 'other.test': unknown doctype 'Invoice'")
    assert all(_job(bench, j).get_status() == "failed" for j in errors)


def test_enqueue_doc_timeout_falls_back_to_the_queue_timeout(bench_dir):
    with bgcore.connect("a.test", bench_dir.bench()):
        assert bgcore.enqueue_doc("ToDo", "t1", "append_note", note="x", queue="long").timeout == 1500
        assert bgcore.enqueue_doc("ToDo", "t1", "append_note", note="x", queue="short").timeout == 300
        assert bgcore.enqueue_doc("ToDo", "t1", "append_note", note="x", queue="long", timeout=42).timeout == 42


def test_failed_jobs_listing_shows_only_the_sites_own_failures(db_bench):
    bench = db_bench.bench()
    # Given a failure, a timeout and a success in a.test, and a failure in b.test
    with bgcore.connect("a.test", bench):
        bgcore.new_doc("ToDo", "t1").save()
        failed_a = bgcore.enqueue("testapp.tasks.fail", message="a broke")
        timed_out = bgcore.enqueue_doc("ToDo", "t1", "slow", seconds=5, timeout=1)
        bgcore.enqueue("testapp.tasks.noop")
    with bgcore.connect("b.test", bench):
        failed_b = bgcore.enqueue("testapp.tasks.fail", message="b broke")
    run_worker(bench, burst=True, quiet=True)
    # When each site's operator lists its failed jobs
    listing_a = db_bench.cli("jobs", "failed", "--site", "a.test", "--format", "json", check=True)
    listing_b = db_bench.cli("jobs", "failed", "--site", "b.test", "--format", "json", check=True)
    # Then each sees only its own, with status and exception
    rows_a = {row["job_id"]: row for row in json.loads(listing_a.stdout)}
    rows_b = {row["job_id"]: row for row in json.loads(listing_b.stdout)}
    # (job ids as enqueue printed them: without the site prefix)
    fa, to, fb = (keys.local_job_id(j.id) for j in (failed_a, timed_out, failed_b))
    assert set(rows_a) == {fa, to}
    assert rows_a[fa]["status"] == "failed" and rows_a[fa]["exception"] == "RuntimeError: a broke"
    assert rows_a[to]["status"] == "timeout" and "JobTimeoutException" in rows_a[to]["exception"]
    assert rows_a[to]["job"] == "ToDo t1.slow"
    assert "Traceback" in rows_a[fa]["traceback"]
    assert set(rows_b) == {fb} and rows_b[fb]["exception"] == "RuntimeError: b broke"
    # And the table form names the site
    table = db_bench.cli("jobs", "failed", "--site", "b.test", check=True)
    assert "Failed jobs of b.test (1)" in table.stdout


def test_a_payload_with_log_true_records_a_successful_run(db_bench):
    bench = db_bench.bench()
    rq_id = keys.job_id("a.test", "logged")
    rq_queue(bench, "default").enqueue_call(EXECUTE_JOB, job_id=rq_id, kwargs={
        "site": "a.test", "method": "testapp.tasks.add", "kwargs": {"a": 1, "b": 2},
        "user": None, "job_name": None, "log": True, "event": "testapp.tasks.add:all"})
    run_worker(bench, burst=True, quiet=True)
    database = bgcore.db.database_for(bench, bench.site_config("a.test"))
    with database.transaction() as conn:
        rows = conn.execute(sa.select(joblog.job_log)).mappings().all()
    assert [(r["job_id"], r["status"], r["event"], r["exception"]) for r in rows] == [
        (rq_id, "finished", "testapp.tasks.add:all", None)]


def test_broken_site_databases_fail_only_their_own_jobs(bench_dir):
    # Given a healthy site and three whose databases are broken in different ways
    bench = bench_dir.bench()
    migrate_site(bench, "a.test")
    bench_dir.add_site("badurl.test", db_url="not a url")
    bench_dir.add_site("down.test", db_url="postgresql+psycopg2://nobody@127.0.0.1:1/x")
    bench_dir.add_site("corrupt.test")
    (bench_dir.sites / "corrupt.test" / "site.sqlite3").write_bytes(b"garbage" * 1000)
    jobs = {}
    for site in ("badurl.test", "a.test", "down.test", "corrupt.test"):
        with bgcore.connect(site, bench):
            if site == "a.test":
                bgcore.new_doc("ToDo", "t1", notes=[]).save()
            jobs[site] = bgcore.enqueue_doc("ToDo", "t1", "append_note", note="hi")
    # When one real worker process runs all their jobs
    result = bench_dir.cli("worker", "--burst")
    assert result.returncode == 0, result.stderr
    # Then the healthy site's job ran, and each broken site's job failed naming that site
    assert _job(bench, jobs["a.test"].id).get_status() == "finished"
    with bgcore.connect("a.test", bench):
        assert bgcore.get_doc("ToDo", "t1").get("notes") == ["a.test:hi"]
    assert "DatabaseConfigError: site 'badurl.test': db_url" in _error(bench, jobs["badurl.test"].id)
    assert "DatabaseUnavailable: site 'down.test': its database" in _error(bench, jobs["down.test"].id)
    assert "DatabaseUnavailable: site 'corrupt.test'" in _error(bench, jobs["corrupt.test"].id)
    assert "file is not a database" in _error(bench, jobs["corrupt.test"].id)
    # And the worker says, per site, that it could not write those failures to the job log
    assert "job log not written site=down.test" in result.stderr
