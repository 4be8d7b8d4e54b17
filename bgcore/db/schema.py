"""The one SQLAlchemy ``MetaData`` every bgcore table of a site database belongs to.

Tables defined here: ``document`` (every document of every doctype, as JSON
keyed by doctype and name) and ``job_log`` (failed jobs, and successful jobs
whose payload asks for a log row). Other parts (the scheduler registry) define
their tables on the same ``metadata`` in their own modules. Every time column is a
:class:`~bgcore.db.types.UTCDateTime` (UTC, microseconds, read back aware).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from bgcore.db.types import UTCDateTime

metadata = MetaData()

document = Table(
    "document",
    metadata,
    Column("doctype", String(140), primary_key=True),
    Column("name", String(140), primary_key=True),
    Column("data", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
)

job_log = Table(
    "job_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("job_id", String(255), nullable=False),
    Column("method", String(255), nullable=False),
    Column("queue", String(140), nullable=True),
    Column("status", String(20), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("exception", Text, nullable=True),
    Column("traceback", Text, nullable=True),
    Column("event", String(255), nullable=True),
    Column("attempt", Integer, nullable=True),  # 1 for a job's first run; retries count on
    Index("ix_job_log_status_ended", "status", "ended_at"),
)
