"""The program page's charts (docs/console.md#one-program), computed here and drawn by the template as inline SVG:
no script, no style attribute (the Content-Security-Policy allows neither), one SVG element per point or bar with a
``<title>`` (what a pointer or a screen reader gets) and ``data-*`` attributes, and a table of the same figures.

The figures come from the program's per-day counters (``ProgramService.history``) and its statistics: nothing
here reads codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from promocodes.models import ProgramHistory
from promocodes.schemas import Stats

WIDTH = 720
HEIGHT = 220
LEFT = 48  # room for the value axis' labels
RIGHT = 8
TOP = 10
BOTTOM = 26  # room for the first and last day under the axis
PLOT_WIDTH = WIDTH - LEFT - RIGHT
PLOT_HEIGHT = HEIGHT - TOP - BOTTOM
FUNNEL_HEIGHT = 3 * 34
FUNNEL_LEFT = 230  # room for "activated 1000000 (100.0%)" left of the funnel's bars


@dataclass(frozen=True, slots=True)
class Bar:
    series: str
    day: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Point:
    day: str
    value: int
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the funnel: its name, its count and the bar's width (a share of the total's)."""

    name: str
    value: int
    share: float
    width: float
    y: float


@dataclass(frozen=True, slots=True)
class Day:
    """One row of the table the charts are drawn from."""

    day: str
    created: int
    attached: int
    activated: int
    not_attached: int


@dataclass(frozen=True, slots=True)
class Charts:
    width: int
    height: int
    plot: tuple[int, int, int, int]  # left, top, right, bottom of the plotting area
    days: list[Day]
    bars: list[Bar]
    bar_top: int  # the value at the top of the bar chart's axis
    points: list[Point]
    line: str  # the pool's polyline, as SVG `points`
    pool_top: int
    funnel: list[Step]
    funnel_height: int
    funnel_left: int

    # The per-day elements as markup, made here: a year of them is over a thousand elements, and escaping each of
    # their values in the template costs more than the rest of the page. Every value in them is a number, an ISO
    # date or a series name of this module — nothing that comes from a request or the database as text.

    @property
    def bar_marks(self) -> Markup:
        return Markup(
            "\n".join(
                f'<rect class="{b.series}" x="{b.x}" y="{b.y}" width="{b.width}" height="{b.height}" '
                f'data-point="{b.series}" data-day="{b.day}" data-value="{b.value}">'
                f"<title>{b.day}: {b.value} {b.series}</title></rect>"
                for b in self.bars
            )
        )

    @property
    def point_marks(self) -> Markup:
        return Markup(
            "\n".join(
                f'<circle class="free" cx="{p.x}" cy="{p.y}" r="3" data-point="free" data-day="{p.day}" '
                f'data-value="{p.value}"><title>{p.day}: {p.value} not attached</title></circle>'
                for p in self.points
            )
        )

    @property
    def table_rows(self) -> Markup:
        return Markup(
            "\n".join(
                f'<tr><th scope="row">{d.day}</th><td>{d.created}</td><td>{d.attached}</td><td>{d.activated}</td>'
                f"<td>{d.not_attached}</td></tr>"
                for d in self.days
            )
        )


def _scale_top(largest: int) -> int:
    """A round value at or above ``largest`` for the top of an axis: 1, 2 or 5 times a power of ten."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if magnitude * step >= largest:
                return magnitude * step
        magnitude *= 10


def _y(value: int, top: int) -> float:
    return round(TOP + PLOT_HEIGHT - PLOT_HEIGHT * value / top, 2)


def charts(stats: Stats, history: ProgramHistory) -> Charts:
    """The three charts of a program over the days of ``history``:

    - codes attached and activated each day (first bindings and first activations: a code detached and bound
      again counts again; docs/console.md#one-program);
    - the codes not attached at the end of each day — the free pool before expiry, which the counters do not
      date (the figures above the charts give today's free count, expiry applied);
    - the funnel: total → attached → activated, from the program's statistics.
    """
    rows: list[Day] = []
    created = history.before.created
    bound = history.before.attached - history.before.detached
    for day in history.days:
        created += day.created
        bound += day.attached - day.detached
        rows.append(Day(day.day.isoformat(), day.created, day.attached, day.activated, created - bound))
    count = len(rows)
    slot = PLOT_WIDTH / count
    bar_top = _scale_top(max([1, *(max(row.attached, row.activated) for row in rows)]))
    bars: list[Bar] = []
    for index, row in enumerate(rows):
        for offset, series, value in ((0.1, "attached", row.attached), (0.5, "activated", row.activated)):
            y = _y(value, bar_top)
            x = round(LEFT + slot * (index + offset), 2)
            bars.append(Bar(series, row.day, value, x, y, round(slot * 0.4, 2), round(TOP + PLOT_HEIGHT - y, 2)))
    pool_top = _scale_top(max([1, *(row.not_attached for row in rows)]))
    points = [
        Point(row.day, row.not_attached, round(LEFT + slot * (index + 0.5), 2), _y(row.not_attached, pool_top))
        for index, row in enumerate(rows)
    ]
    total = stats.total
    steps = [("total", total), ("attached", stats.attached), ("activated", stats.activated)]
    funnel = [
        Step(
            name,
            value,
            round(100 * value / total, 1) if total else 0.0,
            round((WIDTH - RIGHT - FUNNEL_LEFT) * value / total, 2) if total else 0.0,
            index * 34 + 4,
        )
        for index, (name, value) in enumerate(steps)
    ]
    return Charts(
        width=WIDTH,
        height=HEIGHT,
        plot=(LEFT, TOP, WIDTH - RIGHT, TOP + PLOT_HEIGHT),
        days=rows,
        bars=bars,
        bar_top=bar_top,
        points=points,
        line=" ".join(f"{point.x},{point.y}" for point in points),
        pool_top=pool_top,
        funnel=funnel,
        funnel_height=FUNNEL_HEIGHT,
        funnel_left=FUNNEL_LEFT,
    )
