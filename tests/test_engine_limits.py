"""Payload and result limits (max_payload_bytes, max_result_bytes), against the real redis-server fixture."""

from __future__ import annotations

import pytest
from rq.job import Job

import bgcore
from bgcore.engine.horse import Horse, HorseLimits
from bgcore.engine.middleware import default_middleware
from bgcore.engine.slots import Slots
from bgcore.errors import ConfigError, InvalidArgument
from bgcore.jobs import queued_count
from bgcore.rqbridge import SERIALIZER

from tests.conftest import BenchDir


def test_an_oversize_payload_is_refused_at_enqueue_naming_size_and_limit(bench_dir: BenchDir) -> None:
    # Given a bench that allows 10 KB per job
    bench_dir.write_common(max_payload_bytes=10_000)
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        # When a job's arguments are bigger, it is refused, naming the size, the limit and the key
        with pytest.raises(InvalidArgument, match=r"is [\d,]+ bytes of JSON, over max_payload_bytes=10,000"):
            bgcore.enqueue("testapp.tasks.echo", blob="x" * 20_000)
        # And one within the limit goes through
        bgcore.enqueue("testapp.tasks.echo", blob="x" * 1_000)
    assert queued_count(bench, "default") == 1


def test_an_oversize_result_is_stored_truncated_with_a_note(bench_dir: BenchDir) -> None:
    bench_dir.write_common(max_result_bytes=2_000)
    bench = bench_dir.bench()
    with bgcore.connect("a.test", bench):
        job = bgcore.enqueue("testapp.tasks.echo", blob="y" * 5_000)
    Horse(bench, [bench.queues["default"]], name="limit-horse", index=0, slots=Slots(1),
          middleware=default_middleware(bench, timeouts=False), limits=HorseLimits(100, 10**6), burst=True).run()
    done = Job.fetch(job.id, connection=bench.redis(), serializer=SERIALIZER)
    assert done.get_status() == "finished"
    value = done.return_value()
    assert isinstance(value, str) and value.startswith('{"blob": "yyy')
    assert "result truncated" in value and "max_result_bytes=2,000" in value and len(value) < 2_200


@pytest.mark.parametrize("key, value", [("max_payload_bytes", 10), ("max_result_bytes", "1MB"),
                                        ("max_payload_bytes", 1.5)])
def test_a_bad_limit_is_a_config_error(bench_dir: BenchDir, key: str, value: object) -> None:
    bench_dir.write_common(**{key: value})
    with bgcore.connect("a.test", bench_dir.bench()), pytest.raises(ConfigError, match=key):
        bgcore.enqueue("testapp.tasks.noop")
