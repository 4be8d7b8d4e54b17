"""``scheduler_events`` of an app's ``hooks.py``: loading, validation, and the event specs.

:func:`load_app_hooks` reads ``<app>/hooks.py`` afresh from disk every time
(the file may have changed since the process started) and executes it in a
private namespace; it never touches ``sys.modules['<app>.hooks']``.
:func:`parse_scheduler_events` turns the ``scheduler_events`` dict into
:class:`EventSpec` records and reports every problem at once in one
:class:`~bgcore.errors.HooksError`.
"""

from __future__ import annotations

import builtins
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgcore.errors import HooksError, InvalidCron, UnknownMethod
from bgcore.methods import ALWAYS_ALLOWED, app_of, method_path, resolve
from bgcore.queues import QueueSpec
from bgcore.scheduler.due import FREQUENCY_CRON, normalize_cron

logger = logging.getLogger(__name__)

Problem = Callable[[str, Any, str], None]

LONG_SUFFIX = "_long"
CRON_KEYS = ("cron", "cron_long")
FREQUENCY_KEYS = ("all", *FREQUENCY_CRON)
EVENT_KEYS: tuple[str, ...] = (
    *FREQUENCY_KEYS,
    *(f"{key}{LONG_SUFFIX}" for key in FREQUENCY_CRON),
    *CRON_KEYS,
)
DEFAULT_QUEUE = "default"
LONG_QUEUE = "long"


@dataclass(frozen=True)
class EventSpec:
    """One scheduled method of one app, as declared in ``scheduler_events``.

    ``frequency`` is the hooks key (``all``, ``hourly``, ``daily_long``,
    ``cron``, ``cron_long``, ...); ``cron`` is the normalized 5-field
    expression (``None`` for ``all``, which runs on every tick); ``queue`` is
    ``long`` for the ``_long`` keys and ``default`` otherwise.
    """

    app: str
    method: str
    frequency: str
    cron: str | None
    queue: str

    @property
    def event_id(self) -> str:
        """A stable id of ``[0-9a-f]`` (32 chars) from app, method, frequency and cron."""
        text = "\x1f".join((self.app, self.method, self.frequency, self.cron or ""))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class AppHooks:
    """The ``hooks.py`` of one app as read from disk."""

    app: str
    path: Path
    fingerprint: str
    scheduler_events: dict[str, Any]


