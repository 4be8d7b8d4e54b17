"""The overview's throughput chart: finished and failed jobs per minute per queue, as SVG coordinates.

The counts come from :func:`bgcore.metrics.throughput` (kept in Redis with
bounded memory, so the chart survives a restart of the dashboard); this module
only turns them into points the template draws, so no charting library and no
script is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from bgcore.bench import Bench

WIDTH, HEIGHT, MINUTES = 720, 160, 60
COLOURS = ("#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#475569")


@dataclass(frozen=True)
class Series:
    queue: str
    colour: str
    finished: str  # SVG polyline points
    failed: str
    finished_total: int
    failed_total: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    peak: int
    start: datetime | None
    series: list[Series]


def throughput_chart(bench: Bench, now: datetime) -> Chart:
    """The last hour per queue, scaled to the busiest minute of any queue."""
    from bgcore.metrics import throughput

    data = throughput(bench, minutes=MINUTES)
    peak = max([1, *(max(f, e) for points in data.values() for _, f, e in points)])
    first = next((points[0][0] for points in data.values() if points), None)
    series = []
    for index, (queue, points) in enumerate(data.items()):
        step = WIDTH / max(1, len(points) - 1)

        def line(values: list[int]) -> str:
            return " ".join(f"{i * step:.1f},{HEIGHT - v * HEIGHT / peak:.1f}" for i, v in enumerate(values))

        series.append(Series(queue=queue, colour=COLOURS[index % len(COLOURS)],
                             finished=line([f for _, f, _ in points]), failed=line([e for _, _, e in points]),
                             finished_total=sum(f for _, f, _ in points), failed_total=sum(e for _, _, e in points)))
    start = datetime.fromtimestamp(first, timezone.utc) if first is not None else None
    return Chart(width=WIDTH, height=HEIGHT, peak=peak, start=start, series=series)
