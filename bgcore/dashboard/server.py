"""Serve a bench's dashboard with uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import socket

import uvicorn

from bgcore.bench import Bench
from bgcore.dashboard.app import create_app
from bgcore.dashboard.settings import DashboardSettings
from bgcore.errors import InvalidArgument

logger = logging.getLogger(__name__)


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (``bgcore start`` checks before it runs the dashboard)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve(bench: Bench, settings: DashboardSettings) -> None:
    """Run the dashboard on ``settings.host:port``; :class:`InvalidArgument` if the port is taken."""
    if not port_free(settings.host, settings.port):
        raise InvalidArgument(f"the dashboard cannot listen on {settings.host}:{settings.port}: the port is in use; "
                              "pass --port (or set dashboard_port in common_site_config.json)")
    app = create_app(bench, password=settings.password)
    logger.info("dashboard of bench %s at %s%s", bench.path, settings.url,
                " (password required)" if settings.password else "")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                server_header=False)
