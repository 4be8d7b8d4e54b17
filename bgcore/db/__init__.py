"""Site databases (filled in by the database layer)."""
