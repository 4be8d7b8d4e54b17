"""Site commands (owned by the database layer): new-site, migrate, jobs failed."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
