"""bgcore jobs requeue / delete: a site's failed jobs, one site only (CliRunner, real redis-server)."""

from __future__ import annotations

from click.testing import CliRunner, Result
from rq.job import Job

import bgcore
from bgcore import keys
from bgcore.bench import Bench
from bgcore.cli import main
from bgcore.engine.horse import Horse, HorseLimits
from bgcore.engine.middleware import default_middleware
from bgcore.engine.slots import Slots
from bgcore.jobs import queued_count
from bgcore.rqbridge import SERIALIZER, broker

from tests.conftest import BenchDir


def drain(bench: Bench) -> None:
    Horse(bench, [bench.queues["default"]], name="failed-horse", index=0, slots=Slots(1),
          middleware=default_middleware(bench, timeouts=False), limits=HorseLimits(10**6, 10**6), burst=True).run()


def cli(bench_dir: BenchDir, *args: str) -> Result:
    return CliRunner().invoke(main, ["--bench", str(bench_dir.path), *args])


def status(bench: Bench, job_id: str) -> str:
    return str(Job.fetch(job_id, connection=bench.redis(), serializer=SERIALIZER).get_status().value)


def failing_jobs(bench: Bench) -> dict[str, str]:
    """Two failed jobs of a.test (fail, add with a bad argument type), one of b.test."""
    ids = {}
    with bgcore.connect("a.test", bench):
        ids["a-fail"] = bgcore.enqueue("testapp.tasks.fail", job_id="a-fail").id
        ids["a-add"] = bgcore.enqueue("testapp.tasks.add", a=1, b="x", job_id="a-add").id
    with bgcore.connect("b.test", bench):
        ids["b-fail"] = bgcore.enqueue("testapp.tasks.fail", job_id="b-fail").id
    drain(bench)
    assert {status(bench, i) for i in ids.values()} == {"failed"}
    return ids


def test_requeue_one_job_puts_it_back_with_its_id_and_arguments(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    ids = failing_jobs(bench)
    result = cli(bench_dir, "jobs", "requeue", "--site", "a.test", "--job", "a-add")
    assert result.exit_code == 0 and "requeued 1 failed job(s) of site a.test" in result.output
    assert status(bench, ids["a-add"]) == "queued"
    assert broker(bench).queued_ids("default") == [ids["a-add"]]
    job = Job.fetch(ids["a-add"], connection=bench.redis(), serializer=SERIALIZER)
    assert job.kwargs["kwargs"] == {"a": 1, "b": "x"}
    assert status(bench, ids["a-fail"]) == status(bench, ids["b-fail"]) == "failed"


def test_requeue_all_by_method_touches_only_that_site_and_method(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    ids = failing_jobs(bench)
    result = cli(bench_dir, "jobs", "requeue", "--site", "a.test", "--all", "--method", "testapp.tasks.fail")
    assert result.exit_code == 0 and "requeued 1" in result.output
    assert status(bench, ids["a-fail"]) == "queued"
    assert status(bench, ids["a-add"]) == status(bench, ids["b-fail"]) == "failed"


def test_delete_all_removes_the_sites_failed_jobs_and_no_other(bench_dir: BenchDir) -> None:
    bench = bench_dir.bench()
    ids = failing_jobs(bench)
    result = cli(bench_dir, "jobs", "delete", "--site", "a.test", "--all")
    assert result.exit_code == 0 and "deleted 2 failed job(s) of site a.test" in result.output
    assert not bench.redis().exists(keys.rq_job(ids["a-fail"]), keys.rq_job(ids["a-add"]))
    assert status(bench, ids["b-fail"]) == "failed"
    assert broker(bench).failed_ids("default", "a.test") == []


def test_a_job_failed_by_a_broken_site_config_runs_once_the_config_is_fixed(bench_dir: BenchDir,
                                                                         tmp_path: object) -> None:
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue("testapp.tasks.add", a=2, b=3)
    good = (bench_dir.sites / "a.test" / "site_config.json").read_text()
    (bench_dir.sites / "a.test" / "site_config.json").write_text("{broken")
    drain(bench)
    assert status(bench, job.id) == "failed"
    (bench_dir.sites / "a.test" / "site_config.json").write_text(good)
    assert cli(bench_dir, "jobs", "requeue", "--site", "a.test", "--all").exit_code == 0
    drain(bench)
    done = Job.fetch(job.id, connection=bench.redis(), serializer=SERIALIZER)
    assert done.get_status() == "finished" and done.return_value() == 5


def test_requeue_needs_job_or_all_and_says_when_the_job_is_not_there(bench_dir: BenchDir) -> None:
    assert cli(bench_dir, "jobs", "requeue", "--site", "a.test").exit_code == 2
    assert cli(bench_dir, "jobs", "requeue", "--site", "a.test", "--job", "x", "--all").exit_code == 2
    assert cli(bench_dir, "jobs", "delete", "--site", "a.test", "--job", "x", "--method", "m").exit_code == 2
    missing = cli(bench_dir, "jobs", "requeue", "--site", "a.test", "--job", "nope")
    assert missing.exit_code == 1 and "has no failed job 'nope'" in missing.output
    assert cli(bench_dir, "jobs", "delete", "--site", "../etc", "--all").exit_code == 1
    assert queued_count(bench_dir.bench(), "default") == 0
