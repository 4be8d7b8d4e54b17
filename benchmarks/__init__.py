"""Measurements of bgcore against plain RQ; run them with ``python -m benchmarks``.

These are measurements, not tests: they print numbers and targets and always
exit 0 when they ran (a missed target is marked ``MISSED`` in the output).
"""
