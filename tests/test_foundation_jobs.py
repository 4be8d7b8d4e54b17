"""enqueue and shared workers, against a real redis-server."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

import bgcore
from bgcore import keys
from bgcore.errors import (AppNotInstalled, DuplicateJob, InvalidArgument, NoSiteContext, SerializationError,
                           UnknownMethod, UnknownQueue)
from bgcore.jobs import pending_jobs, queued_count
from bgcore.rqbridge import SERIALIZER, broker, rq_queue
from bgcore.worker import run_worker

from tests.conftest import BenchDir


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_enqueue_records_the_site_and_uses_the_queue_timeout(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue("testapp.tasks.add", queue="long", a=1, b=2)
    assert keys.site_of_job(job.id) == "a.test"
    assert job.timeout == 1500
    assert job.kwargs["site"] == "a.test"
    assert job.kwargs["method"] == "testapp.tasks.add"
    assert job.kwargs["kwargs"] == {"a": 1, "b": 2}
    assert job.origin == keys.queue_name(bench.bench_id, "long")


def test_enqueue_accepts_a_function_and_an_explicit_timeout(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    bench.activate_import_path()
    import testapp.tasks  # type: ignore[import-not-found]

    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue(testapp.tasks.add, queue="short", timeout=7, a=1, b=2)
    assert job.kwargs["method"] == "testapp.tasks.add"
    assert job.timeout == 7


def test_now_runs_inline_in_the_callers_site(bench_dir: BenchDir, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with bgcore.connect("b.test", bench_dir.bench()):
        assert bgcore.enqueue("testapp.tasks.add", now=True, a=2, b=3) == 5
        assert bgcore.enqueue("testapp.tasks.record", is_async=False, path=str(out)) == "b.test"
    assert lines(out)[0]["site"] == "b.test"
    assert queued_count(bench_dir.bench(), "default") == 0


def test_at_front_puts_the_job_at_the_head(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        first = bgcore.enqueue("testapp.tasks.noop")
        urgent = bgcore.enqueue("testapp.tasks.noop", at_front=True)
    assert broker(bench).queued_ids("default") == [urgent.id, first.id]


def test_job_kwargs_escape_hatch_passes_names_that_collide_with_options(bench_dir: BenchDir) -> None:
    with bgcore.connect("a.test", bench_dir.bench()):
        job = bgcore.enqueue("testapp.tasks.echo", job_kwargs={"queue": "mine", "timeout": 3})
    assert job.kwargs["kwargs"] == {"queue": "mine", "timeout": 3}
    assert job.timeout == 300


@pytest.mark.parametrize("call, error, message", [
    (dict(method="testapp.tasks.add", queue="nope"), UnknownQueue, "valid queues are: short, default, long"),
    (dict(method="testapp.tasks.ad"), UnknownMethod, "did you mean testapp.tasks.add"),
    (dict(method="testapp.nomodule.f"), UnknownMethod, "module 'testapp.nomodule' cannot be imported"),
    (dict(method="testapp.tasks.NOT_CALLABLE"), UnknownMethod, "not a function"),
    (dict(method="otherapp.tasks.secret"), AppNotInstalled, "app 'otherapp' is not installed"),
    (dict(method="testapp.tasks.echo", when=object()), SerializationError, "argument when of testapp.tasks.echo"),
    (dict(method="testapp.tasks.echo", items=[1, {2}]), SerializationError, r"argument items\[1\]"),
    (dict(method="testapp.tasks.echo", job_id="has space"), InvalidArgument, "job_id 'has space' is not valid"),
    (dict(method=lambda: None), UnknownMethod, "cannot be imported by a worker"),
    (dict(method="testapp.tasks.Path"), UnknownMethod, "is pathlib.Path, defined outside app 'testapp'"),
    (dict(method="testapp.tasks.echo", n=[1, {"x": float("inf")}]), SerializationError,
     r"argument n\[1\]\['x'\] of testapp.tasks.echo"),
    (dict(method="testapp.tasks.echo", n=float("nan")), SerializationError, "argument n of"),
    (dict(method="testapp.tasks.noop", x=1), InvalidArgument,
     r"testapp.tasks.noop\(\) cannot take these arguments: unexpected keyword argument 'x'"),
    (dict(method="testapp.tasks.add", a=1), InvalidArgument,
     r"testapp.tasks.add\(a, b\) cannot take these arguments: missing a required argument: 'b'"),
])
def test_bad_enqueue_input_is_one_clear_error_and_queues_nothing(
    bench_dir: BenchDir, call: dict[str, Any], error: type[Exception], message: str
) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        with pytest.raises(error, match=message):
            bgcore.enqueue(**call)
    assert sum(queued_count(bench, q) for q in bench.queues) == 0


def test_enqueue_outside_a_site_says_how_to_enter_one(bench_dir: BenchDir) -> None:
    with pytest.raises(NoSiteContext, match=r"with bgcore.connect"):
        bgcore.enqueue("testapp.tasks.noop")


def test_enqueue_after_commit_waits_for_the_block_to_commit(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue("testapp.tasks.noop", enqueue_after_commit=True)
        assert job.id and queued_count(bench, "default") == 0
    assert broker(bench).queued_ids("default") == [job.id]


def test_reusing_a_job_id_never_overwrites_a_queued_job(bench_dir: BenchDir, tmp_path: Path) -> None:
    # Given a queued job with an id of the caller's
    out = tmp_path / "seen.jsonl"
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.record", job_id="dup1", path=str(out), tag="first")
        # When the same id is enqueued again, even without deduplicate
        with pytest.raises(DuplicateJob, match="job 'dup1' is already queued or running"):
            bgcore.enqueue("testapp.tasks.record", job_id="dup1", path=str(out), tag="second")
    # Then the first job is intact and runs once
    run_worker(bench, burst=True, quiet=True)
    assert [row["tag"] for row in lines(out)] == ["first"]


@pytest.mark.parametrize("timeout", [0, -5, "soon", 1.5, True])
def test_a_timeout_must_be_a_positive_number_of_seconds(bench_dir: BenchDir, timeout: Any) -> None:
    with bgcore.connect("a.test", bench_dir.bench()):
        with pytest.raises(InvalidArgument, match="timeout must be a positive number of seconds"):
            bgcore.enqueue("testapp.tasks.noop", timeout=timeout)


def test_deduplicate_without_a_job_id_is_a_usage_error(bench_dir: BenchDir) -> None:
    with bgcore.connect("a.test", bench_dir.bench()):
        with pytest.raises(InvalidArgument, match="deduplicate needs a job id"):
            bgcore.enqueue("testapp.tasks.noop", deduplicate=True)


def test_unknown_site_is_refused(bench_dir: BenchDir) -> None:
    with pytest.raises(bgcore.BgcoreError, match="unknown site 'zzz.test'"):
        with bgcore.connect("zzz.test", bench_dir.bench()):
            pass


def test_two_benches_on_one_redis_do_not_see_each_others_jobs(bench_dir: BenchDir, tmp_path: Path,
                                                             redis_server: str) -> None:
    other = BenchDir(tmp_path / "other", redis_server)
    other.sites.mkdir(parents=True)
    other.write_common()
    other.add_site("a.test")
    with bgcore.connect("a.test", bench_dir.bench()):
        bgcore.enqueue("testapp.tasks.noop")
    assert bench_dir.bench().bench_id != other.bench().bench_id
    assert len(pending_jobs(bench_dir.bench())) == 1
    assert pending_jobs(other.bench()) == []
    assert run_worker(other.bench(), burst=True, quiet=True) is False  # nothing of ours was taken
    assert len(pending_jobs(bench_dir.bench())) == 1


# -- deduplication ---------------------------------------------------------------------------

def _enqueue_once(bench_path: str, barrier: Any, results: Any) -> None:
    with bgcore.connect("a.test", bench_path):
        barrier.wait()
        try:
            bgcore.enqueue("testapp.tasks.noop", job_id="nightly", deduplicate=True)
            results.put("enqueued")
        except DuplicateJob:
            results.put("duplicate")


def test_deduplicate_is_atomic_between_racing_processes(bench_dir: BenchDir) -> None:
    # Given 8 processes that enqueue the same job id at the same instant
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_enqueue_once, args=(str(bench_dir.path), barrier, results)) for _ in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    # Then exactly one enqueued and the queue holds exactly one job
    assert outcomes == ["duplicate"] * 7 + ["enqueued"]
    assert len(pending_jobs(bench_dir.bench(), "a.test")) == 1


def test_deduplicate_threads_and_reuse_after_the_job_finished(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def attempt() -> None:
        with bgcore.connect("a.test", bench):
            barrier.wait()
            try:
                bgcore.enqueue("testapp.tasks.noop", job_id="sync", deduplicate=True)
                outcomes.append("enqueued")
            except DuplicateJob:
                outcomes.append("duplicate")

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["duplicate"] * 5 + ["enqueued"]
    # When the job has run, the same id can be enqueued again
    run_worker(bench, burst=True, quiet=True)
    with bgcore.connect("a.test", bench):
        again = bgcore.enqueue("testapp.tasks.noop", job_id="sync", deduplicate=True)
        # and the same id in another site is a different job
        other = bgcore.connect("b.test", bench)
    assert again.get_status() == JobStatus.QUEUED
    with other:
        bgcore.enqueue("testapp.tasks.noop", job_id="sync", deduplicate=True)


# -- workers ---------------------------------------------------------------------------------

def test_a_worker_serving_two_sites_runs_each_job_in_its_own_site(bench_dir: BenchDir, tmp_path: Path) -> None:
    out = tmp_path / "seen.jsonl"
    bench = bench_dir.bench()
    for i in range(6):
        site = "a.test" if i % 2 == 0 else "b.test"
        with bgcore.connect(site, bench):
            bgcore.enqueue("testapp.tasks.record", path=str(out), tag=site)
    # When one real worker process drains the queue
    result = bench_dir.cli("worker", "--burst", "--quiet", "--queue", "default")
    assert result.returncode == 0, result.stderr
    seen = lines(out)
    # Then every job saw its own site, and all ran in that one worker's horses
    assert len(seen) == 6
    assert all(row["site"] == row["tag"] for row in seen)
    assert all(keys.site_of_job(row["job"]) == row["site"] for row in seen)


def test_worker_consumes_queues_in_the_given_priority_order(bench_dir: BenchDir, tmp_path: Path) -> None:
    out = tmp_path / "order.jsonl"
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.record", queue="default", path=str(out), tag="default")
        bgcore.enqueue("testapp.tasks.record", queue="long", path=str(out), tag="long")
        bgcore.enqueue("testapp.tasks.record", queue="short", path=str(out), tag="short")
    assert run_worker(bench, "short,long,default", burst=True, quiet=True)
    assert [row["tag"] for row in lines(out)] == ["short", "long", "default"]


def test_burst_worker_only_takes_its_queues(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.noop", queue="long")
        bgcore.enqueue("testapp.tasks.noop", queue="short")
    run_worker(bench, "short", burst=True, quiet=True)
    assert [j.queue for j in pending_jobs(bench)] == ["long"]


def _failed(bench: Any, queue: str = "default") -> list[Job]:
    registry = FailedJobRegistry(queue=rq_queue(bench, queue))
    return [Job.fetch(i, connection=bench.redis(), serializer=SERIALIZER) for i in registry.get_job_ids()]


def test_a_failed_job_keeps_site_method_exception_and_traceback(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("b.test", bench):
        bgcore.enqueue("testapp.tasks.fail", message="disk full")
    run_worker(bench, burst=True, quiet=True)
    [job] = _failed(bench)
    assert job.kwargs["site"] == "b.test"
    assert job.kwargs["method"] == "testapp.tasks.fail"
    assert "RuntimeError: disk full" in (job.latest_result().exc_string or "")
    assert "testapp/tasks.py" in (job.latest_result().exc_string or "")


def test_a_job_for_an_app_not_installed_on_its_site_fails_clearly(bench_dir: BenchDir, redis_client: redis.Redis,
                                                                 tmp_path: Path) -> None:
    # Given a job crafted to call another app's method (bypassing enqueue's own check)
    bench = bench_dir.bench()
    queue = rq_queue(bench, "default")
    queue.enqueue_call("bgcore.worker.execute_job", job_id=keys.job_id("a.test", "sneaky"),
                       kwargs={"site": "a.test", "method": "otherapp.tasks.secret", "kwargs": {}})
    run_worker(bench, burst=True, quiet=True)
    [job] = _failed(bench)
    assert "AppNotInstalled" in (job.latest_result().exc_string or "")
    assert "app 'otherapp' is not installed" in (job.latest_result().exc_string or "")


def test_a_job_for_a_site_that_was_deleted_fails_and_others_run(bench_dir: BenchDir, tmp_path: Path) -> None:
    out = tmp_path / "seen.jsonl"
    bench = bench_dir.bench()
    gone = bench_dir.add_site("gone.test")
    with bgcore.connect("gone.test", bench):
        bgcore.enqueue("testapp.tasks.record", path=str(out))
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.record", path=str(out))
    (gone / "site_config.json").unlink()
    run_worker(bench, burst=True, quiet=True)
    assert [row["site"] for row in lines(out)] == ["a.test"]
    [job] = _failed(bench)
    assert "unknown site 'gone.test'" in (job.latest_result().exc_string or "")


def test_a_broken_site_config_fails_only_that_sites_jobs(bench_dir: BenchDir, tmp_path: Path) -> None:
    out = tmp_path / "seen.jsonl"
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.record", path=str(out))
    with bgcore.connect("b.test", bench):
        bgcore.enqueue("testapp.tasks.record", path=str(out))
    (bench_dir.sites / "a.test" / "site_config.json").write_text("{oops")
    run_worker(bench, burst=True, quiet=True)
    assert [row["site"] for row in lines(out)] == ["b.test"]
    [job] = _failed(bench)
    assert "invalid JSON" in (job.latest_result().exc_string or "")


def test_a_job_over_its_timeout_is_killed_and_recorded_as_a_timeout(bench_dir: BenchDir, tmp_path: Path) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        bgcore.enqueue("testapp.tasks.sleep", timeout=1, seconds=30)
    result = bench_dir.cli("worker", "--burst", "--quiet", timeout=40)
    assert result.returncode == 0
    [job] = _failed(bench)
    assert "JobTimeoutException" in (job.latest_result().exc_string or "")
    assert job.kwargs["site"] == "a.test"


def test_a_misspelt_keyword_is_named_before_a_missing_argument(bench_dir: BenchDir) -> None:
    # Given add(a, b) called with a misspelt b
    with bgcore.connect("a.test", bench_dir.bench()):
        # Then the unexpected keyword is what the error names, with a hint
        with pytest.raises(InvalidArgument, match=r"unexpected keyword argument 'bb' \(did you mean 'b'\?\)"):
            bgcore.enqueue("testapp.tasks.add", a=1, bb=2)
