"""Stale hooks: an app's ``hooks.py`` that changed since the last ``bgcore migrate``.

Changes to ``hooks.py`` take effect only at ``bgcore migrate`` (it stores
each app's file fingerprint in the site's registry). Until then the scheduler
keeps using the old registry and says so: :class:`HooksWatcher` (a watchdog
observer) reports edits to the daemon, which logs one WARNING per app and
content; :func:`stale_hooks` gives the same answer to ``bgcore doctor``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from bgcore.bench import Bench
from bgcore.errors import BgcoreError
from bgcore.scheduler.events import hooks_fingerprint, hooks_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StaleHooks:
    """An app whose ``hooks.py`` (``path``) differs from what ``sites`` last migrated."""

    app: str
    path: Path
    sites: tuple[str, ...]

    def message(self) -> str:
        sites = ", ".join(self.sites)
        return (f"hooks of app {self.app!r} changed since the last migrate ({self.path}); sites {sites} "
                f"still run the old scheduler events: run 'bgcore migrate' to apply the change")


def find_stale(
    paths: Mapping[str, Path], current: Mapping[str, str | None], stored: Mapping[str, Mapping[str, str]],
    installed: Mapping[str, Iterable[str]],
) -> list[StaleHooks]:
    """Pure comparison: per app, the sites whose stored fingerprint differs from ``current``.

    ``current`` maps app -> fingerprint of its hooks file now (None: unreadable);
    ``stored`` maps site -> app -> fingerprint at its last migrate;
    ``installed`` maps site -> its installed apps. An installed app missing
    from a site's stored fingerprints counts as stale (never migrated).
    """
    found: list[StaleHooks] = []
    for app in sorted(current):
        now = current[app]
        if now is None or app not in paths:
            continue
        sites = tuple(sorted(site for site, apps in installed.items()
                             if app in apps and site in stored and stored[site].get(app) != now))
        if sites:
            found.append(StaleHooks(app, paths[app], sites))
    return found


def current_fingerprints(apps: Iterable[str]) -> tuple[dict[str, Path], dict[str, str | None]]:
    """Each app's hooks path and the fingerprint of its content now (None when unreadable)."""
    paths: dict[str, Path] = {}
    prints: dict[str, str | None] = {}
    for app in apps:
        try:
            path = hooks_path(app)
            paths[app] = path
            prints[app] = hooks_fingerprint(path)
        except (BgcoreError, OSError):
            prints[app] = None
    return paths, prints


def stale_hooks(bench: Bench) -> list[StaleHooks]:
    """Every app whose ``hooks.py`` changed since some site's last migrate (for ``bgcore doctor``).

    Opens each site's database once; sites whose registry cannot be read
    (never migrated, database down) are left out -- doctor reports those itself.
    """
    from bgcore.scheduler.loader import read_registry

    bench.activate_import_path()
    stored: dict[str, dict[str, str]] = {}
    installed: dict[str, tuple[str, ...]] = {}
    for site in bench.site_names():
        try:
            config = bench.site_config(site)
            installed[site] = config.installed_apps
            stored[site] = read_registry(bench, config)[1]
        except BgcoreError as exc:
            logger.debug("stale hooks: site skipped site=%s: %s", site, exc)
    apps = {app for site in stored for app in installed.get(site, ())}
    paths, prints = current_fingerprints(apps)
    return find_stale(paths, prints, stored, installed)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: HooksWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self._watcher.notice(Path(str(raw)))


class HooksWatcher:
    """Watches ``hooks.py`` files; :meth:`changed` hands the edited ones to the daemon's loop."""

    def __init__(self) -> None:
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._files: set[Path] = set()
        self._dirs: set[Path] = set()
        self._changed: set[Path] = set()
        self._lock = threading.Lock()

    def watch(self, paths: Iterable[Path]) -> None:
        """Also watch these hooks files (their directories are scheduled once each)."""
        for path in paths:
            path = Path(path).resolve()
            self._files.add(path)
            if path.parent in self._dirs:
                continue
            if self._observer is None:
                self._observer = Observer()
                self._observer.daemon = True
                self._observer.start()
            self._observer.schedule(_Handler(self), str(path.parent), recursive=False)
            self._dirs.add(path.parent)

    def notice(self, path: Path) -> None:
        """Called from the observer thread for every file event in a watched directory."""
        try:
            resolved = path.resolve()
        except OSError:
            return
        if resolved in self._files:
            with self._lock:
                self._changed.add(resolved)

    def changed(self) -> set[Path]:
        """The watched files touched since the last call (empties the set)."""
        with self._lock:
            found, self._changed = self._changed, set()
        return found

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
