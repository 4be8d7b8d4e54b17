"""The worker engine's bench config keys, read and checked in one place.

| key | default | meaning |
|---|---|---|
| ``max_jobs_per_horse`` | 5000 | a work-horse exits after this many jobs; the pool forks a fresh one |
| ``max_horse_memory_mb`` | 1024 | a work-horse whose RSS is over this after a job is replaced |
| ``worker_heartbeat_seconds`` | 5 | how often a pool renews its horses' registrations (they lapse after 2x) |
| ``shutdown_grace_seconds`` | 30 | on SIGTERM, how long running jobs may take to finish before a cold stop |
| ``max_payload_bytes`` | 1 MiB | ``enqueue`` refuses a job whose serialised call is larger |
| ``max_result_bytes`` | 1 MiB | a larger result is stored truncated, with a note saying so |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bgcore.bench import Bench
from bgcore.errors import ConfigError

DEFAULTS: dict[str, float] = {
    "max_jobs_per_horse": 5000,
    "max_horse_memory_mb": 1024,
    "worker_heartbeat_seconds": 5,
    "shutdown_grace_seconds": 30,
    "max_payload_bytes": 2**20,
    "max_result_bytes": 2**20,
}
_MINIMUM = {"max_jobs_per_horse": 1, "max_horse_memory_mb": 16, "worker_heartbeat_seconds": 0.1,
            "shutdown_grace_seconds": 0, "max_payload_bytes": 1024, "max_result_bytes": 1024}
_INTEGER = {"max_jobs_per_horse", "max_horse_memory_mb", "max_payload_bytes", "max_result_bytes"}
_MAXIMUM = 10**9


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
        """The settings in ``common_site_config.json``, or :class:`ConfigError` naming the key and value."""
        common = bench.common_config
        values = {key: _checked(bench, key, common.get(key, default)) for key, default in DEFAULTS.items()}
        return cls(
            max_jobs_per_horse=int(values["max_jobs_per_horse"]),
            max_horse_memory_mb=int(values["max_horse_memory_mb"]),
            worker_heartbeat_seconds=float(values["worker_heartbeat_seconds"]),
            shutdown_grace_seconds=float(values["shutdown_grace_seconds"]),
            max_payload_bytes=int(values["max_payload_bytes"]),
            max_result_bytes=int(values["max_result_bytes"]),
        )

    @classmethod
    def of(cls, bench: Bench) -> EngineSettings:
        """:meth:`from_bench`, checked once per version of ``common_site_config.json`` (the enqueue hot path)."""
        common = bench.common_config
        cached = bench.__dict__.get("_engine_settings")
        if cached is None or cached[0] is not common:
            cached = bench.__dict__["_engine_settings"] = (common, cls.from_bench(bench))
        return cached[1]


def _checked(bench: Bench, key: str, value: Any) -> float:
    integer = key in _INTEGER
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok_type or isinstance(value, bool) or not (_MINIMUM[key] <= value <= _MAXIMUM):
        kind = "an integer" if integer else "a number"
        raise ConfigError(
            f"{bench.sites_path / 'common_site_config.json'}: {key} must be {kind} from {_MINIMUM[key]:g} to "
            f"{_MAXIMUM:g}, found {value!r} (default {DEFAULTS[key]:g})"
        )
    return float(value)
