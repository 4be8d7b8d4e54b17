"""The one SQLAlchemy ``MetaData`` every bgcore table of a site database belongs to."""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData()
