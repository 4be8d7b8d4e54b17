"""Job commands: worker, enqueue, show-pending-jobs, purge-jobs, hold-jobs."""

from __future__ import annotations

import inspect
import json
from typing import Any

import click

import bgcore
from bgcore import jobs as jobs_api
from bgcore import keys
from bgcore.bench import ALL_SITES, validate_site_name
from bgcore.cli import CliState, configure_logging, log_options, pass_state
from bgcore.cli.output import FORMAT_OPTION, WIDE_OPTION, emit, local_time, site_zone
from bgcore.enqueue import enqueue
from bgcore.errors import InvalidArgument
from bgcore.holds import hold_jobs, set_hold
from bgcore.methods import argument_problem, check_app_installed, method_path, resolve
from bgcore.rqbridge import broker
from bgcore.worker import run_worker


def _queue_list(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--queue`` given but empty or blank is a usage error, never "every queue"."""
    if value is not None and (not value.strip() or not all(part.strip() for part in value.split(","))):
        raise click.BadParameter(
            f"{value!r} names no queue or has an empty name; give queue names separated by commas "
            "(e.g. short,default), or leave --queue out to consume every queue")
    return value


@click.command()
@click.option("--queue", "queues", metavar="A,B", callback=_queue_list,
              help="Queues to consume, in priority order. Default: all.")
@click.option("--burst", is_flag=True, help="Drain the queues, then exit.")
@click.option("--quiet", is_flag=True, help="Log only warnings and errors.")
@click.option("--pool", "pool", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of work-horse processes.")
@click.option("--shutdown-grace", "shutdown_grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="How long running jobs may finish on SIGTERM before a cold stop "
                   "(default: shutdown_grace_seconds of the bench).")
@log_options
@pass_state
def worker(state: CliState, queues: str | None, burst: bool, quiet: bool, pool: int, shutdown_grace: float | None,
           log_level: str | None, log_file: str | None) -> None:
    """Run a pool of shared work-horses for every site of the bench."""
    configure_logging(log_level, log_file, verbose=state.verbose)
    run_worker(state.bench, queues, burst=burst, quiet=quiet, pool=pool, shutdown_grace=shutdown_grace)


SITE_HELP = "A site, or 'all' for every site of the bench."


@click.command("enqueue")
@click.argument("method")
@click.option("--site", required=True, help="The site the job runs in, or 'all' for one job in every site.")
@click.option("--queue", default="default", show_default=True)
@click.option("--kwargs", "kwargs_json", default="{}", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--timeout", type=int, default=None, help="Seconds; default: the queue's timeout.")
@click.option("--job-id", default=None, help="A job id of your own (see --deduplicate).")
@click.option("--job-name", default=None, help="A name shown in listings instead of the method.")
@click.option("--deduplicate", is_flag=True, help="Refuse if a job with --job-id is queued or running.")
@click.option("--at-front", is_flag=True, help="Put the job at the head of its queue.")
@click.option("--now", is_flag=True, help="Run the method here, in the site, and print its result (no worker).")
@FORMAT_OPTION
@pass_state
def enqueue_cmd(state: CliState, method: str, site: str, queue: str, kwargs_json: str, timeout: int | None,
                job_id: str | None, job_name: str | None, deduplicate: bool, at_front: bool, now: bool,
                fmt: str) -> None:
    """Enqueue METHOD (a dotted path) in SITE (or run it at once with --now).

    Prints the job id as you give it to other commands (--job-id, or the one generated).
    """
    kwargs = _kwargs(kwargs_json)
    done: list[dict[str, Any]] = []
    for name in state.bench.sites_named(site):
        _warn_if_held(state, name)
        with bgcore.connect(name, state.bench) as ctx:
            _check_keywords(method, kwargs, name, ctx.config.installed_apps)
            outcome = enqueue(method, queue=queue, timeout=timeout, now=now, job_name=job_name, at_front=at_front,
                              job_id=job_id, deduplicate=deduplicate, job_kwargs=kwargs)
        if now:
            done.append({"site": name, "method": method, "result": outcome})
        else:
            done.append({"site": name, "queue": queue, "job_id": keys.local_job_id(outcome.id),
                         "job_name": job_name, "method": method})
    if fmt == "json":
        emit(fmt, "", [], [], data=done)
        return
    for row in done:
        if now:
            click.echo(f"ran {method} in site {row['site']}: {json.dumps(row['result'], default=str)}")
        else:
            click.echo(f"enqueued {row['job_id']} on {queue} for site {row['site']}")


def _check_keywords(method: str, kwargs: dict[str, Any], site: str, installed: tuple[str, ...]) -> None:
    """Refuse --kwargs the method cannot take, naming the unexpected keyword first."""
    path = method_path(method)
    check_app_installed(path, site, installed)
    try:
        signature = inspect.signature(resolve(path))
    except (TypeError, ValueError):  # no signature to check: the worker will tell
        return
    problem = argument_problem(signature, kwargs)
    if problem is not None:
        raise InvalidArgument(f"{path}({', '.join(signature.parameters)}) cannot take --kwargs "
                              f"{json.dumps(kwargs)}: {problem}")


def _kwargs(text: str) -> dict[str, Any]:
    """``--kwargs`` as a dict, or :class:`InvalidArgument` saying what is wrong."""
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"--kwargs is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(kwargs, dict):
        raise InvalidArgument("--kwargs must be a JSON object, e.g. '{\"name\": \"x\"}'")
    return kwargs


def _warn_if_held(state: CliState, site: str) -> None:
    """Warn on stderr when SITE holds its jobs (``hold_jobs``, e.g. during an upgrade)."""
    if hold_jobs(state.bench.site_config(site)):
        click.secho(f"warning: site {site!r} has hold_jobs on (its jobs are held, e.g. for an upgrade); "
                    f"queued anyway; 'bgcore hold-jobs off --site {site}' releases the site", fg="yellow", err=True)


@click.command("show-pending-jobs")
@click.option("--site", default=None, help="Only this site (exact match), or 'all'. Default: every site.")
@click.option("--list", "listing", is_flag=True, help="List the jobs themselves, not counts per queue and site.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="With --list: at most this many jobs.")
@WIDE_OPTION
@FORMAT_OPTION
@pass_state
def show_pending_jobs(state: CliState, site: str | None, listing: bool, limit: int, wide: bool, fmt: str) -> None:
    """Count queued and delayed jobs per queue and site (--list shows the jobs, a delayed one's time in its site's zone)."""
    site = None if site == ALL_SITES else site
    _note_unknown_site(state, site)
    if not listing:
        counts = [(queue, name, count) for queue in state.bench.queues
                  for name, count in sorted(_depths(state, queue, site).items())]
        total = sum(c for _, _, c in counts)
        emit(fmt, f"Pending jobs ({total})", ["queue", "site", "count"], counts)
        if fmt != "json" and total:
            click.echo("(--list [--limit N] shows the jobs themselves)")
        return
    pending = jobs_api.pending_jobs(state.bench, site)
    more = f", first {limit}" if len(pending) > limit else ""
    title = f"Pending jobs ({len(pending)}{more})"
    pending = pending[:limit]
    delayed = any(j.due is not None for j in pending)  # the status and due columns only when they say something
    if fmt == "json":
        columns = ["queue", "site", "job_id", "job_name", "method", "enqueued_at", "status", "due"]
        rows = [(j.queue, j.site, j.job_id, j.job_name, j.method, j.enqueued_at, j.status, j.due) for j in pending]
        emit(fmt, title, columns, rows, data=[dict(zip(columns, r)) | {
            "enqueued_at": local_time(j.enqueued_at, site_zone(state.bench, j.site)),
            "due": local_time(j.due, site_zone(state.bench, j.site)) if j.due else None,
        } for r, j in zip(rows, pending)])
        return
    columns = (["queue", "site", "job", "enqueued_at"] + (["status", "due"] if delayed else [])
               + (["job_id", "method"] if wide else []))

    def row(j: jobs_api.PendingJob, zone: Any) -> list[Any]:
        when = [local_time(j.enqueued_at, zone)] + ([j.status, local_time(j.due, zone) if j.due else ""]
                                                     if delayed else [])
        return [j.queue, j.site, j.job_name or j.method, *when] + ([j.job_id, j.method] if wide else [])

    if site is not None:  # one site: its zone in the title
        emit(fmt, title, columns, [row(j, site_zone(state.bench, site)) for j in pending],
             tz=site_zone(state.bench, site), squeeze=("job", "method"))
        return
    zones = {name: site_zone(state.bench, name) for name in {j.site for j in pending}}
    emit(fmt, title, columns, [row(j, zones[j.site]) for j in pending], squeeze=("job", "method"))


def _depths(state: CliState, queue: str, site: str | None) -> dict[str, int]:
    """Site -> queued and delayed jobs of ``queue`` (only ``site``'s, if given), without reading the jobs."""
    if site is None:
        found = dict(broker(state.bench).depths(queue))
    else:
        found = {site: jobs_api.queued_count(state.bench, queue, site)}
    for job_id, _ in broker(state.bench).scheduled(queue, site):
        owner = keys.site_of_job(job_id) or ""
        found[owner] = found.get(owner, 0) + 1
    return {name: count for name, count in found.items() if count}


@click.command("purge-jobs")
@click.option("--site", required=True, help="The site whose queued jobs are removed (exact match), or 'all'.")
@click.option("--queue", default=None, help="Only this queue. Default: every queue.")
@click.option("--yes", is_flag=True, help="Needed with --site all: confirm removing every site's queued jobs.")
@pass_state
def purge_jobs(state: CliState, site: str, queue: str | None, yes: bool) -> None:
    """Remove SITE's queued jobs (other sites' jobs are untouched)."""
    if site == ALL_SITES:
        if not yes:
            raise click.UsageError("--site all removes the queued jobs of every site of the bench; "
                                   "add --yes to confirm")
        names = sorted(set(state.bench.site_names()) | _sites_with_jobs(state, queue))
    else:
        _note_unknown_site(state, site)
        names = [site]
    for name in names:
        report = jobs_api.purge_jobs(state.bench, name, queue)
        click.echo(f"purged {report.removed} queued job(s) of site {name} from {', '.join(report.queues)}")


def _sites_with_jobs(state: CliState, queue: str | None) -> set[str]:
    """Every site with queued jobs (in ``queue``, or any queue), on the bench or left over from a removed one."""
    queues = [queue] if queue else list(state.bench.queues)
    return {name for q in queues for name in broker(state.bench).depths(q)}


@click.command("hold-jobs")
@click.argument("mode", type=click.Choice(["on", "off"]))
@click.option("--site", required=True, help=SITE_HELP)
@pass_state
def hold_jobs_cmd(state: CliState, mode: str, site: str) -> None:
    """Hold SITE's jobs (on) or release them (off): sets hold_jobs in its site_config.json.

    While held, workers pass the site's turns and leave its jobs queued (other
    sites run as usual); 'bgcore enqueue' warns. Released, the jobs run.
    """
    for name in state.bench.sites_named(site):
        set_hold(state.bench, name, mode == "on")
        click.echo(f"jobs {'held' if mode == 'on' else 'released'} for site {name}")


def _note_unknown_site(state: CliState, site: str | None) -> None:
    """Say so when SITE is not on the bench (its leftover jobs are still listed or purged)."""
    if site and validate_site_name(site) not in state.bench.site_names():
        click.echo(f"note: site {site!r} is not on this bench; looking for its leftover jobs anyway", err=True)


COMMANDS = [worker, enqueue_cmd, show_pending_jobs, purge_jobs, hold_jobs_cmd]
