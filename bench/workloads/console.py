"""Console pages on the program of ``--codes`` codes the import workload filled (issue 8: every page under
300 ms with a program of a million codes): ``bench/console_pages.py``'s page list, asked of the running server
signed in with the run's admin token. The figure is the slowest page's median; each page's median is in
``extra``."""

from __future__ import annotations

import asyncio
import statistics

from bench.console_pages import page_times
from bench.report import Figure, Target
from bench.workloads.context import Context
from promocodes.store import open_store

TARGET = Target("value", "<=", 300)


async def _a_code(url: str, program_id: int) -> str:
    """A code of the program, for the code page."""
    store = open_store(url)
    await store.open()
    try:
        page = await store.export_page(program_id, 0, 1)
    finally:
        await store.close()
    if not page:
        raise RuntimeError(f"program {program_id} holds no code")
    return page[0].code


def console_pages(ctx: Context) -> list[Figure]:
    if ctx.bulk_program is None:
        raise RuntimeError("the console workload needs the import workload's program")
    code = asyncio.run(_a_code(ctx.url, ctx.bulk_program))
    requests = 3 if ctx.options.quick else 9
    times = page_times(ctx.running.base, ctx.seed.token, ctx.bulk_program, code, requests)
    medians = {name: round(statistics.median(values), 1) for name, values in times.items()}
    slowest = max(medians, key=medians.__getitem__)
    figure = Figure(
        "console pages", ctx.adapter, medians[slowest], "ms", target=TARGET, note=f"slowest: {slowest}", extra=medians
    )
    return [figure.settle()]
