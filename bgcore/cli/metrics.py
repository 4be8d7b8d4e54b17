"""``bgcore metrics``: serve ``/metrics`` (Prometheus) without the dashboard."""

from __future__ import annotations

import click

from bgcore.cli import CliState, pass_state
from bgcore.metrics.server import DEFAULT_HOST, DEFAULT_PORT, serve


@click.command("metrics")
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on; beyond loopback only with dashboard_password set.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to listen on.")
@pass_state
def metrics_cmd(state: CliState, host: str, port: int) -> None:
    """Serve the bench's Prometheus metrics at /metrics until Ctrl-C (needs dashboard_password, if set)."""
    bench = state.bench

    def ready(url: str) -> None:
        click.echo(f"bgcore metrics: bench {bench.bench_id} at {url}", err=False)

    try:
        serve(bench, host, port, ready=ready)
    except KeyboardInterrupt:
        pass


COMMANDS: list[click.Command] = [metrics_cmd]
