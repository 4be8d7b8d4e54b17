"""The ``bgcore`` command line.

Errors of bgcore become one line on stderr and exit status 1 (a traceback only
with ``--verbose``); usage errors exit 2, as click does.
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import click
import redis

from bgcore.bench import Bench
from bgcore.connection import redis_url
from bgcore.errors import BgcoreError


class BgcoreGroup(click.Group):
    """A click group that turns :class:`BgcoreError` into one clear line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (BgcoreError, redis.RedisError) as exc:
            if ctx.find_root().params.get("verbose"):
                traceback.print_exc()
            click.secho(f"Error: {_describe(ctx, exc)}", fg="red", err=True)
            sys.exit(1)


def _describe(ctx: click.Context, exc: Exception) -> str:
    """The one line shown for ``exc``; a Redis failure names the bench's Redis."""
    if isinstance(exc, BgcoreError):
        return str(exc)
    state = ctx.find_object(CliState)
    where = "the bench's Redis"
    if state is not None:
        try:
            where = f"Redis at {redis_url(state.bench)}"
        except BgcoreError:
            pass
    return (f"{where} failed ({type(exc).__name__}: {exc}); is it running and reachable? "
            "('bgcore doctor' checks it; 'bgcore start' runs a private one when redis_queue is unset)")


class CliState:
    """The context object every command receives: the bench, found lazily."""

    def __init__(self, bench_dir: str | None, verbose: bool) -> None:
        self.bench_dir = bench_dir
        self.verbose = verbose
        self._bench: Bench | None = None

    @property
    def bench(self) -> Bench:
        if self._bench is None:
            self._bench = Bench.find(self.bench_dir)
        return self._bench


pass_state = click.make_pass_decorator(CliState)

LONG_RUNNING = frozenset({"worker", "schedule", "start"})


@click.group(cls=BgcoreGroup)
@click.option("--bench", "bench_dir", metavar="DIR", envvar="BGCORE_BENCH",
              help="The bench directory (holds sites/). Default: $BGCORE_BENCH, else the current directory.")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="bgcore")
@click.pass_context
def main(ctx: click.Context, bench_dir: str | None, verbose: bool) -> None:
    """bgcore: background jobs and a scheduler for a bench of sites."""
    # Daemons log their progress; one-shot commands print their result and log only problems.
    quiet_level = logging.INFO if ctx.invoked_subcommand in LONG_RUNNING else logging.WARNING
    logging.basicConfig(
        level=logging.DEBUG if verbose else quiet_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = CliState(bench_dir, verbose)


def _register() -> None:
    from bgcore.cli import jobs, run, scheduler, site

    for module in (jobs, run, site, scheduler):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
