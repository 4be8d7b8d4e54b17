"""Column types shared by every table of a site database.

:class:`UTCDateTime` is the one way bgcore stores a point in time: as UTC with
microseconds on every dialect (``timestamptz`` on PostgreSQL, ``DATETIME(6)``
on MariaDB/MySQL, ISO text on SQLite), always read back as an aware UTC
``datetime``. Showing a time in a site's zone is the CLI's job, not storage's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

from bgcore.errors import InvalidArgument

UTC = timezone.utc
FRACTION_DIGITS = 6  # microseconds; MariaDB's DATETIME keeps none unless asked


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware datetime stored as UTC with microseconds; read back aware UTC on every dialect."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):  # keep microseconds (DATETIME drops them)
            return dialect.type_descriptor(mysql.DATETIME(fsp=FRACTION_DIGITS))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise InvalidArgument(f"{value!r} is a naive datetime; site databases store aware times only")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name in ("sqlite", "mysql", "mariadb") else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def lacks_fraction(dialect: Dialect, reflected: Any) -> bool:
    """Whether a reflected column type is a MariaDB/MySQL DATETIME that drops microseconds."""
    if dialect.name not in ("mysql", "mariadb"):
        return False
    return isinstance(reflected, mysql.DATETIME) and (reflected.fsp or 0) < FRACTION_DIGITS
