"""A raw HTTP/1.1 client for tests that must send a request exactly as written: a path with `..`,
`%2F` or a backslash kept (an HTTP client library would normalise or re-encode it), odd bytes, a
chunked body without Content-Length. One connection per request (`Connection: close`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-case names; the last of repeated ones
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    """`body` in the chunked transfer coding (no Content-Length: the reader cannot know the size
    before it has read it)."""
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


async def send(
    port: int,
    target: str | bytes,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    chunk: bool = False,
    timeout: float = 30.0,
) -> RawAnswer:
    """Sends `method target HTTP/1.1` to 127.0.0.1:`port` with `target` as it is (a str is
    encoded as UTF-8) and returns the answer. `body` goes with a Content-Length, or chunked."""
    raw_target = target.encode() if isinstance(target, str) else target
    lines = [b"%s %s HTTP/1.1" % (method.encode(), raw_target), b"Host: 127.0.0.1"]
    lines.append(b"Connection: close")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}".encode())
    payload = b""
    if body is not None:
        if chunk:
            lines.append(b"Transfer-Encoding: chunked")
            payload = chunked(body)
        else:
            lines.append(b"Content-Length: %d" % len(body))
            payload = body
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + payload)
        # The server may answer (413) and close before it has read a large body.
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        data = await asyncio.wait_for(_read_all(reader), timeout)
    finally:
        writer.close()
    return _parse(data)


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        try:
            part = await reader.read(65536)
        except ConnectionError:
            break
        if not part:
            break
        parts.append(part)
    return b"".join(parts)


def _parse(data: bytes) -> RawAnswer:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise AssertionError(f"no HTTP answer: {data[:200]!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawAnswer(int(parts[1]), headers, body)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
