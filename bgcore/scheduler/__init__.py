"""The scheduler: scheduler_events from hooks.py, the registry, and the daemon."""
