"""bgcore's worker engine: a prefork pool of long-lived work-horses on a lean, fair Redis protocol.

* :mod:`bgcore.engine.broker` — the take/finish protocol (one Lua script per step);
* :mod:`bgcore.engine.lifecycle` — a job's life and its hook points (:class:`Middleware`);
* :mod:`bgcore.engine.middleware` — bgcore's own middleware (site, job log, transaction, timeout);
* :mod:`bgcore.engine.horse` — one work-horse's loop;
* :mod:`bgcore.engine.pool` — the parent that forks, supervises and replaces horses.

docs/engine.md describes the key layout and the protocol.
"""

from bgcore.engine.lifecycle import JobRun, LostJob, Middleware, RetryDecision

__all__ = ["JobRun", "LostJob", "Middleware", "RetryDecision"]
