"""The current site: one ``ContextVar``, set and reset in one place.

Scripts enter a site with ``with bgcore.connect("a.example.com"):``; workers
enter the job's site the same way. Code below reads the current site through
:func:`current` (or ``bgcore.local.site``), never from a process global.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from bgcore.bench import Bench, SiteConfig
from bgcore.queues import QueueSpec
from bgcore.errors import NoSiteContext

if TYPE_CHECKING:
    from bgcore.db.session import SiteSession

_current: ContextVar[SiteContext | None] = ContextVar("bgcore_site", default=None)


@dataclass
class SiteContext:
    """Everything bound to the site a piece of code runs in."""

    bench: Bench
    config: SiteConfig
    user: str | None = None
    job_id: str | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def site(self) -> str:
        return self.config.name

    @cached_property
    def queues(self) -> dict[str, QueueSpec]:
        """The bench's queues as of the first use in this block (the enqueue hot path reads this)."""
        return self.bench.queues

    @property
    def db(self) -> SiteSession:
        """The site's transaction (``bgcore.db``); created on first use, rolled back at exit if open."""
        session = self.state.get("db")
        if session is None:
            from bgcore.db.session import SiteSession

            session = self.state["db"] = SiteSession(self)
            self.state.setdefault("on_exit", []).append(session.close)
        return session


def current() -> SiteContext:
    """The current site context, or :class:`NoSiteContext` saying how to enter one."""
    ctx = _current.get()
    if ctx is None:
        raise NoSiteContext(
            "no current site: wrap the call in 'with bgcore.connect(\"<site>\"):' "
            "(or run it inside a bgcore job)"
        )
    return ctx


def current_or_none() -> SiteContext | None:
    return _current.get()


@contextmanager
def site_context(
    bench: Bench, site: str, *, user: str | None = None, job_id: str | None = None
) -> Iterator[SiteContext]:
    """Enter ``site`` of ``bench`` for the duration of the block.

    This is the one place that sets the current site. It validates the name,
    loads the merged config and puts the bench's apps on the import path.
    Hooks registered under ``ctx.state["on_exit"]`` run when the block ends.
    """
    config = bench.site_config(site)
    bench.activate_import_path()
    ctx = SiteContext(bench=bench, config=config, user=user, job_id=job_id)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        try:
            for hook in reversed(ctx.state.get("on_exit", [])):
                hook()
        finally:
            _current.reset(token)


class _Local:
    """``bgcore.local``: read-only views of the current site context."""

    @property
    def site(self) -> str | None:
        ctx = _current.get()
        return ctx.site if ctx else None

    @property
    def conf(self) -> SiteConfig | None:
        ctx = _current.get()
        return ctx.config if ctx else None

    @property
    def bench(self) -> Bench | None:
        ctx = _current.get()
        return ctx.bench if ctx else None

    @property
    def job_id(self) -> str | None:
        ctx = _current.get()
        return ctx.job_id if ctx else None


local = _Local()
