"""The queues of a bench: ``short``, ``default``, ``long`` and custom ones.

Custom queues come from ``common_site_config.json``::

    "workers": {"myqueue": {"timeout": 5000, "background_workers": 4}}

A queue's ``group`` puts it in one worker pool with the other queues of that
group (``bgcore worker --queue short,default``): see :func:`worker_pools`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bgcore.errors import ConfigError, UnknownQueue
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
    group: str | None = None  # workers.<queue>.group: the pool it shares with the group's other queues


@dataclass(frozen=True)
class WorkerPool:
    """One worker pool a bench runs: its name, the queues it consumes (priority order) and its horses."""

    name: str
    queues: tuple[QueueSpec, ...]
    size: int

    @property
    def queue_list(self) -> str:
        """The queues as ``bgcore worker --queue`` takes them: ``short,default``."""
        return ",".join(q.name for q in self.queues)

    @property
    def max_timeout(self) -> int:
        """The longest job timeout of its queues: how long its running job may take at a stop."""
        return max(q.timeout for q in self.queues)


def queue_specs(common: dict[str, Any], where: str = "common_site_config.json") -> dict[str, QueueSpec]:
    """The bench's queues by name, in priority order: defaults first, then custom ones.

    The ``workers`` key may also tune a default queue (its timeout or pool size);
    it is checked by :mod:`bgcore.config_schema` (:class:`ConfigError` naming ``where``).
    """
    from bgcore.config_schema import check_value

    specs = {name: QueueSpec(name, timeout) for name, timeout in DEFAULT_TIMEOUTS.items()}
    specs.update(check_value("workers", common.get("workers"), where))
    return specs


def _valid_name(text: str) -> bool:
    return bool(text) and all(c.isalnum() or c in "-_" for c in text)


def worker_pools(specs: dict[str, QueueSpec], where: str = "common_site_config.json") -> list[WorkerPool]:
    """The pools that serve the bench's queues, as ``bgcore start`` and ``bgcore setup`` run them.

    A queue without a ``group`` gets its own pool of ``background_workers``
    horses. Queues with the same ``group`` share one pool named after it, which
    consumes them in the bench's queue order (defaults first, then custom ones)
    and has their ``background_workers`` added up. A pool of 0 horses is left
    out. A group named like another queue's own pool is a :class:`ConfigError`.
    """
    members: dict[str, list[QueueSpec]] = {}
    for spec in specs.values():
        members.setdefault(spec.group or spec.name, []).append(spec)
    pools = []
    for name, queues in members.items():
        if len(queues) > 1 or queues[0].group is not None:
            alone = specs.get(name)
            if alone is not None and alone.group != name:
                raise ConfigError(f"{where}: workers group {name!r} has the name of queue {name!r}, "
                                  "which has a pool of its own; rename the group or put that queue in it")
        size = sum(q.background_workers for q in queues)
        if size > 0:
            pools.append(WorkerPool(name, tuple(queues), size))
    return pools


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
