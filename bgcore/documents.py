"""Documents: records of app-declared doctypes, stored in the current site's database.

An app declares its doctypes in ``hooks.py``::

    doctypes = {"ToDo": "myapp.todo.ToDo"}   # doctype -> controller class path

A controller subclasses :class:`Document`; its public methods are what
``enqueue_doc`` may call. Every document lives in the generic ``document``
table keyed by (doctype, name), its fields as JSON, in the site's current
transaction (``bgcore.db``).
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import uuid
from datetime import datetime, timezone
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bgcore.context import current
from bgcore.db.schema import document
from bgcore.enqueue import enqueue
from bgcore.errors import (
    ConfigError,
    DocumentExists,
    DocumentMethodNotFound,
    DocumentNotFound,
    InvalidArgument,
    UnknownDoctype,
)
from bgcore.methods import argument_problem, resolve

logger = logging.getLogger(__name__)

NAME_LENGTH = 140  # the width of document.name


class Document:
    """A document of one doctype: a ``name`` and a dict of JSON-serialisable ``fields``."""

    doctype: str = ""

    def __init__(self, name: str, fields: dict[str, Any] | None = None, *, is_new: bool = True) -> None:
        self.name = name
        self.fields: dict[str, Any] = dict(fields or {})
        self.is_new = is_new

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.fields[key] = value

    def validate(self) -> None:
        """Controller hook, called by :meth:`save` before writing; raise to refuse the save."""

    def save(self) -> Document:
        """Insert (new) or update this document in the current site's transaction."""
        self.validate()
        data = json.dumps(self.fields, sort_keys=True)
        now = datetime.now(timezone.utc)
        session = current().db
        if self.is_new:
            try:
                with session.connection().begin_nested():
                    session.execute(sa.insert(document).values(
                        doctype=self.doctype, name=self.name, data=data, created_at=now, modified_at=now))
            except sa.exc.IntegrityError:
                raise DocumentExists(
                    f"site {session.site!r}: {self.doctype} {self.name!r} already exists; "
                    "load it with get_doc() to change it, or choose another name"
                ) from None
            self.is_new = False
        else:
            result = session.execute(
                sa.update(document).where(_key(self.doctype, self.name)).values(data=data, modified_at=now))
            if result.rowcount == 0:
                raise _not_found(session.site, self.doctype, self.name)
        return self

    def delete(self) -> None:
        """Delete this document in the current site's transaction."""
        session = current().db
        result = session.execute(sa.delete(document).where(_key(self.doctype, self.name)))
        if result.rowcount == 0:
            raise _not_found(session.site, self.doctype, self.name)

    def __repr__(self) -> str:
        return f"<{self.doctype} {self.name!r}>"


def _key(doctype: str, name: str) -> Any:
    return sa.and_(document.c.doctype == doctype, document.c.name == name)


def _not_found(site: str, doctype: str, name: str) -> DocumentNotFound:
    return DocumentNotFound(f"site {site!r}: {doctype} {name!r} not found; it was never saved or was deleted")


def doctypes() -> dict[str, str]:
    """Doctype -> controller path, from the ``hooks.py`` of every app installed on the current site."""
    found: dict[str, str] = {}
    for app in current().config.installed_apps:
        try:
            hooks = importlib.import_module(f"{app}.hooks")
        except ModuleNotFoundError:
            continue
        declared = getattr(hooks, "doctypes", {})
        if not isinstance(declared, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in declared.items()):
            raise ConfigError(
                f"app {app!r}: 'doctypes' in {getattr(hooks, '__file__', app + '/hooks.py')} must map "
                f"doctype names to controller class paths, e.g. {{\"ToDo\": \"{app}.todo.ToDo\"}}"
            )
        found.update(declared)
    return found


def controller(doctype: str) -> type[Document]:
    """The controller class of ``doctype`` on the current site, or :class:`UnknownDoctype`."""
    ctx = current()
    known = doctypes()
    path = known.get(doctype)
    if path is None:
        raise UnknownDoctype(
            f"site {ctx.site!r}: unknown doctype {doctype!r}; doctypes of its installed apps "
            f"({', '.join(ctx.config.installed_apps) or 'none'}): {', '.join(sorted(known)) or 'none'}; "
            "declare it in an app's hooks.py 'doctypes' and install that app on the site"
        )
    cls = resolve(path)
    if not (isinstance(cls, type) and issubclass(cls, Document)):
        raise UnknownDoctype(f"doctype {doctype!r}: {path} is not a subclass of bgcore.documents.Document")
    return cls


