"""The queues of a bench: ``short``, ``default``, ``long`` and custom ones.

Custom queues come from ``common_site_config.json``::

    "workers": {"myqueue": {"timeout": 5000, "background_workers": 4}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bgcore.errors import UnknownQueue
from bgcore.retry import Retry

DEFAULT_TIMEOUTS: dict[str, int] = {"short": 300, "default": 300, "long": 1500}
DEFAULT_WORKERS = 1


@dataclass(frozen=True)
class QueueSpec:
    """One queue of a bench: its name, default job timeout and worker pool size."""

    name: str
    timeout: int
    background_workers: int = DEFAULT_WORKERS
    retry: Retry | None = None  # the queue's default retry policy (workers.<queue>.retry)


def queue_specs(common: dict[str, Any], where: str = "common_site_config.json") -> dict[str, QueueSpec]:
    """The bench's queues by name, in priority order: defaults first, then custom ones.

    The ``workers`` key may also tune a default queue (its timeout or pool size);
    it is checked by :mod:`bgcore.config_schema` (:class:`ConfigError` naming ``where``).
    """
    from bgcore.config_schema import check_value

    specs = {name: QueueSpec(name, timeout) for name, timeout in DEFAULT_TIMEOUTS.items()}
    specs.update(check_value("workers", common.get("workers"), where))
    return specs


def check_queue(specs: dict[str, QueueSpec], name: str) -> QueueSpec:
    """The spec of queue ``name``, or :class:`UnknownQueue` listing the valid ones."""
    try:
        return specs[name]
    except KeyError:
        valid = ", ".join(specs)
        raise UnknownQueue(
            f"unknown queue {name!r}; valid queues are: {valid} "
            "(add custom ones under 'workers' in sites/common_site_config.json)"
        ) from None


def parse_queue_list(specs: dict[str, QueueSpec], text: str | None) -> list[QueueSpec]:
    """Parse ``--queue a,b`` into specs in that priority order; ``None`` means every queue.

    An empty or blank list (``""``, ``" , "``) or an empty name in it (``"a,,b"``)
    raises :class:`UnknownQueue`: it never silently means every queue.
    """
    if text is None:
        return list(specs.values())
    names = [part.strip() for part in text.split(",")]
    if not any(names):
        raise UnknownQueue(f"--queue {text!r} names no queue; name one or more of: {', '.join(specs)} "
                           "(or leave --queue out to consume every queue)")
    if not all(names):
        raise UnknownQueue(f"--queue {text!r} has an empty queue name; separate names by single commas, "
                           f"e.g. {','.join(list(specs)[:2])}")
    return [check_queue(specs, name) for name in dict.fromkeys(names)]
