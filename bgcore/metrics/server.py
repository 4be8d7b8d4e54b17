"""``bgcore metrics``: ``/metrics`` alone, for hosts that do not run the dashboard.

A small WSGI app on the standard library's ``wsgiref`` server (one thread per
request) that answers ``GET /metrics`` with :func:`bgcore.metrics.render`.
Safe by default, as the dashboard: it listens on loopback unless told otherwise,
refuses any other address unless the bench sets ``dashboard_password``, and once a
password is set every request needs it, as HTTP basic authentication (any user
name; what Prometheus's ``basic_auth`` sends) or as ``Authorization: Bearer
<password>`` (Prometheus's ``authorization`` setting).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import socket
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from redis import RedisError

from bgcore.bench import Bench
from bgcore.config import COMMON_CONFIG
from bgcore.dashboard.settings import is_loopback  # the dashboard's own rule, so both agree
from bgcore.errors import BgcoreError, InvalidArgument

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8010
PATH = "/metrics"
REALM = 'Basic realm="bgcore metrics", charset="UTF-8"'

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def dashboard_password(bench: Bench) -> str | None:
    """The bench's ``dashboard_password`` (None when unset or empty), checked by the schema."""
    password: str | None = bench.settings.get("dashboard_password")
    return password


def check_listen(bench: Bench, host: str, port: int) -> str | None:
    """Check where ``bgcore metrics`` is asked to listen; return the password requests need (None: open).

    :class:`InvalidArgument` for a port outside 1-65535 or an address beyond loopback
    without ``dashboard_password``.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidArgument(f"--port must be a port number from 1 to 65535, found {port!r}")
    if not isinstance(host, str) or not host.strip():
        raise InvalidArgument(f"--host must be a host name or address, found {host!r}")
    password = dashboard_password(bench)
    if password is None and not is_loopback(host.strip()):
        raise InvalidArgument(
            f"bgcore metrics refuses to listen on {host!r} without a password: set dashboard_password in "
            f"{COMMON_CONFIG} (every request then needs it), or listen on {DEFAULT_HOST}")
    return password


def authorized(header: str, password: str | None) -> bool:
    """Whether an ``Authorization`` header value carries ``password`` (always True when there is none)."""
    if password is None:
        return True
    scheme, _, credentials = header.strip().partition(" ")
    given = credentials.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode(), password.encode())


def metrics_app(bench: Bench, password: str | None) -> WsgiApp:
    """The WSGI app: ``GET /metrics`` (authenticated when ``password`` is set); 404 elsewhere."""
    from bgcore.metrics import render

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not authorized(environ.get("HTTP_AUTHORIZATION", ""), password):
            return _text(start_response, "401 Unauthorized", "authentication required: the bench's "
                         "dashboard_password (HTTP basic or bearer)", [("WWW-Authenticate", REALM)])
        if environ.get("PATH_INFO", "/") != PATH:
            return _text(start_response, "404 Not Found", f"not found; the metrics are at {PATH}")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", f"{PATH} answers GET only",
                         [("Allow", "GET, HEAD")])
        try:
            body, content_type = render(bench)
        except (BgcoreError, RedisError) as exc:
            logger.error("/metrics failed: %s", exc)
            return _text(start_response, "503 Service Unavailable", f"metrics unavailable: {exc}")
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]

    return app


def _text(start_response: StartResponse, status: str, message: str,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = (message + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *(headers or [])])
    return [body]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
        logger.debug("%s %s", self.address_string(), format % args)


def serve(bench: Bench, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve ``/metrics`` on ``host:port`` until interrupted; ``ready(url)`` once it listens."""
    password = check_listen(bench, host, port)
    host = host.strip().strip("[]")
    server_class = _Server6 if ":" in host else _Server
    try:
        server = make_server(host, port, metrics_app(bench, password), server_class=server_class,
                             handler_class=_QuietHandler)
    except OSError as exc:
        raise InvalidArgument(f"bgcore metrics cannot listen on {host}:{port} ({exc.strerror or exc}); "
                              "choose another --port or --host") from None
    shown = f"[{host}]" if ":" in host else host
    try:
        if ready is not None:
            ready(f"http://{shown}:{server.server_port}{PATH}")
        server.serve_forever()
    finally:
        server.server_close()
