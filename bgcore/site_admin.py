"""A bench's and its sites' lifecycle: ``init``, ``install-app``, ``uninstall-app``, ``drop-site``.

Config files are edited atomically (temporary file, then ``os.replace``) with
their JSON formatting kept (indent and key order). Dropping a site removes
everything of that site and nothing of another, even one whose name starts
the same: every key and job id carries the site behind an exact separator.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgcore import keys
from bgcore.bench import Bench
from bgcore.config import COMMON_CONFIG, SITE_CONFIG
from bgcore.errors import BgcoreError, InvalidArgument, SiteExists, UnknownApp
from bgcore.migrate import MigrateReport, migrate_site

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DropReport:
    """What dropping a site removed."""

    site: str
    queued_jobs: int
    redis_keys: int
    database_dropped: bool


def init_bench(path: Path) -> Path:
    """Create a bench at ``path``: ``sites/``, ``sites/common_site_config.json``, ``apps/``; return the bench dir.

    Refuses a directory that already holds a bench.
    """
    path = Path(path).resolve()
    if (path / "sites").exists():
        raise SiteExists(f"{path} already holds a bench (it has sites/); use it with --bench {path}")
    (path / "sites").mkdir(parents=True)
    (path / "apps").mkdir(exist_ok=True)
    write_json_keeping_format(path / "sites" / COMMON_CONFIG, {"apps_path": ["apps"]})
    return path


def _indent_of(text: str) -> int | str | None:
    """The indent a JSON file uses (2 by default; None when it is all on one line)."""
    match = re.search(r"\n([ \t]+)\S", text)
    if match:
        unit = match.group(1)
        return unit if "\t" in unit else len(unit)
    return None if text.strip() and "\n" not in text.strip() else 2


def write_json_keeping_format(path: Path, data: dict[str, Any], *, like: str | None = None) -> None:
    """Replace ``path`` by ``data`` in one atomic rename, indented as ``like`` (the file's old text) was."""
    indent = _indent_of(like) if like is not None else 2
    text = json.dumps(data, indent=indent) + ("\n" if like is None or like.endswith("\n") else "")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_app(bench: Bench, app: str) -> None:
    """Refuse ``app`` unless it imports and has a ``hooks.py``."""
    bench.activate_import_path()
    try:
        found = importlib.util.find_spec(app)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UnknownApp(f"app {app!r} does not import; put it on the bench's apps_path "
                         "(sites/common_site_config.json) or install it in the virtualenv")
    try:
        hooks = importlib.util.find_spec(f"{app}.hooks")
    except (ImportError, ValueError):
        hooks = None
    if hooks is None:
        raise UnknownApp(f"{app!r} imports but has no hooks.py, so it is not an app; add {app}/hooks.py")


def _edit_apps(bench: Bench, site: str, change: Any) -> tuple[Path, str]:
    """Apply ``change(apps) -> apps`` to ``site``'s installed_apps; return the file and its old text."""
    bench.site_config(site)
    path = bench.site_path(site) / SITE_CONFIG
    old = path.read_text(encoding="utf-8")
    data = json.loads(old)
    data["installed_apps"] = change(list(data.get("installed_apps", [])))
    write_json_keeping_format(path, data, like=old)
    return path, old


def _migrate_or_restore(bench: Bench, site: str, path: Path, old: str) -> MigrateReport:
    try:
        return migrate_site(bench, site)
    except BgcoreError:
        write_json_keeping_format(path, json.loads(old), like=old)  # the site keeps working as it was
        raise


def install_app(bench: Bench, site: str, app: str) -> MigrateReport:
    """Add ``app`` to ``site``'s installed_apps and migrate the site (the file is restored if migrate fails)."""
    check_app(bench, app)
    if app in bench.site_config(site).installed_apps:
        raise InvalidArgument(f"app {app!r} is already installed on site {site!r}")
    path, old = _edit_apps(bench, site, lambda apps: [*apps, app])
    return _migrate_or_restore(bench, site, path, old)


def uninstall_app(bench: Bench, site: str, app: str) -> MigrateReport:
    """Remove ``app`` from ``site``'s installed_apps and migrate the site (its events leave the registry)."""
    installed = bench.site_config(site).installed_apps
    if app not in installed:
        raise InvalidArgument(f"app {app!r} is not installed on site {site!r} "
                              f"(installed_apps: {', '.join(installed) or 'none'})")
    path, old = _edit_apps(bench, site, lambda apps: [a for a in apps if a != app])
    return _migrate_or_restore(bench, site, path, old)


def drop_site(bench: Bench, site: str, *, drop_db: bool = False, db_root_url: str | None = None) -> DropReport:
    """Remove ``site``: its queued and failed/finished jobs, its Redis keys and scheduler state, its directory,
    and with ``drop_db`` its PostgreSQL/MariaDB database (a SQLite file goes with the directory)."""
    from bgcore.db.engines import ENGINES, site_url
    from bgcore.db.provision import drop_database
    from bgcore.jobs import purge_jobs

    config = bench.site_config(site)
    url = site_url(config)
    queued = purge_jobs(bench, site).removed
    removed = _drop_redis_state(bench, site)
    ENGINES.dispose_all()
    dropped = False
    if drop_db and url.get_backend_name() != "sqlite":
        dropped = drop_database(site, url.render_as_string(hide_password=False), db_root_url)
    shutil.rmtree(bench.site_path(site))
    logger.info("dropped site=%s", site)
    return DropReport(site=site, queued_jobs=queued, redis_keys=removed, database_dropped=dropped)


def _drop_redis_state(bench: Bench, site: str) -> int:
    """Delete ``site``'s own keys (``bgcore:<b>:site:<site>:*``), its scheduler error, and its jobs in RQ's registries."""
    redis = bench.redis()
    names = list(redis.scan_iter(match=keys.site_key(bench.bench_id, site, "*"), count=500))
    prefix = keys.site_job_prefix(site)
    with redis.pipeline(transaction=False) as pipe:
        for queue in bench.queues:
            rq_name = keys.queue_name(bench.bench_id, queue)
            for registry in (keys.finished_registry(rq_name), keys.failed_registry(rq_name),
                             keys.started_registry(rq_name)):
                for entry in redis.zrange(registry, 0, -1):
                    text = entry.decode() if isinstance(entry, bytes) else str(entry)
                    if text.startswith(prefix):
                        rq_id = text.split(":", 1)[0]
                        pipe.zrem(registry, entry)
                        names.extend([keys.rq_job(rq_id), keys.rq_results(rq_id)])
        if names:
            pipe.delete(*names)
        pipe.hdel(keys.scheduler_site_errors(bench.bench_id), site)
        pipe.execute()
    return len(names)
