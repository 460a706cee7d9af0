"""What the workloads of one database share: the options, the database, the seed, the running server, and the
figures gathered so far (a later workload reads an earlier one's: the latency step offers half of get's maximum,
generate compares with the import baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.database import Seed
from bench.report import Figure
from bench.server import Server


@dataclass(frozen=True)
class Options:
    quick: bool
    seconds: float
    codes: int
    #: wrk connections of the activate steps (the issue's 1, 16, 64)
    activate_connections: tuple[int, ...]
    #: connections of the get and pool-attach steps
    connections: int
    #: server workers for the request workloads, per adapter
    workers: dict[str, int]
    #: codes per API import request
    api_batch: int
    #: API import requests
    api_requests: int
    #: worker counts of the start-up workload
    startup_workers: tuple[int, ...]


@dataclass
class Context:
    options: Options
    url: str
    adapter: str
    seed: Seed
    workdir: Path
    server: Server | None = None
    #: the program `promocodes import` filled: exported, shown in the console, then attached from
    bulk_program: int | None = None
    figures: list[Figure] = field(default_factory=list)
    _next_code: int = 1

    def take_codes(self, count: int) -> int:
        """The first of ``count`` attached codes no earlier step has used (each step redeems its own)."""
        first = self._next_code
        self._next_code += count
        if self._next_code > self.seed.attached_codes + 1:
            raise RuntimeError("the seed has too few attached codes for the steps (raise the estimate in __main__)")
        return first

    def figure(self, workload: str) -> Figure | None:
        return next((figure for figure in self.figures if figure.workload == workload), None)

    @property
    def running(self) -> Server:
        if self.server is None:
            raise RuntimeError("this workload needs the server started by the run")
        return self.server
