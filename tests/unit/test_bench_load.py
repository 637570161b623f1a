"""The bench's load clients read back right: h2load's per-request log and summary (output
captured from h2load 1.52), and bench/h1load.py sending each prepared request exactly once over
real HTTP."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from bench.h1load import http_request, run
from bench.h2load import grpc_frame, parse_data_bytes, parse_log

SUMMARY = """finished in 4.00s, 2073.33 req/s, 161.79KB/s
requests: 6220 total, 6220 started, 6220 done, 6220 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 6220 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 485.38KB (497033) total, 24.54KB (25134) headers (space savings 96.21%), \
191.67KB (196272) data
"""


def test_parse_log_counts_2xx_and_takes_percentiles_from_the_rows() -> None:
    rows = [f"1796311550{n:06d}\t200\t{(n + 1) * 1000}" for n in range(100)]
    rows += ["1796311550999999\t-1\t5000", "1796311550999998\t503\t700", ""]
    result = parse_log(
        "\n".join(rows), seconds=2.0, data_bytes=1000, client_cpu=1.8, client_wall=2.0
    )
    assert (result.succeeded, result.failed) == (100, 2)
    assert result.rate == 50.0
    assert (result.p50_ms, result.p99_ms) == (51.0, 100.0)
    assert result.bytes_per_answer() == 1000 / 102
    assert result.client_bound  # 90 % of a core
    assert not parse_log("", seconds=1, data_bytes=None, client_cpu=0.1, client_wall=2).client_bound


def test_data_bytes_come_from_the_traffic_line() -> None:
    assert parse_data_bytes(SUMMARY) == 196272
    assert parse_data_bytes("requests: 0 total") is None


def test_grpc_frame_is_the_uncompressed_length_prefixed_message() -> None:
    assert grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"


async def test_h1load_sends_each_request_once_and_stops_when_they_run_out() -> None:
    seen: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(json.loads(await request.read())["n"])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/x", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    requests = [
        http_request("127.0.0.1", "/v1/x", {"X-N": str(n)}, json.dumps({"n": n}).encode())
        for n in range(50)
    ]
    try:
        with pytest.raises(RuntimeError, match="ran out of requests"):
            # Far longer than 50 requests take: the run ends because they run out.
            await run("127.0.0.1", port, requests, 4, seconds=600, warm_up=0)
    finally:
        await runner.cleanup()
    assert sorted(seen) == list(range(50))
