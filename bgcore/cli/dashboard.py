"""``bgcore dashboard``: the live web dashboard of the bench."""

from __future__ import annotations

import click

from bgcore.cli import CliState, configure_logging, log_options, pass_state
from bgcore.dashboard.settings import DashboardSettings


@click.command("dashboard")
@click.option("--host", default=None, help="Address to listen on. Default: dashboard_host, else 127.0.0.1.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on. Default: dashboard_port, else 8009.")
@log_options
@pass_state
def dashboard(state: CliState, host: str | None, port: int | None, log_level: str | None,
              log_file: str | None) -> None:
    """Serve the bench's live dashboard (overview, sites, jobs) and /metrics.

    A non-loopback --host needs dashboard_password in common_site_config.json.
    """
    from bgcore.dashboard.server import serve

    configure_logging(log_level, log_file, verbose=state.verbose)
    settings = DashboardSettings.from_bench(state.bench, host=host, port=port)
    click.echo(f"bgcore dashboard: {settings.url}" + (" (password required)" if settings.password else ""))
    serve(state.bench, settings)


COMMANDS = [dashboard]
