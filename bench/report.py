"""The figures of a run: one table (rich) and the same as JSON under ``bench/results/<timestamp>-<host>.json``.

A :class:`Figure` is one workload on one database: what the server did, what the baseline did in the same run,
their ratio, the target the issue sets (docs/performance.md#what-is-measured) and whether it was met. A workload
that could not be measured (a tool missing, a timeout, an error) is a figure with ``value`` None and the reason in
``note``, so the table always lists every workload.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
TIMES = "\u00d7"  # the multiplication sign


@dataclass(frozen=True)
class Target:
    """``ratio`` or ``value`` must be ``>=`` or ``<=`` ``bound``."""

    on: str
    op: str
    bound: float

    def met(self, figure: Figure) -> bool | None:
        actual = figure.ratio if self.on == "ratio" else figure.value
        if actual is None:
            return None
        return actual >= self.bound if self.op == ">=" else actual <= self.bound

    def __str__(self) -> str:
        return f"{self.on} {self.op} {self.bound:g}"


@dataclass
class Figure:
    workload: str
    database: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_unit: str = ""
    baseline_name: str = ""
    #: figure / baseline, or baseline / figure: ``ratio_kind`` "rate" (the server's rate over the baseline's: higher is
    #: better) or "time" (the server's time over the baseline's: lower is better)
    ratio: float | None = None
    ratio_kind: str = ""
    target: Target | None = None
    met: bool | None = None
    #: CPU seconds per wall second of the load generator (or of the measured command line)
    generator_cpu: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def settle(self) -> Figure:
        if self.ratio is None and self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline
        if self.target is not None:
            self.met = self.target.met(self)
        return self


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3f}"
    return f"{shown} {unit}".strip()


def print_table(figures: list[Figure], console: Console | None = None) -> None:
    table = Table(title="promocodes benchmark (docs/performance.md)", show_lines=False)
    for column in ("workload", "db", "figure", "baseline", "ratio", "target", "met", "gen. CPU", "note"):
        table.add_column(column, overflow="fold")
    for figure in figures:
        met = {True: "[green]met[/]", False: "[red]not met[/]", None: "—"}[figure.met]
        table.add_row(
            figure.workload,
            figure.database,
            _number(figure.value, figure.unit),
            f"{_number(figure.baseline, figure.baseline_unit)} {figure.baseline_name}".strip(),
            "—" if figure.ratio is None else f"{figure.ratio:.2f}{TIMES} {figure.ratio_kind}".strip(),
            str(figure.target or "—"),
            met,
            "—" if figure.generator_cpu is None else f"{figure.generator_cpu:.0%}",
            figure.note,
        )
    (console or Console()).print(table)


def current_commit() -> str | None:
    """The checkout's commit (with ``+`` when it has changes), so a result names the code it measured."""
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def write_json(
    figures: list[Figure], options: dict[str, Any], wall: float, commit: str | None, folder: Path = RESULTS
) -> Path:
    """``<folder>/<UTC timestamp>-<host>.json``: the run's options, the machine, and every figure."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"{stamp}-{socket.gethostname()}.json"
    document = {
        "finished": stamp,
        "host": socket.gethostname(),
        "commit": commit,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "options": options,
        "wall_seconds": round(wall, 1),
        "figures": [
            {**asdict(figure), "target": None if figure.target is None else str(figure.target)} for figure in figures
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
