"""``python -m benchmarks``: the job benchmark, then the scheduler one if it exists.

Options (``--jobs``, ``--drain-jobs``, ``--rounds``) go to the job benchmark;
see ``python -m benchmarks --help``. The scheduler benchmark
(``benchmarks/scheduler.py``, written separately) runs with its own defaults.
"""

from __future__ import annotations

import importlib
import inspect
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any


def _scheduler_main() -> Callable[..., Any] | None:
    """``benchmarks.scheduler.main``, or ``None`` when that module does not exist (yet)."""
    try:
        module = importlib.import_module("benchmarks.scheduler")
    except ModuleNotFoundError as exc:
        if exc.name == "benchmarks.scheduler":
            return None
        raise
    main = getattr(module, "main", None)
    if not callable(main):
        raise SystemExit("benchmarks/scheduler.py has no main() to run")
    return main  # type: ignore[no-any-return]


def _call_main(main: Callable[..., Any], argv: list[str]) -> None:
    """Call ``main(argv)`` if it takes an argument list, else ``main()`` with a bare ``sys.argv``."""
    try:
        takes_argv = bool(inspect.signature(main).parameters)
    except (TypeError, ValueError):
        takes_argv = False
    if takes_argv:
        result = main(argv)
    else:
        saved = sys.argv
        sys.argv = [saved[0], *argv]
        try:
            result = main()
        finally:
            sys.argv = saved
    if result not in (None, 0):
        print(f"(benchmark returned {result!r})")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks import jobs

    args = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM unwinds like Ctrl-C, so every benchmark stops the servers it started.
    signal.signal(signal.SIGTERM, _interrupt)
    jobs.main(args)
    print()
    scheduler = _scheduler_main()
    if scheduler is None:
        print("scheduler benchmark: skipped (benchmarks/scheduler.py does not exist yet)")
    else:
        try:
            _call_main(scheduler, [])
        except SystemExit as exc:
            if exc.code not in (None, 0):
                print(f"(scheduler benchmark exited with {exc.code!r})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