def hooks_fingerprint(path: Path) -> str:
    """The sha256 (hex) of the bytes of ``path``."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hooks_path(app: str) -> Path:
    """The ``hooks.py`` of package ``app``, or :class:`HooksError` saying why there is none."""
    try:
        spec = importlib.util.find_spec(app)
        if spec is None:  # maybe created after the import system cached the directory listing
            importlib.invalidate_caches()
            spec = importlib.util.find_spec(app)
    except (ImportError, ValueError) as exc:
        raise HooksError(f"app {app!r}: cannot be imported ({exc}); check installed_apps and apps_path") from None
    if spec is None or not spec.submodule_search_locations:
        raise HooksError(
            f"app {app!r}: no package named {app!r} on the import path; check installed_apps in the "
            "site's site_config.json and apps_path in sites/common_site_config.json"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "hooks.py"
        if candidate.is_file():
            return candidate
    where = next(iter(spec.submodule_search_locations))
    raise HooksError(f"app {app!r}: {where}/hooks.py does not exist; create it (it may be empty)")


def load_app_hooks(app: str) -> AppHooks:
    """Read and execute ``<app>/hooks.py`` afresh; raise :class:`HooksError` naming app and file.

    A syntax error is reported with its line; an exception raised while the
    file runs is reported with the line of ``hooks.py`` it came from.
    """
    path = hooks_path(app)
    source = path.read_bytes()
    namespace: dict[str, Any] = {
        "__name__": f"{app}.hooks",
        "__file__": str(path),
        "__package__": app,
        "__builtins__": builtins,
    }
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise HooksError(
            f"app {app!r}, file {path}, line {exc.lineno}: syntax error: {exc.msg}; fix the file and run "
            "bgcore migrate again"
        ) from None
    except ValueError as exc:  # e.g. null bytes in the file
        raise HooksError(f"app {app!r}, file {path}: cannot be compiled ({exc}); fix the file") from None
    try:
        exec(code, namespace)  # noqa: S102 - hooks.py is the app's own configuration code
    except Exception as exc:
        line = _line_in(exc, str(path))
        raise HooksError(
            f"app {app!r}, file {path}{line}: running hooks.py raised {type(exc).__name__}: {exc}; "
            "fix the file and run bgcore migrate again"
        ) from None
    events = namespace.get("scheduler_events", {})
    if not isinstance(events, dict):
        raise HooksError(
            f"app {app!r}, file {path}, key scheduler_events, value {events!r}: must be a dict like "
            "{'daily': ['app.module.function']}"
        )
    return AppHooks(app=app, path=path, fingerprint=hashlib.sha256(source).hexdigest(), scheduler_events=events)


def _line_in(exc: BaseException, filename: str) -> str:
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == filename]
    return f", line {lines[-1]}" if lines else ""


def parse_scheduler_events(
    app: str, path: Path, scheduler_events: Mapping[str, Any], queues: Mapping[str, QueueSpec]
) -> list[EventSpec]:
    """The events declared by ``scheduler_events`` of ``app`` (read from ``path``).

    Raises :class:`HooksError` listing every problem (unknown key with a
    did-you-mean, invalid cron, method that does not import, a value of the
    wrong type, a queue the bench lacks), each naming app, file, key and value.
    A method listed twice under one key yields one event.
    """
    importlib.invalidate_caches()  # app modules may be newer than the import system's directory cache
    problems: list[str] = []
    specs: dict[str, EventSpec] = {}

    def problem(key: str, value: Any, what: str) -> None:
        problems.append(f"app {app!r}, file {path}, key {key!r}, value {value!r}: {what}")

    if not isinstance(scheduler_events, Mapping):
        problem("scheduler_events", scheduler_events, "must be a dict like {'daily': ['app.module.function']}")
        raise HooksError(problems)
    for key, value in scheduler_events.items():
        if key not in EVENT_KEYS:
            hint = difflib.get_close_matches(str(key), EVENT_KEYS, n=1)
            did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
            problem(key, value, f"unknown key; {did_you_mean}valid keys are: {', '.join(EVENT_KEYS)}")
            continue
        queue = LONG_QUEUE if key.endswith(LONG_SUFFIX) else DEFAULT_QUEUE
        if queue not in queues:
            problem(key, value, f"the bench has no queue {queue!r}; add it under 'workers' in common_site_config.json")
            continue
        if key in CRON_KEYS:
            for expr, cron, methods in _cron_entries(key, value, problem):
                _add_methods(app, key, cron, queue, methods, specs, problem, f"{key}[{expr!r}]")
        else:
            fixed = FREQUENCY_CRON.get(key.removesuffix(LONG_SUFFIX))
            _add_methods(app, key, fixed, queue, value, specs, problem, key)
    if problems:
        raise HooksError(problems)
    return list(specs.values())


def _cron_entries(key: str, value: Any, problem: Problem) -> Iterable[tuple[str, str, Any]]:
    """``(expression as written, normalized expression, methods)`` of a ``cron`` dict."""
    if not isinstance(value, Mapping):
        problem(key, value, "must be a dict of cron expression -> list of methods, like {'*/5 * * * *': ['app.tasks.f']}")
        return
    for expr, methods in value.items():
        try:
            yield expr, normalize_cron(expr), methods
        except InvalidCron as exc:
            problem(f"{key}[{expr!r}]", methods, str(exc))


def _add_methods(
    app: str, key: str, cron: str | None, queue: str, methods: Any,
    specs: dict[str, EventSpec], problem: Problem, where: str,
) -> None:
    if isinstance(methods, str) or not isinstance(methods, (list, tuple)):
        fix = f"wrap it in a list: [{methods!r}]" if isinstance(methods, str) else "use a list of dotted method paths"
        problem(where, methods, f"must be a list of method paths; {fix}")
        return
    for method in methods:
        try:
            path = method_path(method) if isinstance(method, str) else None
            if path is None:
                raise UnknownMethod(f"{method!r} is not a dotted path string like 'app.module.function'")
            function = resolve(path)
        except UnknownMethod as exc:
            problem(where, method, then(str(exc), "Fix the path or define the function"))
            continue
        required = _required_arguments(function)
        if required:
            problem(where, method, f"{path} needs arguments ({', '.join(required)}) but scheduled methods are "
                                   "called without any; give them defaults or schedule a wrapper that takes none")
            continue
        spec = EventSpec(app=app, method=path, frequency=key, cron=cron, queue=queue)
        if spec.event_id in specs:
            logger.warning("app=%s key=%s lists %s twice; it is scheduled once", app, where, path)
        specs[spec.event_id] = spec


def _required_arguments(function: Any) -> list[str]:
    """Parameters ``function`` cannot be called without (none when its signature is unknown)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def then(text: str, advice: str) -> str:
    """``text`` followed by the sentence ``advice``, with one stop between them (never "?." or "..")."""
    text = text.rstrip()
    return f"{text} {advice}" if text.endswith((".", "?", "!")) else f"{text}. {advice}"


@dataclass(frozen=True)
class SiteEvents:
    """Every event of a site's installed apps, with the hooks files they came from."""

    events: tuple[EventSpec, ...]
    hooks: tuple[AppHooks, ...]


def load_site_events(site: str, apps: Sequence[str], queues: Mapping[str, QueueSpec]) -> SiteEvents:
    """Load and validate the hooks of every app in ``apps`` (the site's installed apps).

    The apps must be importable (the bench's import path active). Raises one
    :class:`HooksError` naming ``site`` and listing the problems of all apps,
    including methods of apps that are not installed on the site.
    """
    problems: list[str] = []
    events: list[EventSpec] = []
    loaded: list[AppHooks] = []
    for app in apps:
        try:
            hooks = load_app_hooks(app)
            specs = parse_scheduler_events(app, hooks.path, hooks.scheduler_events, queues)
        except HooksError as exc:
            problems.extend(exc.problems)
            continue
        loaded.append(hooks)
        for spec in specs:
            owner = app_of(spec.method)
            if owner not in apps and owner not in ALWAYS_ALLOWED:
                problems.append(
                    f"app {app!r}, file {hooks.path}, key {spec.frequency!r}, value {spec.method!r}: app "
                    f"{owner!r} is not installed on site {site!r}; install it or remove the entry"
                )
            else:
                events.append(spec)
    if problems:
        raise HooksError(problems, site=site)
    return SiteEvents(events=tuple(events), hooks=tuple(loaded))
