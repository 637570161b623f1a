"""The Bot API's wire format: reading a request's arguments (query string, JSON, urlencoded or
multipart form, uploads) into `_Args`, and writing `{"ok": ...}` answers."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from portex_pay_devtools.fake_bot_api.errors import _REQUEST_TOO_LARGE, BotApiError, _bad_request
from portex_pay_devtools.fake_bot_api.model import (
    DEFAULT_ALLOWED_UPDATES,
    MAX_UPLOAD_SIZE,
    UPDATE_TYPES,
    UploadedFile,
)

_INTEGER_RE: Final = re.compile(r"[+-]?\d+")


def _as_arg(value: Any) -> str | None:
    # The reference server turns a JSON body into string arguments (non-strings as their JSON
    # text), so `"user_id": 5` and `"user_id": "5"` are the same request, and `prices` may be an
    # array or a JSON-encoded string. Doing the same keeps JSON, form and query bodies equivalent.
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _Args:
    """Bot API arguments as strings; an empty string counts as absent, as in Telegram."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self._values: dict[str, str] = {}
        for name, value in raw.items():
            if isinstance(value, UploadedFile):
                continue  # a file, not an argument: see file()
            text = _as_arg(value)
            if text is not None:
                self._values[name] = text

    def text(self, name: str) -> str:
        return self._values.get(name, "")

    def file(self, name: str) -> UploadedFile | None:
        value = self.raw.get(name)
        return value if isinstance(value, UploadedFile) else None

    def required(self, name: str) -> str:
        value = self.text(name)
        if not value:
            # Reference server, get_required_string_arg.
            raise _bad_request(f'parameter "{name}" is required')
        return value

    def integer(self, name: str, default: int) -> int:
        value = self.text(name).strip()
        if not value:
            return default
        # Telegram silently reads garbage as 0; the fake refuses it so that client bugs show.
        if not _INTEGER_RE.fullmatch(value):
            raise _bad_request(f'parameter "{name}" must be an integer')
        return int(value)

    def flag(self, name: str) -> bool:
        # Reference server, to_bool: "true", "yes" and "1" (any case) are true, the rest false.
        return self.text(name).strip().lower() in ("true", "yes", "1")

    def user_id(self, name: str = "user_id") -> int:
        value = self.text(name).strip()
        if not _INTEGER_RE.fullmatch(value) or int(value) <= 0:
            raise _bad_request(f"invalid {name} specified")
        return int(value)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _update_kind(update: dict[str, Any]) -> str | None:
    return next((key for key in update if key != "update_id"), None)


def _parse_allowed_updates(
    text: str, known: frozenset[str] = UPDATE_TYPES
) -> frozenset[str] | None:
    """Reference server, get_allowed_update_types: None means "keep the previous setting";
    `known` are the update types the server knows (it ignores other names)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    names = frozenset(item.lower() for item in value) & known
    return names or DEFAULT_ALLOWED_UPDATES


def _ok_response(result: Any, description: str | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": True, "result": result}
    if description is not None:
        body["description"] = description
    return _json_response(body)


def _error_response(error: BotApiError) -> web.Response:
    return _json_response(error.to_json(), status=error.error_code)


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type="application/json",
    )


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Query string, then the body (JSON, urlencoded or multipart form) on top: Telegram accepts
    them all. A multipart part with a filename is a file and becomes an `UploadedFile` (its bytes
    untouched); any other part is a string argument."""
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return params
    try:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except (ValueError, RecursionError, LookupError):
                # Not JSON, not in its charset (or an unknown one), nested deeper than it parses.
                raise _bad_request("can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise _bad_request("JSON request body must be an object")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            try:
                form = await request.post()
            except (ValueError, LookupError, RuntimeError, HttpProcessingError):
                # No or a wrong boundary, a cut-off part, text that is not in its charset, an
                # unknown charset or transfer encoding, a part header too long.
                raise _bad_request("can't parse the form request body") from None
            files = [value for value in form.values() if isinstance(value, web.FileField)]
            try:
                for name, value in form.items():
                    if isinstance(value, web.FileField):
                        params[name] = await asyncio.to_thread(_read_upload, value)
                    elif isinstance(value, str):
                        params[name] = value
                    else:
                        # A part without a filename but with a non-text Content-Type: the
                        # reference server reads it as an argument all the same.
                        params[name] = bytes(value).decode("utf-8", errors="replace")
            finally:
                for upload in files:
                    upload.file.close()
    except web.HTTPRequestEntityTooLarge:
        # The body is over the application's client_max_size (see start()).
        raise BotApiError(413, _REQUEST_TOO_LARGE) from None
    return params


def _read_upload(part: web.FileField) -> UploadedFile:
    # aiohttp has spooled the part to a temporary file (on disk once it is big): read it off the
    # event loop.
    part.file.seek(0, 2)
    if part.file.tell() > MAX_UPLOAD_SIZE:
        raise BotApiError(413, _REQUEST_TOO_LARGE)
    part.file.seek(0)
    return UploadedFile(part.filename, part.content_type, part.file.read())
