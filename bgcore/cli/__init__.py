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

from bgcore.bench import BENCH_ENV, Bench
from bgcore.connection import explain_for, redact
from bgcore.errors import BenchNotFound, BgcoreError


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
        return redact(str(exc))
    state = ctx.find_object(CliState)
    if state is not None:
        try:
            return explain_for(state.bench, exc)
        except BgcoreError:
            pass
    from bgcore.connection import explain

    return explain(exc, "the bench's Redis")


class CliState:
    """The context object every command receives: the bench, found lazily."""

    def __init__(self, bench_dir: str | None, verbose: bool) -> None:
        self.bench_dir = bench_dir
        self.verbose = verbose
        self._bench: Bench | None = None

    @property
    def bench(self) -> Bench:
        if self._bench is None:
            try:
                self._bench = Bench.find(self.bench_dir)
            except BenchNotFound as exc:  # say it the command line's way
                raise BenchNotFound(f"{exc.path} is not a bench: it has no sites/ directory; pass --bench DIR "
                                    f"(before or after the command name) or set ${BENCH_ENV}", path=exc.path) from None
        return self._bench


def _set_bench(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--bench`` given after the command name: it wins over the one before it."""
    state = ctx.find_object(CliState)
    if value is not None and state is not None:
        state.bench_dir = value
        state._bench = None


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """``--verbose`` given after the command name: tracebacks and debug logs, as before it."""
    state = ctx.find_object(CliState)
    if value and state is not None:
        state.verbose = True
        ctx.find_root().params["verbose"] = True
        logging.getLogger().setLevel(logging.DEBUG)


def _accept_root_options(command: click.Command) -> None:
    """Let ``command`` (and, for a group, each of its commands) take ``--bench`` and ``--verbose`` too."""
    command.params.append(click.Option(["--bench", "bench_after"], metavar="DIR", expose_value=False,
                                       is_eager=True, callback=_set_bench, help="Same as bgcore --bench."))
    command.params.append(click.Option(["--verbose", "-v", "verbose_after"], is_flag=True, expose_value=False,
                                       is_eager=True, callback=_set_verbose, help="Same as bgcore --verbose."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_root_options(sub)


pass_state = click.make_pass_decorator(CliState)

LONG_RUNNING = frozenset({"worker", "schedule", "start", "dashboard", "metrics"})


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


LOG_LEVELS = ("debug", "info", "warning", "error")


def log_options(command: Any) -> Any:
    """``--log-level`` and ``--log-file`` for a long-running command (also read from the environment,
    so the workers and scheduler that ``bgcore start`` runs inherit them)."""
    command = click.option("--log-file", type=click.Path(dir_okay=False), envvar="BGCORE_LOG_FILE", default=None,
                           help="Append logs to this file instead of stderr.")(command)
    return click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False),
                        envvar="BGCORE_LOG_LEVEL", default=None,
                        help="Log at this level and above (default: info; debug with --verbose).")(command)


def configure_logging(level: str | None, log_file: str | None, *, verbose: bool = False) -> None:
    """Point the root logger at ``log_file`` (else stderr) at ``level``; RQ's own per-job lines stay quiet
    unless the level is debug (bgcore logs one line per job itself)."""
    root = logging.getLogger()
    chosen = logging.DEBUG if verbose else getattr(logging, (level or "info").upper())
    root.setLevel(chosen)
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(handler)
    logging.getLogger("rq").setLevel(logging.DEBUG if chosen <= logging.DEBUG else logging.WARNING)


def _register() -> None:
    from bgcore.cli import config, dashboard, jobs, metrics, run, scheduler, setup, site

    for module in (jobs, run, site, scheduler, config, setup, dashboard, metrics):
        for command in module.COMMANDS:
            _accept_root_options(command)
            main.add_command(command)


_register()
