"""Load from outside Python: h2load (Debian's `nghttp2-client`, a C HTTP/2 and HTTP/1.1 load
generator) against one URL, its answers read back into a `LoadResult`.

h2load's summary gives only mean/sd/max latency, so each run writes its per-request log
(`--log-file`: start, HTTP status, microseconds; only the measured period after the warm-up) and
p50/p99 come from that. h2load counts HTTP statuses only; a gRPC error is a 200 whose trailers
carry grpc-status, answered without a DATA frame (trailers only), so a gRPC run also reports the
response bytes per answer: fewer than gRPC's 5-byte message prefix means errors came back.

The client's own CPU time (user + system, from `os.wait4` on its process) beside its wall time
says whether the client was the bottleneck: h2load runs one thread, so one busy core is its limit
("client-bound").

`grpc_frame` builds the body of a unary gRPC call (the 5-byte prefix: not compressed, big-endian
length; then the serialized request) and `grpc_headers` its headers; `run_load` runs any command
that writes the same log format (bench/h1load.py, for requests that must differ one from another).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The client counts as the bottleneck when it kept a core this busy.
CLIENT_BOUND_SHARE = 0.9
GRPC_PREFIX_BYTES = 5


@dataclass(frozen=True, slots=True)
class LoadResult:
    seconds: float  # the measured period (after the warm-up)
    succeeded: int  # 2xx answers in the measured period
    failed: int  # other statuses, failed streams
    p50_ms: float
    p99_ms: float
    data_bytes: int | None  # response body bytes (h2load's "data"); None when not reported
    client_cpu: float  # seconds of CPU the client process used, user + system
    client_wall: float  # its wall time, warm-up included

    @property
    def rate(self) -> float:
        return self.succeeded / self.seconds

    @property
    def client_share(self) -> float:
        """The client's CPU over its wall time: 1.0 is one core kept busy all along."""
        return self.client_cpu / self.client_wall if self.client_wall else 0.0

    @property
    def client_bound(self) -> bool:
        return self.client_share >= CLIENT_BOUND_SHARE

    def bytes_per_answer(self) -> float | None:
        total = self.succeeded + self.failed
        return None if self.data_bytes is None or not total else self.data_bytes / total


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message as it travels in a DATA frame: uncompressed flag, length, bytes."""
    return struct.pack(">BI", 0, len(message)) + message


def grpc_headers(api_key: str) -> list[str]:
    return ["content-type: application/grpc", "te: trailers", f"authorization: Bearer {api_key}"]


def h2load_command(
    url: str,
    *,
    body: Path,
    headers: list[str],
    connections: int,
    streams: int,
    seconds: float,
    warm_up: float,
    log_file: Path,
    http1: bool = False,
) -> list[str]:
    """One thread, `connections` x `streams` in flight (HTTP/1.1: one a connection), measuring
    `seconds` after `warm_up` seconds."""
    command = ["h2load", "-t", "1", "-c", str(connections), "-m", str(streams)]
    command += ["-D", _duration(seconds), "--warm-up-time", _duration(warm_up)]
    command += ["-d", str(body), "--log-file", str(log_file)]
    for header in headers:
        command += ["-H", header]
    if http1:
        command.append("--h1")
    return [*command, url]


async def h2load(
    url: str,
    *,
    body: bytes,
    headers: list[str],
    connections: int,
    streams: int = 1,
    seconds: float = 3.0,
    warm_up: float = 1.0,
    http1: bool = False,
) -> LoadResult:
    """Runs h2load against `url`, POSTing `body` on every request."""
    if shutil.which("h2load") is None:
        raise RuntimeError("h2load is missing: apt-get install nghttp2-client (make bench does)")
    with tempfile.TemporaryDirectory(prefix="portex-h2load-") as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(body)
        log_file = Path(tmp) / "requests.tsv"
        command = h2load_command(
            url,
            body=body_file,
            headers=headers,
            connections=connections,
            streams=streams,
            seconds=seconds,
            warm_up=warm_up,
            log_file=log_file,
            http1=http1,
        )
        return await run_load(command, log_file, seconds)


async def run_load(command: list[str], log_file: Path, seconds: float) -> LoadResult:
    """Runs a load client that writes h2load's per-request log to `log_file` and measures for
    `seconds`; its summary (stdout) is read for the response bytes when it has them."""
    return await asyncio.to_thread(_run_load, command, log_file, seconds)


def _run_load(command: list[str], log_file: Path, seconds: float) -> LoadResult:
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        # wait4: this child's own resource use (RUSAGE_CHILDREN would mix in other children).
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        output.seek(0)
        summary = output.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {process.returncode}: {summary[-2000:]}")
    return parse_log(
        log_file.read_text(),
        seconds=seconds,
        data_bytes=parse_data_bytes(summary),
        client_cpu=usage.ru_utime + usage.ru_stime,
        client_wall=wall,
    )


def parse_log(
    text: str, *, seconds: float, data_bytes: int | None, client_cpu: float, client_wall: float
) -> LoadResult:
    """h2load's --log-file rows: start (us since epoch), HTTP status (-1: failed stream),
    microseconds until the end of the response."""
    latencies: list[int] = []
    failed = 0
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        if 200 <= int(fields[1]) < 300:
            latencies.append(int(fields[2]))
        else:
            failed += 1
    latencies.sort()
    return LoadResult(
        seconds=seconds,
        succeeded=len(latencies),
        failed=failed,
        p50_ms=_percentile(latencies, 0.5) / 1000,
        p99_ms=_percentile(latencies, 0.99) / 1000,
        data_bytes=data_bytes,
        client_cpu=client_cpu,
        client_wall=client_wall,
    )


def parse_data_bytes(summary: str) -> int | None:
    """The response body bytes of h2load's `traffic:` line (`..., 191.67KB (196272) data`)."""
    match = re.search(r"^traffic:.*\((\d+)\) data", summary, re.MULTILINE)
    return int(match.group(1)) if match else None


def _percentile(ordered: list[int], share: float) -> float:
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * share))])


def _duration(seconds: float) -> str:
    # h2load's <DURATION> takes unit suffixes; milliseconds keep fractions exact.
    return f"{round(seconds * 1000)}ms"
