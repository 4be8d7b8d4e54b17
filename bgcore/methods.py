"""Method references: dotted paths to importable callables, checked per site.

A job may only call a method of an app installed on its own site, or of
bgcore itself. Lambdas, nested functions and bound methods are refused: a
worker must be able to import the method by its path.
"""

from __future__ import annotations

import difflib
import inspect
import importlib
import importlib.util
from collections.abc import Callable, Iterable
from typing import Any

from bgcore.errors import AppNotInstalled, UnknownMethod

ALWAYS_ALLOWED = ("bgcore",)


def method_path(method: Callable[..., Any] | str) -> str:
    """The dotted path of ``method`` (a callable or a path string)."""
    if isinstance(method, str):
        if not method or method.strip() != method or "." not in method:
            raise UnknownMethod(f"method {method!r} is not a dotted path like 'app.module.function'")
        return method
    module = getattr(method, "__module__", None)
    qualname = getattr(method, "__qualname__", None)
    if not callable(method) or not module or not qualname:
        raise UnknownMethod(f"{method!r} is not a function; pass a function or a dotted path string")
    if "<" in qualname or "." in qualname or module == "__main__":
        raise UnknownMethod(
            f"{module}.{qualname} cannot be imported by a worker (lambda, nested function, method "
            "or __main__); define it at module level in an app and pass it or its dotted path"
        )
    return f"{module}.{qualname}"


def app_of(path: str) -> str:
    """The app (top-level package) a method path belongs to."""
    return path.split(".", 1)[0]


def check_app_installed(path: str, site: str, installed: Iterable[str]) -> None:
    """Refuse ``path`` unless its app is installed on ``site`` (or is bgcore)."""
    app = app_of(path)
    installed = tuple(installed)
    if app in installed or app in ALWAYS_ALLOWED:
        return
    if not is_app(app):
        raise AppNotInstalled(
            f"site {site!r} cannot run {path}: a job's method must belong to an app installed on the site "
            f"(installed_apps: {', '.join(installed) or 'none'}), and {app!r} is not an app (no {app}.hooks); "
            "wrap the call in a function of one of those apps"
        )
    raise AppNotInstalled(
        f"site {site!r} cannot run {path}: app {app!r} is not installed on it "
        f"(installed_apps: {', '.join(installed) or 'none'}); add it to sites/{site}/site_config.json"
    )


def is_app(name: str) -> bool:
    """Whether ``name`` is an importable package with a ``hooks`` module (what bgcore calls an app)."""
    try:
        return importlib.util.find_spec(f"{name}.hooks") is not None
    except (ImportError, ValueError):  # not a package (os), or a broken one
        return False


def resolve(path: str) -> Callable[..., Any]:
    """Import and return the callable at ``path``, or :class:`UnknownMethod` saying why."""
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = ""
        if exc.name == app_of(path):
            hint = "; is the app on the import path ('apps_path' in sites/common_site_config.json, or installed)?"
        raise UnknownMethod(f"unknown method {path}: module {exc.name!r} cannot be imported{hint}") from None
    except Exception as exc:  # the app's own import-time error
        raise UnknownMethod(
            f"unknown method {path}: importing {module_name} failed with {type(exc).__name__}: {exc}"
        ) from exc
    target = getattr(module, attr, None)
    if target is None:
        names = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=1)
        did_you_mean = f"; did you mean {module_name}.{close[0]}?" if close else ""
        raise UnknownMethod(f"unknown method {path}: {module_name} has no {attr!r}{did_you_mean}")
    if not callable(target):
        raise UnknownMethod(f"unknown method {path}: it is a {type(target).__name__}, not a function")
    owner = getattr(target, "__module__", None) or "?"
    if app_of(owner) not in (app_of(path), *ALWAYS_ALLOWED):
        raise UnknownMethod(
            f"method {path} is {owner}.{attr}, defined outside app {app_of(path)!r}: a job may only call "
            "functions defined in its app; wrap the call in a function of the app"
        )
    return target  # type: ignore[no-any-return]


def argument_problem(signature: inspect.Signature, kwargs: dict[str, Any]) -> str | None:
    """Why ``signature`` cannot take ``kwargs`` as keyword arguments, or None when it can.

    A keyword the function does not know is named first (with a "did you mean"
    for a close parameter name), before any missing argument it explains.
    """
    params = signature.parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        known = [n for n, p in params.items() if p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        for name in kwargs:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                return f"unexpected keyword argument {name!r}{hint}"
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        return str(exc)
    return None
