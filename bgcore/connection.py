"""Finding and connecting to a bench's Redis.

``redis_queue`` in ``common_site_config.json`` names it; without that key, the
private Redis that ``bgcore start`` runs for the bench (recorded under
``.bgcore/redis.json``) is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from bgcore.errors import RedisUnavailable

if TYPE_CHECKING:
    from bgcore.bench import Bench


def redis_url(bench: Bench) -> str:
    """The Redis URL of ``bench``, or :class:`RedisUnavailable` saying how to get one."""
    configured = bench.settings.get("redis_queue")  # a redis://, rediss:// or unix:// URL (checked by the schema)
    if configured:
        return str(configured)
    from bgcore.embedded_redis import running_url

    url = running_url(bench)
    if url is None:
        raise RedisUnavailable(
            f"bench {bench.path} has no Redis: set 'redis_queue' in sites/common_site_config.json "
            "or run 'bgcore start' to run a private one"
        )
    return url


def connect(bench: Bench) -> redis.Redis:
    """A client for the bench's Redis (connects lazily; see :func:`ping`)."""
    return redis.Redis.from_url(redis_url(bench), health_check_interval=30)


def ping(bench: Bench) -> None:
    """Check that the bench's Redis answers, or raise :class:`RedisUnavailable`."""
    try:
        bench.redis().ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(f"Redis at {redis_url(bench)} does not answer ({exc}); is it running?") from None
