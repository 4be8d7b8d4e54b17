"""A bench: a directory holding ``sites/``, and the sites inside it.

A :class:`Bench` is passed explicitly wherever it is needed; nothing here is a
module-global. It caches parsed config files by modification time, so a
long-running worker or scheduler sees edits without a restart and without
re-parsing unchanged files.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bgcore.config import COMMON_CONFIG, SITE_CONFIG, merge, read_json_config
from bgcore.config_schema import BenchSettings, SiteSettings, check_file
from bgcore.errors import BenchNotFound, InvalidSiteName, SiteNotFound
from bgcore.queues import DEFAULT_TIMEOUTS, QueueSpec

BENCH_ENV = "BGCORE_BENCH"
STATE_DIR = ".bgcore"
ALL_SITES = "all"  # what --site all means: every site of the bench (so no site may be named "all")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_SITE_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def validate_site_name(name: str) -> str:
    """Return ``name`` if it is host-like (``a.example.com``); else raise :class:`InvalidSiteName`.

    Refuses anything that could leave ``sites/``: empty names, ``.``/``..``,
    path separators, hidden names and names over 253 characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidSiteName("site name is empty; pass a host-like name such as 'a.example.com'")
    if len(name) > 253 or not _SITE_NAME.match(name):
        raise InvalidSiteName(
            f"invalid site name {name!r}: a site name is host-like (letters, digits, '-', '_' "
            "and dots between labels, e.g. 'a.example.com'); names with '/', '..' or a leading "
            "'.' are refused because they could leave sites/"
        )
    return name


