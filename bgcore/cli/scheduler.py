"""Scheduler commands (owned by the scheduler daemon work)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
