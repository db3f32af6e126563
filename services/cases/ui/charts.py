"""Bar charts drawn on the server as SVG: no chart JavaScript, the same picture on a phone, and in
right-to-left pages time runs from right to left as the page reads. The template draws the bars
this module places; the numbers are also in a table beside each chart (screen readers, copying).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

WIDTH, HEIGHT = 600, 160  # the viewBox; the SVG scales to its box
BASELINE = 140  # y of the axis: the labels go below it
TOP = 12  # room above the tallest bar for its number


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str  # the period, as the page writes it
    tick: bool  # whether the period is written under the axis


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    highest: int
    width: int = WIDTH
    height: int = HEIGHT
    baseline: int = BASELINE


def bar_chart(
    points: Sequence[tuple[date, int]],
    name: Callable[[date], str],
    *,
    right_to_left: bool = False,
    ticks: int = 6,
) -> Chart:
    """Bars for ``points`` (period start, value), oldest first in reading order."""
    highest = max((value for _start, value in points), default=0)
    count = max(1, len(points))
    slot = WIDTH / count
    every = max(1, round(count / ticks))
    bars = []
    for index, (start, value) in enumerate(points):
        place = count - 1 - index if right_to_left else index
        height = 0.0 if highest == 0 else (BASELINE - TOP) * value / highest
        bars.append(
            Bar(
                x=round(place * slot + slot * 0.15, 2),
                y=round(BASELINE - height, 2),
                width=round(slot * 0.7, 2),
                height=round(height, 2),
                value=value,
                label=name(start),
                tick=index % every == 0,
            )
        )
    return Chart(bars, highest)
