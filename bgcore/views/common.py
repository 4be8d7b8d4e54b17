"""Small decoders shared by the read models: bytes to text, RQ's times, a job hash's payload."""

from __future__ import annotations

import json
import zlib
from base64 import b64decode
from datetime import datetime, timezone
from typing import Any

UTC = timezone.utc


def text(value: Any) -> str | None:
    """Redis bytes (or None) as text."""
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def rq_time(value: Any) -> datetime | None:
    """An RQ time field (``2026-12-02T03:04:05.123456Z``) as an aware UTC datetime, or None."""
    raw = text(value)
    if not raw:
        return None
    try:
        found = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def payload(data: Any) -> dict[str, Any]:
    """The keyword arguments of ``execute_job`` in RQ's compressed ``data`` field (``{}`` if not bgcore's)."""
    try:
        _func, _instance, _args, kwargs = json.loads(zlib.decompress(data or b""))
    except Exception:  # noqa: BLE001 - a job another program wrote
        return {}
    return kwargs if isinstance(kwargs, dict) else {}


def exc_string(entry_fields: dict[Any, Any]) -> str | None:
    """The traceback text of an RQ ``Result`` stream entry, or None."""
    raw = entry_fields.get(b"exc_string") or entry_fields.get("exc_string")
    if not raw:
        return None
    try:
        return zlib.decompress(b64decode(raw)).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - written by another RQ version: show it as it is
        return text(raw)


def last_line(message: str | None) -> str | None:
    """The last non-blank line of a traceback: the exception and its message."""
    if not message:
        return None
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None
