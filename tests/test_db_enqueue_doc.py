"""``enqueue_doc`` takes enqueue's options and checks the controller method's arguments at enqueue time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rq.exceptions import NoSuchJobError
from rq.job import Job

import bgcore
from bgcore import keys
from bgcore.errors import DuplicateJob, InvalidArgument
from bgcore.jobs import pending_jobs, queued_count
from bgcore.migrate import migrate_site
from bgcore.rqbridge import SERIALIZER
from tests.conftest import BGCORE_EXE, BenchDir
from tests.test_db_support import backend, db_bench, mariadb_databases, postgres_databases  # noqa: F401
from tests.test_scheduler_daemon_support import wait_for


@pytest.fixture
def live_worker(db_bench: BenchDir, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``bgcore worker`` on the default queue, running while the test body runs."""
    env = dict(os.environ, BGCORE_BENCH=str(db_bench.path))
    log = open(tmp_path / "worker.log", "wb")
    proc = subprocess.Popen([BGCORE_EXE, "worker", "--queue", "default", "--quiet"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    log.close()


def _status(bench, rq_id: str) -> str | None:  # type: ignore[no-untyped-def]
    try:
        return Job.fetch(rq_id, connection=bench.redis(), serializer=SERIALIZER).get_status().value
    except NoSuchJobError:
        return None


def test_enqueue_doc_after_commit_runs_the_saved_document_in_a_live_worker(db_bench, live_worker, tmp_path):
    bench = db_bench.bench()
    marker = tmp_path / "marker.jsonl"
    with bgcore.connect("a.test", bench):
        # Given a document saved in this block, and its method enqueued after commit in the same block
        bgcore.new_doc("ToDo", "inv1", notes=[]).save()
        job = bgcore.enqueue_doc("ToDo", "inv1", "append_note", note="submitted", enqueue_after_commit=True)
        # When the live worker has run a job enqueued after it (so it would have taken ours)
        bgcore.enqueue("testapp.tasks.record", path=str(marker), tag="marker")
        wait_for(marker.exists, 30, "the worker to run the marker job")
        # Then ours is not in Redis yet: it waits for the commit
        assert _status(bench, job.id) is None
    # And once the block commits, the worker runs it against the committed document
    wait_for(lambda: _status(bench, job.id) in ("finished", "failed"), 30, "the document job to end")
    assert _status(bench, job.id) == "finished", (tmp_path / "worker.log").read_text()
    with bgcore.connect("a.test", bench):
        assert bgcore.get_doc("ToDo", "inv1").get("notes") == ["a.test:submitted"]
    # And the option never reached the controller method as an argument
    assert [json.loads(line)["tag"] for line in marker.read_text().splitlines()] == ["marker"]


def test_enqueue_doc_after_commit_pushes_nothing_on_rollback(bench_dir):
    bench = bench_dir.bench()
    migrate_site(bench, "a.test")
    with pytest.raises(RuntimeError, match="abort"):
        with bgcore.connect("a.test", bench):
            bgcore.new_doc("ToDo", "t1").save()
            bgcore.enqueue_doc("ToDo", "t1", "append_note", note="x", enqueue_after_commit=True)
            raise RuntimeError("abort")
    assert queued_count(bench, "default", "a.test") == 0


def test_enqueue_doc_takes_enqueue_options_and_names_the_job_after_the_document(bench_dir):
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        first = bgcore.enqueue_doc("ToDo", "t1", "append_note", note="a", job_id="todo-t1", queue="short")
        front = bgcore.enqueue_doc("ToDo", "t2", "append_note", note="b", queue="short", at_front=True,
                                   job_name="urgent")
        with pytest.raises(DuplicateJob, match="'todo-t1' is already queued"):
            bgcore.enqueue_doc("ToDo", "t1", "append_note", note="a", job_id="todo-t1", deduplicate=True)
    pending = pending_jobs(bench, "a.test")
    assert [(p.job_id, p.job_name) for p in pending] == [
        (keys.local_job_id(front.id), "urgent"), ("todo-t1", "ToDo t1.append_note")]
    assert first.kwargs["kwargs"] == {"doctype": "ToDo", "name": "t1", "method": "append_note",
                                      "kwargs": {"note": "a"}}


@pytest.mark.parametrize("kwargs, unexpected", [
    ({"notee": "x"}, r"unexpected keyword argument 'notee' \(did you mean 'note'\?\)"),
    ({}, "missing a required argument: 'note'"),
    ({"note": "x", "extra": 1}, "unexpected keyword argument 'extra'"),
])
def test_enqueue_doc_refuses_arguments_the_method_cannot_take(bench_dir, kwargs, unexpected):
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        with pytest.raises(InvalidArgument, match=unexpected) as caught:
            bgcore.enqueue_doc("ToDo", "t1", "append_note", **kwargs)
    assert "ToDo.append_note(note)" in str(caught.value) and "'a.test'" in str(caught.value)
    assert queued_count(bench, "default") == 0
