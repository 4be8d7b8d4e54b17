"""JSON job payloads: checked at enqueue time, never pickled.

Job arguments must be JSON values (str, int, float, bool, None, lists and
dicts with string keys; finite numbers only). A value that is not fails at enqueue time with the
path of the offending argument, e.g. ``kwargs['items'][2]``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bgcore.errors import SerializationError

_SCALARS = (str, int, float, bool, type(None))


def _find_bad(value: Any, where: str) -> tuple[str, Any] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find_bad(item, f"{where}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} key {key!r}", key
            found = _find_bad(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    return where, value


def check_json(kwargs: dict[str, Any], method: str) -> None:
    """Raise :class:`SerializationError` naming the first argument that is not JSON."""
    if not kwargs:
        return
    try:
        json.dumps(kwargs, allow_nan=False)
        if all(type(k) is str for k in kwargs):
            return
    except (TypeError, ValueError):
        pass
    for name, value in kwargs.items():
        found = _find_bad(value, name)
        if found:
            where, bad = found
            raise SerializationError(
                f"argument {where} of {method} cannot be serialised as JSON "
                f"({type(bad).__name__}: {bad!r:.80}); pass JSON values (str, number, bool, None, "
                "list, dict with str keys), e.g. a document name instead of the document"
            )
    raise SerializationError(f"the arguments of {method} cannot be serialised as JSON")
