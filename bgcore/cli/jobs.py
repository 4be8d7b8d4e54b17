"""Job commands: worker, enqueue, show-pending-jobs, purge-jobs."""

from __future__ import annotations

import json

import click

from bgcore.bench import validate_site_name
from bgcore.cli import CliState, pass_state
from bgcore.cli.output import FORMAT_OPTION, emit, local_time, site_zone
from bgcore.context import site_context
from bgcore.enqueue import enqueue
from bgcore.errors import InvalidArgument
from bgcore import jobs as jobs_api
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
@pass_state
def worker(state: CliState, queues: str | None, burst: bool, quiet: bool, pool: int) -> None:
    """Run a pool of shared work-horses for every site of the bench."""
    run_worker(state.bench, queues, burst=burst, quiet=quiet, pool=pool)


@click.command("enqueue")
@click.argument("method")
@click.option("--site", required=True, help="The site the job runs in.")
@click.option("--queue", default="default", show_default=True)
@click.option("--kwargs", "kwargs_json", default="{}", metavar="JSON", help="Keyword arguments as a JSON object.")
@click.option("--timeout", type=int, default=None, help="Seconds; default: the queue's timeout.")
@click.option("--job-id", default=None, help="A job id of your own (see --deduplicate).")
@click.option("--deduplicate", is_flag=True, help="Refuse if a job with --job-id is queued or running.")
@click.option("--at-front", is_flag=True, help="Put the job at the head of its queue.")
@pass_state
def enqueue_cmd(state: CliState, method: str, site: str, queue: str, kwargs_json: str, timeout: int | None,
                job_id: str | None, deduplicate: bool, at_front: bool) -> None:
    """Enqueue METHOD (a dotted path) in SITE."""
    try:
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"--kwargs is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(kwargs, dict):
        raise InvalidArgument("--kwargs must be a JSON object, e.g. '{\"name\": \"x\"}'")
    with site_context(state.bench, site):
        job = enqueue(method, queue=queue, timeout=timeout, at_front=at_front, job_id=job_id,
                      deduplicate=deduplicate, job_kwargs=kwargs)
    click.echo(f"enqueued {job.id} on {queue} for site {site}")


@click.command("show-pending-jobs")
@click.option("--site", default=None, help="Only this site (exact match).")
@FORMAT_OPTION
@pass_state
def show_pending_jobs(state: CliState, site: str | None, fmt: str) -> None:
    """List queued jobs per queue and per site."""
    _note_unknown_site(state, site)
    pending = jobs_api.pending_jobs(state.bench, site)
    zones = {name: site_zone(state.bench, name) for name in {j.site for j in pending}}
    rows = [(j.queue, j.site, j.job_id, j.job_name, j.method, local_time(j.enqueued_at, zones[j.site]))
            for j in pending]
    emit(fmt, f"Pending jobs ({len(rows)})", ["queue", "site", "job_id", "job_name", "method", "enqueued_at"], rows)


@click.command("purge-jobs")
@click.option("--site", required=True, help="The site whose queued jobs are removed (exact match).")
@click.option("--queue", default=None, help="Only this queue. Default: every queue.")
@pass_state
def purge_jobs(state: CliState, site: str, queue: str | None) -> None:
    """Remove SITE's queued jobs (other sites' jobs are untouched)."""
    _note_unknown_site(state, site)
    report = jobs_api.purge_jobs(state.bench, site, queue)
    click.echo(f"purged {report.removed} queued job(s) of site {site} from {', '.join(report.queues)}")


def _note_unknown_site(state: CliState, site: str | None) -> None:
    """Say so when SITE is not on the bench (its leftover jobs are still listed or purged)."""
    if site and validate_site_name(site) not in state.bench.site_names():
        click.echo(f"note: site {site!r} is not on this bench; looking for its leftover jobs anyway", err=True)


COMMANDS = [worker, enqueue_cmd, show_pending_jobs, purge_jobs]
