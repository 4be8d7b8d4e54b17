"""The dashboard's routes: pages, their live fragments, and the actions (POST, CSRF-checked).

Every page is rendered whole on a plain GET; the same URL fetched by htmx
(``HX-Request`` header) returns only its live part, which the page polls every
:data:`POLL_SECONDS` seconds. Each route calls one read model of
:mod:`bgcore.views` (or the function the CLI calls for the same view or
action) and only formats what it returns. Every action acts on this bench only:
sites are checked to be on it, job ids are built from the site
(:func:`bgcore.keys.job_id`), and every Redis key comes from :mod:`bgcore.keys`
under this bench's id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bgcore import keys
from bgcore.bench import Bench
from bgcore.cli.output import site_zone
from bgcore.clock import utcnow
from bgcore.config import SITE_CONFIG
from bgcore.dashboard import charts, security
from bgcore.errors import BgcoreError, InvalidArgument, InvalidSiteName, SiteNotFound
from bgcore.db import joblog
from bgcore.job_records import show_job
from bgcore.jobs import delete_failed, requeue_failed
from bgcore.scheduler.status import event_status, site_status, trigger_event
from bgcore.scheduler.switches import Switch, blocking_switch, set_switch
from bgcore.views import joblist, sites, workers
from bgcore.views.queues import queue_counts
from bgcore.views.scheduler import scheduler_view

HERE = Path(__file__).parent
POLL_SECONDS = 3
LOG_ROWS = 20
PAGE_SIZES = (20, 50, 100, 200)
SWITCH_ACTIONS: dict[str, tuple[Switch, bool, str]] = {
    "enable": (Switch.DISABLED, False, "scheduler enabled"),
    "disable": (Switch.DISABLED, True, "scheduler disabled"),
    "pause": (Switch.PAUSED, True, "scheduler paused"),
    "resume": (Switch.PAUSED, False, "scheduler resumed"),
}

Clock = Callable[[], datetime]


def templates() -> jinja2.Environment:
    """The templates, with autoescaping on for every one (every value from a job is escaped)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    env.filters["seconds"] = _seconds
    env.filters["pretty_json"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    return env


def _when(value: datetime | None, tz: tzinfo | None = None) -> str:
    if value is None:
        return ""
    shown = value.astimezone(tz) if tz is not None else value
    return shown.isoformat(sep=" ", timespec="seconds")


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}s" if value < 120 else f"{value / 60:.0f}m"


