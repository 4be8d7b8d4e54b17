"""Read models: the views of a bench that both the CLI and the dashboard show.

Each view is built by one function here (or by the module it names) and only
there; ``bgcore doctor``, ``show-pending-jobs``, ``jobs failed``, ``scheduler
status``/``events`` and every dashboard route call these functions and only
format what they return.

- :mod:`bgcore.views.queues`: per-queue queued, running, failed and scheduled counts.
- :mod:`bgcore.views.workers`: live workers of the bench, each busy one's job, site and start.
- :mod:`bgcore.views.scheduler`: who leads the scheduler, its last tick and lag, the standbys.
- :mod:`bgcore.views.sites`: the sites table (counts, switch, config errors), sorted, filtered, paged.
- :mod:`bgcore.views.joblist`: jobs by status, site, queue and method, paged on the server.
- one site's scheduler: :func:`bgcore.scheduler.status.site_status` and :func:`~bgcore.scheduler.status.event_status`;
  one job: :func:`bgcore.job_records.show_job`; a site's job log: :func:`bgcore.job_records.recent_log`.

Every function costs a fixed number of pipelined Redis round trips; listings
read what one page shows, not every job (``docs/engine.md``, "Read models").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: its rows, where it starts, its size and how many rows match in all.

    ``total`` is None when counting would mean reading every job (a method filter
    that stopped at its scan bound); ``scanned`` then says how many jobs it looked at.
    """

    rows: list[T]
    offset: int
    limit: int
    total: int | None
    scanned: int | None = None

    @property
    def has_next(self) -> bool:
        return self.total is None or self.offset + self.limit < self.total
