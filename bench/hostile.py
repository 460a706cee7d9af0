"""The figures of hostile input, measured against a real `promocodes serve` (SQLite, one worker):

1. an XML import of 320,000 repeated `<codes>` elements (5 MB) sent without a token: seconds until the answer, and
   how long `/healthz` waits meanwhile;
2. 16 concurrent 50 MB bodies with a wrong token in the `Authorization` header: the worker's peak RSS (VmHWM);
3. `get` latency (p50, p99, max) while the same process imports 1,000,000 codes through the API.

    .venv/bin/python bench/hostile.py [--skip-xml] [--skip-rss] [--skip-import] [--codes 1000000]

Every step is bounded in time; the server is stopped at the end. Figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

PROMOCODES = [sys.executable, "-m", "promocodes"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def admin_token(url: str) -> str:
    # `token create` uses a database and never creates one: `migrate` does.
    subprocess.run([*PROMOCODES, "migrate", "--database-url", url], capture_output=True, check=True, timeout=120)
    done = subprocess.run(
        [*PROMOCODES, "token", "create", "--account", "default", "--role", "admin", "--json", "--database-url", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    import json

    return str(json.loads(done.stdout)["token"])


def worker_pids(parent: int) -> list[int]:
    """The server process and its children (uvicorn runs one worker in the same process)."""
    children = Path(f"/proc/{parent}/task/{parent}/children")
    found = [parent]
    if children.exists():
        found += [int(pid) for pid in children.read_text().split()]
    return found


def peak_rss_mb(pids: list[int]) -> float:
    peak = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
    return peak / 1024


async def xml_flood(base: str) -> tuple[float, float]:
    body = "<xml><loyalty_id>1</loyalty_id>" + "<codes>ABCDEFGH</codes>" * 320_000 + "</xml>"
    async with httpx2.AsyncClient(base_url=base, timeout=300, trust_env=False) as client:
        health: list[float] = []

        async def probe() -> None:
            while True:
                started = time.perf_counter()
                await client.get("/healthz")
                health.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)

        prober = asyncio.create_task(probe())
        started = time.perf_counter()
        answer = await client.post(
            "/api/v1.1/promocodes/import", content=body.encode(), headers={"Content-Type": "application/xml"}
        )
        took = time.perf_counter() - started
        prober.cancel()
        print(f"  answer: HTTP {answer.status_code} {answer.text[:100]}")
        return took, max(health or [0.0])


async def big_bodies(base: str, count: int, size: int) -> None:
    chunk = b"x" * (1 << 20)

    async def body() -> object:
        for _ in range(size >> 20):
            yield chunk

    async with httpx2.AsyncClient(base_url=base, timeout=300, trust_env=False) as client:

        async def one() -> str:
            try:
                answer = await client.post(
                    "/api/v1.1/promocodes/import",
                    content=body(),  # type: ignore[arg-type]
                    headers={
                        "Authorization": "Bearer pc_wrong",
                        "Content-Type": "application/json",
                        "Content-Length": str(size),
                    },
                )
                return str(answer.status_code)
            except httpx2.TransportError as error:
                return type(error).__name__  # the server closed the connection without reading the body

        outcomes = await asyncio.gather(*(one() for _ in range(count)))
        print(f"  outcomes: {sorted(set(outcomes))}")


async def get_during_import(base: str, token: str, codes: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(base_url=base, timeout=600, trust_env=False, headers=headers) as client:
        program = (await client.post("/api/v1.1/promocodes/programs/create", json={"name": "bulk"})).json()["data"]
        loyalty_id = program["id"]
        await client.post("/api/v1.1/promocodes/import", json={"loyalty_id": loyalty_id, "codes": ["PROBE-1"]})
        latencies: list[float] = []
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                started = time.perf_counter()
                answer = await client.post(
                    "/api/v1.1/promocodes/get", json={"loyalty_id": loyalty_id, "code": "PROBE-1"}
                )
                assert answer.json()["error"] == 0, answer.text
                latencies.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)

        probe = asyncio.create_task(reader())
        await asyncio.sleep(0.5)
        started = time.perf_counter()
        answer = await client.post(
            "/api/v1.1/promocodes/import",
            json={"loyalty_id": loyalty_id, "codes": [f"BULK-{index:09d}" for index in range(codes)]},
        )
        took = time.perf_counter() - started
        done.set()
        await probe
        print(f"  import of {codes:,} codes: {took:.1f} s, inserted {answer.json().get('inserted')}")
        return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--skip-xml", action="store_true")
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-import", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/hostile.db"
        token = admin_token(url)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMOCODES_")}
        env["PROMOCODES_FAILED_AUTH_LIMIT"] = "0"  # measure the body handling, not the guard in front of it
        server = subprocess.Popen(
            [*PROMOCODES, "serve", "--database-url", url, "--port", str(port), "--max-body-bytes", str(128 << 20)],
            env=env,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx2.get(f"{base}/healthz", trust_env=False).status_code == 200:
                        break
                except httpx2.TransportError:
                    time.sleep(0.1)
            if not args.skip_xml:
                print("1. XML import, 320,000 <codes> elements, no token")
                took, health = asyncio.run(xml_flood(base))
                print(f"   answered in {took:.2f} s; /healthz waited at most {health * 1000:.0f} ms meanwhile")
            if not args.skip_rss:
                before = peak_rss_mb(worker_pids(server.pid))
                print("2. 16 concurrent 50 MB bodies with a wrong header token")
                asyncio.run(big_bodies(base, 16, 50 << 20))
                after = peak_rss_mb(worker_pids(server.pid))
                print(f"   peak RSS of the server: {before:.0f} MB before, {after:.0f} MB after")
            if args.skip_import:
                return
            print(f"3. get while importing {args.codes:,} codes through the API (SQLite, same process)")
            latencies = sorted(asyncio.run(get_during_import(base, token, args.codes)))
            p99 = latencies[int(len(latencies) * 0.99) - 1]
            print(
                f"   {len(latencies)} gets: p50 {statistics.median(latencies) * 1000:.1f} ms, "
                f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
            )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)


if __name__ == "__main__":
    main()
