"""Console pages on the program of ``--codes`` codes — a HOOK, not wired yet.

The console's page timings are another branch's ``bench/console_pages.py``. Once it is merged, this function calls
it; until then the workload reports "not wired" (a figure without a value), so the table says the measurement is
missing instead of leaving the row out. Wiring: the lead replaces the body of :func:`console_pages` with the call
(the arguments it has to give: ``ctx.running.base``, ``ctx.seed.token``, ``ctx.bulk_program``).
"""

from __future__ import annotations

import importlib.util

from bench.report import Figure
from bench.workloads.context import Context

#: the note of a hook not wired; tests/bench/test_smoke.py accepts a figure without a value only with it
NOT_WIRED = "hook: not wired (bench/console_pages.py is not merged yet)"


def console_pages(ctx: Context) -> list[Figure]:
    found = importlib.util.find_spec("bench.console_pages") is not None
    note = NOT_WIRED if not found else "hook: bench/console_pages.py exists; wire it in bench/workloads/console.py"
    return [Figure("console pages", ctx.adapter, None, "ms", note=note)]
