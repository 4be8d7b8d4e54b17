"""The worker engine's bench config keys, read together (declared and checked in :mod:`bgcore.config_schema`).

``max_jobs_per_horse``, ``max_horse_memory_mb``, ``worker_heartbeat_seconds``,
``shutdown_grace_seconds``, ``max_payload_bytes``, ``max_result_bytes``: their
types, ranges, defaults and meanings are in the one schema.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgcore.bench import Bench
from bgcore.config_schema import SETTINGS

_KEYS = ("max_jobs_per_horse", "max_horse_memory_mb", "worker_heartbeat_seconds", "shutdown_grace_seconds",
         "max_payload_bytes", "max_result_bytes")
DEFAULTS: dict[str, float] = {key: SETTINGS[key].default for key in _KEYS}  # types and ranges: the schema


@dataclass(frozen=True)
class EngineSettings:
    max_jobs_per_horse: int
    max_horse_memory_mb: int
    worker_heartbeat_seconds: float
    shutdown_grace_seconds: float
    max_payload_bytes: int = 2**20
    max_result_bytes: int = 2**20

    @property
    def registration_ttl(self) -> int:
        """Seconds a horse's registration lives without a heartbeat (two heartbeats, at least 1 s).

        A pool renews it every heartbeat and looks for dead workers every heartbeat, so a
        dead worker's job is found within three heartbeats.
        """
        return max(1, round(2 * self.worker_heartbeat_seconds))

    @classmethod
    def from_bench(cls, bench: Bench) -> EngineSettings:
        """The settings in ``common_site_config.json`` (checked by :mod:`bgcore.config_schema`), or
        :class:`~bgcore.errors.InvalidConfigValue` naming the file, the key and the value."""
        settings = bench.settings
        return cls(**{key: settings.get(key) for key in DEFAULTS})

    @classmethod
    def of(cls, bench: Bench) -> EngineSettings:
        """:meth:`from_bench`, checked once per version of ``common_site_config.json`` (the enqueue hot path)."""
        common = bench.common_config
        cached = bench.__dict__.get("_engine_settings")
        if cached is None or cached[0] is not common:
            cached = bench.__dict__["_engine_settings"] = (common, cls.from_bench(bench))
        return cached[1]

