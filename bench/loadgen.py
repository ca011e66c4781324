"""HTTP load generator for POST /orders, run as its own process (`python -m bench.loadgen ...`).

Two modes, both over keep-alive HTTP/1.1 connections with asyncio (no third-party client):

* `open --rate R --duration D`: request i is due at t0 + i/R whatever happened before (open loop, no
  coordinated omission: latency counts from the due time). New connections are opened when all are
  busy. Writes every request (due wall time, latency, status, order_id) to `--out`.
* `closed --concurrency C --duration D`: C clients each send the next request as soon as the last one
  was answered (used for the accept path only when `wrk` is not installed). Writes a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

BODY = json.dumps(
    {"customer_email": "buyer@example.com", "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "9.99"}]}
).encode()
MAX_CONNECTIONS = 512


class StaleConnection(Exception):
    """The server closed an idle keep-alive connection before answering; safe to resend."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        try:
            await self.writer.drain()
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            partial = getattr(error, "partial", b"")
            if not partial:
                raise StaleConnection from None
            raise
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


class Client:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[Connection] = []
        self.limit = asyncio.Semaphore(MAX_CONNECTIONS)
        self.request = (
            f"POST /orders HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY

    async def post(self) -> tuple[int, bytes]:
        async with self.limit:
            for _attempt in range(3):
                connection = self.idle.pop() if self.idle else await Connection.open(self.host, self.port)
                try:
                    result = await connection.post(self.request)
                except StaleConnection:
                    connection.close()
                    continue
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    connection.close()
                    return 0, b""
                self.idle.append(connection)
                return result
            return 0, b""


def order_id_of(status: int, body: bytes) -> str | None:
    if status != 202:
        return None
    try:
        return str(json.loads(body)["order_id"])
    except (ValueError, KeyError):
        return None


async def open_loop(host: str, port: int, rate: float, duration: float) -> dict[str, Any]:
    client = Client(host, port)
    total = int(rate * duration)
    records: list[list[Any]] = [[0.0, None, 0, None] for _ in range(total)]
    loop = asyncio.get_running_loop()
    # One warm connection so the first request does not pay for the TCP handshake.
    await client.post()

    async def one(index: int, due: float, due_wall: float) -> None:
        status, body = await client.post()
        records[index] = [due_wall, loop.time() - due, status, order_id_of(status, body)]

    tasks = []
    start = loop.time()
    start_wall = time.time()
    for index in range(total):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due, start_wall + (due - start))))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    for connection in client.idle:
        connection.close()
    return {
        "mode": "open",
        "rate": rate,
        "duration": duration,
        "elapsed": elapsed,
        "sent": total,
        "records": records,
    }


async def closed_loop(host: str, port: int, concurrency: int, duration: float) -> dict[str, Any]:
    client = Client(host, port)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors = 0
    deadline = loop.time() + duration

    async def worker() -> None:
        nonlocal errors
        while loop.time() < deadline:
            began = loop.time()
            status, _ = await client.post()
            latencies.append(loop.time() - began)
            if status != 202:
                errors += 1

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = loop.time() - start
    for connection in client.idle:
        connection.close()
    latencies.sort()
    return {
        "mode": "closed",
        "concurrency": concurrency,
        "elapsed": elapsed,
        "requests": len(latencies),
        "errors": errors,
        "latencies": latencies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["open", "closed"])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    hostport = args.url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.partition(":")
    if args.mode == "open":
        result = asyncio.run(open_loop(host, int(port), args.rate, args.duration))
    else:
        result = asyncio.run(closed_loop(host, int(port), args.concurrency, args.duration))
    with open(args.out, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
