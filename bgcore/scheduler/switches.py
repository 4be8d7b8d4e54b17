"""Per-site scheduler switches, kept in the site's ``site_config.json``.

Three keys, strongest first: ``maintenance_mode`` (the whole site is down for
work), ``pause_scheduler`` (a temporary hold) and ``scheduler_disabled`` (the
scheduler is off for the site). The first one that is on names why a site's
events do not run. They live in the config file because the daemon already
reads it through :meth:`Bench.site_config` (mtime-cached): checking a switch
costs one ``stat``. A switch set in ``common_site_config.json`` applies to
every site that does not override it.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from bgcore.bench import Bench, SiteConfig
from bgcore.config import SITE_CONFIG, read_json_config


class Switch(StrEnum):
    """A site switch that stops its scheduled events, by its config key."""

    MAINTENANCE = "maintenance_mode"
    PAUSED = "pause_scheduler"
    DISABLED = "scheduler_disabled"


# Strongest first: the first switch that is on is the one ``status`` names.
SWITCH_ORDER: tuple[Switch, ...] = (Switch.MAINTENANCE, Switch.PAUSED, Switch.DISABLED)


def blocking_switch(config: SiteConfig) -> Switch | None:
    """The strongest switch that stops ``config``'s site, or None when its events may run."""
    for switch in SWITCH_ORDER:
        if config.setting(switch.value):
            return switch
    return None


def set_switch(bench: Bench, site: str, switch: Switch, on: bool) -> Path:
    """Turn ``switch`` on or off in ``site``'s own ``site_config.json``; return the file.

    Turning a switch off removes the key, or writes ``false`` when the bench
    config turns it on for every site (so it is off for this one). The file is replaced atomically (write to a temporary file
    in the same directory, then ``os.replace``), so a reader never sees half a
    file; other keys are kept as they were.
    """
    bench.site_config(site)  # SiteNotFound / InvalidSiteName / ConfigError, with their messages
    path = bench.site_path(site) / SITE_CONFIG
    data = read_json_config(path, required=True)
    if on:
        data[switch.value] = True
    elif bench.settings.get(switch.value):
        data[switch.value] = False
    else:
        data.pop(switch.value, None)
    write_json_atomic(path, data)
    return path


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` by ``data`` as JSON in one atomic rename, keeping the file's indentation.

    One writer for every config edit (bgcore.site_admin.write_json_keeping_format).
    """
    from bgcore.site_admin import write_json_keeping_format

    try:
        like: str | None = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        like = None
    write_json_keeping_format(path, data, like=like)
