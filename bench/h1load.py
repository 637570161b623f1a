"""An HTTP/1.1 load client for requests that must differ one from another, which h2load cannot
send (it repeats one body and one set of headers): the edge's createTgPayment makes a new order
only for a new user or new fields, and the user is the signed `X-Tg-InitData` header.

`python -m bench.h1load HOST PORT REQUESTS CONNECTIONS SECONDS WARM_UP LOG_FILE`: REQUESTS is a
file of ready HTTP/1.1 requests (`write_requests`), each sent once, in order, over CONNECTIONS
keep-alive connections (one request in flight on each); the requests answered in the SECONDS
after WARM_UP are written to LOG_FILE in h2load's `--log-file` format, so bench/h2load.py reads
both clients alike. Running out of requests before the end is an error (a replayed request would
not be a new order). The work per request is one write and two reads of prebuilt bytes, so its
CPU stays far below the servers' it drives; `run_load` reports it all the same.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench import uvloop_setting
from portex_pay.cli import run_loop


def http_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def write_requests(file: Path, requests: list[bytes]) -> None:
    """One JSON string (latin-1 text of the bytes) a line."""
    file.write_text("".join(json.dumps(r.decode("latin-1")) + "\n" for r in requests))


def _read_requests(file: Path) -> list[bytes]:
    return [json.loads(line).encode("latin-1") for line in file.read_text().splitlines()]


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")


async def _connection(
    host: str, port: int, requests: Iterator[bytes], measured: tuple[float, float], rows: list[str]
) -> bool:
    """Sends requests one after another until the end of the measured period; False when the
    requests ran out first."""
    start, end = measured
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (sent := time.perf_counter()) < end:
            request = next(requests, None)
            if request is None:
                return False
            epoch = time.time()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(head))
            if sent >= start:
                elapsed = int((time.perf_counter() - sent) * 1e6)
                rows.append(f"{int(epoch * 1e6)}\t{int(head[9:12])}\t{elapsed}\n")
        return True
    finally:
        writer.close()


async def run(
    host: str, port: int, requests: list[bytes], connections: int, seconds: float, warm_up: float
) -> list[str]:
    """The log rows of the requests answered in the measured period."""
    remaining = iter(requests)
    now = time.perf_counter()
    measured = (now + warm_up, now + warm_up + seconds)
    rows: list[str] = []
    lasted = await asyncio.gather(
        *(_connection(host, port, remaining, measured, rows) for _ in range(connections))
    )
    if not all(lasted):
        raise RuntimeError("ran out of requests before the end of the run")
    return rows


def main(argv: list[str]) -> None:
    host, port, requests_file, connections = argv[0], int(argv[1]), Path(argv[2]), int(argv[3])
    seconds, warm_up, log_file = float(argv[4]), float(argv[5]), Path(argv[6])
    requests = _read_requests(requests_file)
    rows = run_loop(
        run(host, port, requests, connections, seconds, warm_up), uvloop=uvloop_setting()
    )
    log_file.write_text("".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
