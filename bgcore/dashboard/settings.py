"""The dashboard's bench keys: ``dashboard_host``, ``dashboard_port``, ``dashboard_password``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bgcore.bench import Bench
from bgcore.config import COMMON_CONFIG
from bgcore.errors import ConfigError, InvalidArgument

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

        :class:`ConfigError` for a bad key; :class:`InvalidArgument` for a non-loopback
        address without ``dashboard_password``.
        """
        common = bench.common_config
        chosen_host = host if host is not None else common.get("dashboard_host", DEFAULT_HOST)
        chosen_port = port if port is not None else common.get("dashboard_port", DEFAULT_PORT)
        password = common.get("dashboard_password")
        if not isinstance(chosen_host, str) or not chosen_host.strip():
            raise ConfigError(f"{COMMON_CONFIG}: dashboard_host must be a host name or address, found {chosen_host!r}")
        if isinstance(chosen_port, bool) or not isinstance(chosen_port, int) or not 0 < chosen_port < 65536:
            raise ConfigError(f"{COMMON_CONFIG}: dashboard_port must be a port number (1-65535), found {chosen_port!r}")
        if password is not None and (not isinstance(password, str) or not password):
            raise ConfigError(f"{COMMON_CONFIG}: dashboard_password must be a non-empty string, found {password!r}")
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
