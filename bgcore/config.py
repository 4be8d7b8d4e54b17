"""Reading ``common_site_config.json`` and ``site_config.json`` into one mapping.

A site's config is the bench config overlaid by its own (shallow: a key in the
site file replaces the bench's value for that key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bgcore.errors import ConfigError

COMMON_CONFIG = "common_site_config.json"
SITE_CONFIG = "site_config.json"


def read_json_config(path: Path, *, required: bool) -> dict[str, Any]:
    """Return the JSON object in ``path``.

    A missing optional file is ``{}``. Anything that is not a JSON object (bytes
    that are not UTF-8 included) raises :class:`ConfigError` naming the file,
    where in it, and the fix.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: file not found; create it with at least '{{}}'") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); check its permissions") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at line {line}, byte offset {exc.start}); "
            f"save it as UTF-8 JSON{_spared(path)}"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}; fix the file{_spared(path)}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object ({{...}}), found {type(data).__name__}")
    return data


def _spared(path: Path) -> str:
    return "" if path.name == COMMON_CONFIG else " (other sites keep working meanwhile)"


def merge(common: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Overlay a site's own keys on the bench's common keys."""
    merged = dict(common)
    merged.update(own)
    return merged