@dataclass(frozen=True)
class SiteConfig:
    """The merged config of one site (bench keys overlaid by the site's own).

    ``get`` gives a raw value (apps may keep their own keys here); :meth:`setting`
    the checked, typed value of a key of :mod:`bgcore.config_schema`.
    """

    name: str
    path: Path
    data: Mapping[str, Any] = field(repr=False)  # read-only: one SiteConfig serves many jobs
    own: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)  # the site's file alone
    bench_settings: BenchSettings | None = field(default=None, repr=False, compare=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @cached_property
    def settings(self) -> SiteSettings:
        """The site's keys checked against the schema (once per version of its files), over the bench's."""
        own = self.own if self.own is not None else self.data
        return SiteSettings(check_file(own, str(self.path / SITE_CONFIG), bench=False), self.bench_settings)

    def setting(self, key: str) -> Any:
        """The typed value of ``key`` for this site; :class:`~bgcore.errors.InvalidConfigValue` if it is wrong."""
        return self.settings.get(key)

    @cached_property
    def installed_apps(self) -> tuple[str, ...]:
        apps: tuple[str, ...] = self.setting("installed_apps")
        return apps


class Bench:
    """A bench directory: its common config, its sites and its queues."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        self.sites_path = self.path / "sites"
        if not self.sites_path.is_dir():
            raise BenchNotFound(
                f"{self.path} is not a bench: it has no sites/ directory; pass the bench directory "
                f"(bench=... to bgcore.connect or Bench.find) or set ${BENCH_ENV}",
                path=self.path,
            )
        self._cache: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}
        # site -> (its directory, its site_config.json), validated once
        self._site_files: dict[str, tuple[Path, Path]] = {}
        # site -> (its own parsed file, the common parsed file, the merged SiteConfig)
        self._site_configs: dict[str, tuple[dict[str, Any], dict[str, Any], SiteConfig]] = {}
        self._redis: Any = None
        self._queues: tuple[dict[str, Any], dict[str, QueueSpec]] | None = None
        self._settings: tuple[dict[str, Any], BenchSettings] | None = None
        self._import_path_done = False

    @classmethod
    def find(cls, path: str | os.PathLike[str] | None = None) -> Bench:
        """The bench at ``path``, else ``$BGCORE_BENCH``, else the current directory."""
        return cls(path or os.environ.get(BENCH_ENV) or os.getcwd())

    # -- config -------------------------------------------------------------
    def _read(self, path: Path, *, required: bool) -> dict[str, Any]:
        try:
            info = path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = (-1, -1)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        data = read_json_config(path, required=required)
        self._cache[path] = (stamp, data)
        return data

    @property
    def common_config(self) -> dict[str, Any]:
        """The parsed ``sites/common_site_config.json`` (``{}`` when absent)."""
        return self._read(self.sites_path / COMMON_CONFIG, required=False)

    @property
    def bench_id(self) -> str:
        """The namespace of this bench in Redis.

        ``bench_id`` in the common config, else a short hash of the bench path.
        Hosts that serve one bench from several machines must set the same
        ``bench_id`` explicitly.
        """
        configured = self.settings.get("bench_id")
        if configured:
            return str(configured)
        return "bench-" + hashlib.sha1(str(self.path).encode()).hexdigest()[:10]

    @property
    def settings(self) -> BenchSettings:
        """``common_site_config.json`` checked against the schema; checked again only when the file changed."""
        common = self.common_config
        if self._settings is None or self._settings[0] is not common:
            self._settings = (common, BenchSettings.of(common, str(self.sites_path / COMMON_CONFIG)))
        return self._settings[1]

    @property
    def queues(self) -> dict[str, QueueSpec]:
        """The bench's queues (defaults, then ``workers``); rebuilt only when ``common_site_config.json`` changed."""
        common = self.common_config
        if self._queues is None or self._queues[0] is not common:
            specs = {name: QueueSpec(name, timeout) for name, timeout in DEFAULT_TIMEOUTS.items()}
            specs.update(self.settings.get("workers"))
            self._queues = (common, specs)
        return self._queues[1]

    @property
    def state_path(self) -> Path:
        """Runtime state of bgcore itself (embedded Redis, pid files); never committed."""
        return self.path / STATE_DIR

    # -- sites --------------------------------------------------------------
    def site_names(self) -> list[str]:
        """Every site on the bench: valid names of directories with a ``site_config.json``."""
        names = []
        with os.scandir(self.sites_path) as entries:  # plain strings: 10,000 sites are listed in tens of ms
            for entry in entries:
                if entry.name.startswith(".") or not _SITE_NAME.match(entry.name):
                    continue
                if os.path.isfile(os.path.join(entry.path, SITE_CONFIG)):
                    names.append(entry.name)
        return sorted(names)

    def sites_named(self, site: str) -> list[str]:
        """``--site`` as a list of sites: every site of the bench for ``all``, else the one named.

        The one named must exist (:class:`SiteNotFound` lists the bench's sites otherwise).
        """
        if site == ALL_SITES:
            return self.site_names()
        self.site_config(site)
        return [site]

    def misnamed_sites(self) -> list[str]:
        """Directories with a ``site_config.json`` whose names are not valid site names (never served)."""
        return sorted(
            entry.name for entry in self.sites_path.iterdir()
            if not entry.name.startswith(".") and (entry / SITE_CONFIG).is_file() and not _SITE_NAME.match(entry.name)
        )

    def site_path(self, name: str) -> Path:
        """The directory of site ``name`` (validated; it may not exist yet)."""
        return self.sites_path / validate_site_name(name)

    def site_config(self, name: str) -> SiteConfig:
        """The merged config of site ``name``.

        Raises :class:`SiteNotFound` for an unknown site and :class:`ConfigError`
        for a broken config file; neither affects other sites.
        """
        files = self._site_files.get(name)
        if files is None:
            path = self.site_path(name)
            files = self._site_files[name] = (path, path / SITE_CONFIG)
        path, config_file = files
        if not config_file.is_file():
            known = ", ".join(self.site_names()) or "none"
            raise SiteNotFound(
                f"unknown site {name!r}: {config_file} does not exist (sites on this bench: {known})"
            )
        own = self._read(config_file, required=True)
        common = self.common_config
        cached = self._site_configs.get(name)
        if cached is not None and cached[0] is own and cached[1] is common:
            return cached[2]  # neither file changed: the same (read-only) config
        config = SiteConfig(name=name, path=path, data=MappingProxyType(merge(common, own)),
                            own=MappingProxyType(own), bench_settings=self.settings)
        self._site_configs[name] = (own, common, config)
        return config

    # -- apps ---------------------------------------------------------------
    def activate_import_path(self) -> None:
        """Put the bench's ``apps_path`` directories on ``sys.path`` (once)."""
        if self._import_path_done:
            return
        for entry in self.settings.get("apps_path"):
            directory = str((self.path / entry).resolve())
            if directory not in sys.path:
                sys.path.insert(0, directory)
        self._import_path_done = True

    # -- redis --------------------------------------------------------------
    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's Redis client and what was built on it (the child opens its own)."""
        self._redis = None
        self.__dict__.pop("_rq_queues", None)
        self.__dict__.pop("_broker", None)

    def redis(self) -> Any:
        """The bench's Redis connection (one per Bench object, created on first use)."""
        if self._redis is None:
            from bgcore.connection import connect

            self._redis = connect(self)
        return self._redis
