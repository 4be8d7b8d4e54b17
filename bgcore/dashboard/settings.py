"""The dashboard's bench keys: ``dashboard_host``, ``dashboard_port``, ``dashboard_password``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bgcore.bench import Bench
from bgcore.config import COMMON_CONFIG
from bgcore.errors import InvalidArgument

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8009


@dataclass(frozen=True)
class DashboardSettings:
    """Where the dashboard listens and the password its pages need (None: open, loopback only)."""

    host: str
    port: int
    password: str | None

    @classmethod
    def from_bench(cls, bench: Bench, *, host: str | None = None, port: int | None = None) -> DashboardSettings:
        """The bench's settings, ``host``/``port`` (command-line options) winning; checked.

        :class:`~bgcore.errors.InvalidConfigValue` for a bad key (checked by :mod:`bgcore.config_schema`);
        :class:`InvalidArgument` for a bad option or a non-loopback address without ``dashboard_password``.
        """
        chosen_host = host if host is not None else bench.settings.get("dashboard_host")  # checked by the schema
        chosen_port = port if port is not None else bench.settings.get("dashboard_port")
        password = bench.settings.get("dashboard_password")
        if not isinstance(chosen_host, str) or not chosen_host.strip() or any(c.isspace() for c in chosen_host.strip()):
            raise InvalidArgument(f"--host must be a host name or address such as {DEFAULT_HOST!r}, found {chosen_host!r}")
        if not 0 < chosen_port < 65536:
            raise InvalidArgument(f"--port must be a TCP port from 1 to 65535, found {chosen_port!r}")
        settings = cls(host=chosen_host.strip(), port=chosen_port, password=password)
        if password is None and not is_loopback(settings.host):
            raise InvalidArgument(
                f"the dashboard refuses to listen on {settings.host!r} without a password: set "
                f"dashboard_password in {COMMON_CONFIG} (every page, action and /metrics then need it), "
                f"or listen on 127.0.0.1")
        return settings

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only reaches this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