class Dashboard:
    """The routes of one bench's dashboard (``clock`` is the one clock, injectable in tests)."""

    def __init__(self, bench: Bench, *, password: str | None = None, clock: Clock = utcnow) -> None:
        self.bench = bench
        self.password = password
        self.clock = clock
        self.env = templates()

    # -- rendering ------------------------------------------------------------------------------
    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        """The page ``name``, or only its live fragment when htmx polls it."""
        fragment = request.headers.get("hx-request") == "true" and "fragment" in context
        template = self.env.get_template(context["fragment"] if fragment else name)
        html = template.render(request=request, csrf_token=security.csrf_token(request), poll=POLL_SECONDS,
                               bench=self.bench, now=self.clock(), query=_query, **context)
        return HTMLResponse(html, status_code=status_code)

    # -- pages ----------------------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        now = self.clock()
        found = workers.live_workers(self.bench, now)
        return self.render(
            request, "overview.html", fragment="overview_live.html", title="Overview",
            queues=queue_counts(self.bench), workers=found, per_queue=workers.per_queue(found),
            scheduler=scheduler_view(self.bench, now), chart=charts.throughput_chart(self.bench, now))

    def sites_page(self, request: Request) -> Response:
        params = request.query_params
        offset, limit = _paging(params)
        page = sites.site_rows(self.bench, search=params.get("q", ""), scheduler=params.get("scheduler") or None,
                               errors_only=params.get("errors") == "1", sort=params.get("sort", "site"),
                               descending=params.get("desc") == "1", offset=offset, limit=limit)
        return self.render(request, "sites.html", fragment="sites_live.html", title="Sites", page=page,
                           params=dict(params), states=sites.SWITCH_STATES, sort_keys=sites.SORT_KEYS)

    def site_page(self, request: Request) -> Response:
        site = self._site(request)
        now = self.clock()
        [status] = site_status(self.bench, [site])
        events, events_error = [], None
        try:
            events = event_status(self.bench, site, now)
        except BgcoreError as exc:  # not migrated, database down: the page still shows the rest
            events_error = str(exc)
        failed_only = request.query_params.get("log") == "failed"
        try:  # the failed-only view is the one 'bgcore jobs failed' prints
            config = self.bench.site_config(site)
            log = (joblog.failures(self.bench, config, limit=LOG_ROWS) if failed_only
                   else joblog.recent(self.bench, config, limit=LOG_ROWS))
            log_error = None
        except BgcoreError as exc:
            log, log_error = [], str(exc)
        return self.render(request, "site.html", fragment="site_live.html", title=site, site=site, status=status,
                           state=sites.switch_state(_switch_of(status.stopped_by)), events=events,
                           events_error=events_error, log=log, log_error=log_error, failed_only=failed_only,
                           local_id=keys.local_job_id, zone=site_zone(self.bench, site),
                           message=request.query_params.get("done"))

    def jobs_page(self, request: Request) -> Response:
        params = request.query_params
        offset, limit = _paging(params)
        wanted = joblist.JobFilter(status=params.get("status") or "queued", site=params.get("site") or None,
                                   queue=params.get("queue") or None, method=params.get("method") or None)
        try:
            page = joblist.job_page(self.bench, wanted, offset, limit)
        except BgcoreError as exc:
            raise HTTPException(400, str(exc)) from exc
        zones = {name: site_zone(self.bench, name) for name in {r.site for r in page.rows if r.site}}
        return self.render(request, "jobs.html", fragment="jobs_live.html", title="Jobs", page=page, wanted=wanted,
                           params=dict(params), statuses=joblist.STATUSES, queues=list(self.bench.queues), zones=zones,
                           message=request.query_params.get("done"))

    def job_page(self, request: Request) -> Response:
        site = self._site(request)
        job_id = request.path_params["job_id"]
        try:
            record = show_job(self.bench, site, job_id)
        except InvalidArgument as exc:
            raise HTTPException(404, f"no job {job_id!r} in site {site!r}: {exc}") from exc
        if record is None:
            raise HTTPException(404, f"no job {job_id!r} in site {site!r} (Redis and the site's job log know none)")
        return self.render(request, "job.html", fragment="job_live.html", title=f"Job {record.job_id}", site=site,
                           job=record, zone=site_zone(self.bench, site), message=request.query_params.get("done"))

    # -- actions --------------------------------------------------------------------------------
    def switch(self, form: dict[str, str], request: Request) -> Response:
        site = self._site(request)
        action = SWITCH_ACTIONS.get(request.path_params["action"])
        if action is None:
            raise HTTPException(404, f"no scheduler action {request.path_params['action']!r}; "
                                     f"use one of: {', '.join(SWITCH_ACTIONS)}")
        switch, on, done = action
        set_switch(self.bench, site, switch, on)
        return _back(f"/sites/{site}", done)

    def trigger(self, form: dict[str, str], request: Request) -> Response:
        site = self._site(request)
        event = form.get("event", "")
        switch = blocking_switch(self.bench.site_config(site))
        if switch is not None:  # as 'bgcore trigger-scheduler-event' without --force
            raise HTTPException(409, f"site {site!r} has {switch.value} on, so its scheduler does not run events; "
                                     f"turn it off first, or run 'bgcore trigger-scheduler-event {event} "
                                     f"--site {site} --force'")
        job = trigger_event(self.bench, site, event, self.clock())
        return _back(f"/sites/{site}", f"enqueued {keys.local_job_id(job.id)} ({event})")

    def job_action(self, form: dict[str, str], request: Request) -> Response:
        site = self._site(request)
        job_id = request.path_params["job_id"]
        verb = request.path_params["action"]
        act = {"requeue": requeue_failed, "delete": delete_failed}.get(verb)
        if act is None:
            raise HTTPException(404, f"no job action {verb!r}; use requeue or delete")
        report = act(self.bench, site, job=job_id)
        if not report.jobs:
            raise HTTPException(409, f"job {job_id!r} of site {site!r} is not a failed job in Redis; nothing done")
        if verb == "delete":
            return _back("/jobs?" + urlencode({"status": "failed", "site": site}), f"deleted {job_id}")
        return _back(f"/jobs/{site}/{job_id}", f"requeued {job_id}")

    def bulk(self, form: dict[str, str], request: Request) -> Response:
        """Requeue or delete every failed job the filter selects (a site, or every site of the bench)."""
        verb = request.path_params["action"]
        act = {"requeue": requeue_failed, "delete": delete_failed}.get(verb)
        if act is None:
            raise HTTPException(404, f"no bulk action {verb!r}; use requeue or delete")
        if verb == "delete" and form.get("confirm") != "yes":
            raise HTTPException(400, "deleting failed jobs in bulk needs the 'yes, delete them' box ticked")
        site, queue, method = form.get("site") or None, form.get("queue") or None, form.get("method") or None
        names = [self._known(site)] if site else self.bench.site_names()
        done = sum(len(act(self.bench, name, method=method, queue=queue).jobs) for name in names)
        where = urlencode({k: v for k, v in (("status", "failed"), ("site", site), ("queue", queue),
                                             ("method", method)) if v})
        return _back(f"/jobs?{where}", f"{verb}d {done} failed job(s)")

    # -- helpers --------------------------------------------------------------------------------
    def _site(self, request: Request) -> str:
        return self._known(request.path_params["site"])

    def _known(self, site: str) -> str:
        """``site`` if it is a site of this bench (its config may still be broken), else 404."""
        try:
            path = self.bench.site_path(site)
        except InvalidSiteName as exc:
            raise HTTPException(404, str(exc)) from exc
        if not (path / SITE_CONFIG).is_file():
            raise HTTPException(404, f"unknown site {site!r}: it is not a site of this bench")
        return site

    def error_page(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self.render(request, "error.html", status_code=exc.status_code, title=f"Error {exc.status_code}",
                           status=exc.status_code, detail=exc.detail)


def _switch_of(value: str | None) -> Switch | None:
    return Switch(value) if value else None


def _paging(params: Any) -> tuple[int, int]:
    try:
        limit = int(params.get("size", 50))
        page = max(1, int(params.get("page", 1)))
    except ValueError as exc:
        raise HTTPException(400, "page and size must be whole numbers") from exc
    limit = limit if limit in PAGE_SIZES else 50
    return (page - 1) * limit, limit


def _query(params: dict[str, str], **changes: Any) -> str:
    """``?a=1&b=2`` from ``params`` with ``changes`` applied (None removes a key)."""
    merged = {**params, **{k: str(v) for k, v in changes.items() if v is not None}}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
    return "?" + urlencode({k: v for k, v in merged.items() if v != ""})


def _back(path: str, done: str) -> Response:
    joiner = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{joiner}{urlencode({'done': done})}", status_code=303)


def _page(method: Callable[[Request], Response]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            return await run_in_threadpool(method, request)
        except (SiteNotFound, InvalidSiteName) as exc:
            raise HTTPException(404, str(exc)) from exc
        except BgcoreError as exc:  # a broken config, a database down: say it, as the CLI would
            raise HTTPException(503, str(exc)) from exc
    return endpoint


def _action(method: Callable[[dict[str, str], Request], Response]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        refusal = security.csrf_refusal(request, form.get(security.CSRF_FIELD))
        if refusal:
            return PlainTextResponse(refusal, status_code=403)
        try:
            return await run_in_threadpool(method, form, request)
        except (SiteNotFound, InvalidSiteName) as exc:
            raise HTTPException(404, str(exc)) from exc
        except BgcoreError as exc:
            raise HTTPException(400, str(exc)) from exc
    return endpoint


def create_app(bench: Bench, *, password: str | None = None, clock: Clock = utcnow) -> Starlette:
    """The dashboard of ``bench`` as an ASGI app (``password``: HTTP basic auth on every request)."""
    board = Dashboard(bench, password=password, clock=clock)
    routes = [
        Route("/", _page(board.overview)),
        Route("/sites", _page(board.sites_page)),
        Route("/sites/{site}", _page(board.site_page)),
        Route("/sites/{site}/scheduler/{action}", _action(board.switch), methods=["POST"]),
        Route("/sites/{site}/trigger", _action(board.trigger), methods=["POST"]),
        Route("/jobs", _page(board.jobs_page)),
        Route("/jobs/failed/{action}", _action(board.bulk), methods=["POST"]),
        Route("/jobs/{site}/{job_id}", _page(board.job_page)),
        Route("/jobs/{site}/{job_id}/{action}", _action(board.job_action), methods=["POST"]),
        Route("/metrics", _page(lambda request: metrics_response(bench))),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def on_error(request: Request, exc: Exception) -> Response:
        return await run_in_threadpool(board.error_page, request, exc)

    return Starlette(routes=routes, exception_handlers={HTTPException: on_error},
                     middleware=[Middleware(BaseHTTPMiddleware, dispatch=security.middleware(password))])


def metrics_response(bench: Bench) -> Response:
    """``/metrics``: the Prometheus text of :func:`bgcore.metrics.render`."""
    from bgcore.metrics import render

    body, content_type = render(bench)
    return Response(body, media_type=content_type)
