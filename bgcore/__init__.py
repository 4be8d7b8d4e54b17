"""bgcore: background jobs and a multi-site scheduler for a bench of sites.

Public API::

    import bgcore

    with bgcore.connect("a.example.com", bench="/path/to/bench"):
        bgcore.enqueue("myapp.tasks.send_mail", queue="short", to="x@example.com")
        todo = bgcore.get_doc("ToDo", "t1")
        bgcore.enqueue_doc("ToDo", "t1", "mark_done", queue="long")
        print(bgcore.local.site)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import os

from bgcore import db
from bgcore.bench import Bench
from bgcore.context import SiteContext, current, local, site_context
from bgcore.db.session import finish
from bgcore.documents import Document, enqueue_doc, get_doc, new_doc
from bgcore.enqueue import enqueue, enqueue_at, enqueue_in
from bgcore.errors import BgcoreError
from bgcore.retry import Retry

__all__ = [
    "Bench", "BgcoreError", "Document", "Retry", "SiteContext", "connect", "current", "db", "enqueue",
    "enqueue_at", "enqueue_doc", "enqueue_in", "get_doc", "local", "new_doc",
]
__version__ = "0.1.0"


@contextmanager
def connect(
    site: str, bench: Bench | str | os.PathLike[str] | None = None, *, user: str | None = None
) -> Iterator[SiteContext]:
    """Enter ``site`` for the block: the one documented way for scripts to use a site.

    ``bench`` is a :class:`Bench`, a path, or ``None`` for ``$BGCORE_BENCH`` or
    the current directory. Like a request, the block's database transaction
    (``bgcore.db``) is committed when the block ends normally, then its
    after-commit jobs are pushed; it is rolled back when the block raises.
    """
    the_bench = bench if isinstance(bench, Bench) else Bench.find(bench)
    with site_context(the_bench, site, user=user) as ctx:
        try:
            yield ctx
        except BaseException:
            finish(ctx, ok=False)
            raise
        finish(ctx, ok=True)