def new_doc(doctype: str, name: str | None = None, **fields: Any) -> Document:
    """A new, unsaved document of ``doctype`` (name defaults to a random hex id)."""
    if name is not None and (not isinstance(name, str) or not name or len(name) > NAME_LENGTH):
        raise InvalidArgument(f"{doctype} name {name!r} is not valid: use 1-{NAME_LENGTH} characters")
    doc = controller(doctype)(name or uuid.uuid4().hex, fields, is_new=True)
    doc.doctype = doctype
    return doc


def get_doc(doctype: str, name: str) -> Document:
    """Load ``doctype`` ``name`` fresh from the current site's database."""
    cls = controller(doctype)
    session = current().db
    row = session.execute(sa.select(document.c.data).where(_key(doctype, name))).first()
    if row is None:
        raise _not_found(session.site, doctype, name)
    doc = cls(name, json.loads(row.data), is_new=False)
    doc.doctype = doctype
    return doc


def doc_method(doc: Document, method: str) -> Callable[..., Any]:
    """The public controller method ``method`` of ``doc``, or :class:`DocumentMethodNotFound`."""
    target = getattr(type(doc), method, None) if not method.startswith("_") else None
    if target is None or not callable(target) or method in _BASE_METHODS:
        public = sorted(n for n in dir(type(doc)) if not n.startswith("_") and n not in _BASE_METHODS
                        and callable(getattr(type(doc), n)))
        raise DocumentMethodNotFound(
            f"site {current().site!r}: {doc.doctype} controller {type(doc).__module__}.{type(doc).__name__} "
            f"has no public method {method!r} (its methods: {', '.join(public) or 'none'})"
        )
    return getattr(doc, method)  # type: ignore[no-any-return]


# Field accessors and the validate hook are not jobs; save() and delete() may be.
_BASE_METHODS = frozenset({"get", "set", "validate"})


def run_doc_method(doctype: str, name: str, method: str, kwargs: dict[str, Any]) -> Any:
    """The job of :func:`enqueue_doc`: load the document fresh and call its method."""
    doc = get_doc(doctype, name)
    return doc_method(doc, method)(**kwargs)


def enqueue_doc(
    doctype: str,
    name: str,
    method: str,
    queue: str = "default",
    timeout: int | None = None,
    now: bool = False,
    job_name: str | None = None,
    enqueue_after_commit: bool = False,
    at_front: bool = False,
    *,
    job_id: str | None = None,
    deduplicate: bool = False,
    job_kwargs: dict[str, Any] | None = None,
    retry: Any = None,
    **kwargs: Any,
) -> Any:
    """Enqueue ``get_doc(doctype, name).method(**kwargs)`` in the current site.

    Takes the options of :func:`bgcore.enqueue` with the same meaning (``now``,
    ``job_name``, ``enqueue_after_commit``, ``at_front``, ``job_id``,
    ``deduplicate``, ``retry``); they are never passed to the controller method.
    ``job_kwargs`` passes method arguments whose names collide with them.
    The worker loads the document fresh and calls the method inside the job's
    transaction. ``timeout`` falls back to the queue's timeout. An unknown
    doctype or method, or arguments the method cannot take, are refused here
    already (:class:`InvalidArgument` names the offending keyword); a document
    missing at run time fails the job with a recorded error. ``job_name``
    defaults to ``"<doctype> <name>.<method>"``. Returns the RQ job (with
    ``now=True``, the method's result).
    """
    if job_kwargs:
        kwargs = {**kwargs, **job_kwargs}
    probe = controller(doctype)(name)
    probe.doctype = doctype
    _check_arguments(doctype, method, doc_method(probe, method), kwargs)
    return enqueue(
        run_doc_method, queue=queue, timeout=timeout, now=now,
        job_name=job_name or f"{doctype} {name}.{method}",
        enqueue_after_commit=enqueue_after_commit, at_front=at_front, job_id=job_id, deduplicate=deduplicate,
        retry=retry, job_kwargs={"doctype": doctype, "name": name, "method": method, "kwargs": kwargs})


def _check_arguments(doctype: str, method: str, bound: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Fail at enqueue time, not in the worker, when the controller method refuses ``kwargs``."""
    try:
        signature = inspect.signature(bound)
    except (TypeError, ValueError):  # no signature to check: the worker will tell
        return
    problem = argument_problem(signature, kwargs)
    if problem is not None:
        takes = ", ".join(signature.parameters) or "no arguments"
        raise InvalidArgument(
            f"site {current().site!r}: {doctype}.{method}({takes}) cannot take these arguments: {problem}; "
            "fix the keyword, or pass names that collide with enqueue's options through job_kwargs="
        )
