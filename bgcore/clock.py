"""The one clock of bgcore: aware UTC now.

Code that needs the time takes a ``now=`` parameter or a clock callable and
defaults to :func:`utcnow`; nothing reads a naive ``datetime.now()``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """Aware UTC now."""
    return datetime.now(timezone.utc)
