"""Celery: Redis broker, no result backend, and the no-op task (``ignore_result``).

Run by ``celery -A benchmarks.peers.celery_tasks worker --pool prefork -c P``.
"""

from __future__ import annotations

from celery import Celery

from benchmarks.peers import count_done, redis_url

app = Celery("bench", broker=redis_url())
app.conf.update(
    result_backend=None,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(ignore_result=True)  # type: ignore[untyped-decorator]
def noop() -> None:
    """The no-op task (plus the completion count)."""
    count_done()
