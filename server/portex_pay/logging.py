"""structlog set-up, done once by the entrypoint.

JSON lines when stderr is not a terminal, coloured console lines when it is. The stdlib loggers of
grpc, asyncpg and aiohttp go through the same processors (structlog's ProcessorFormatter), so
every line has one shape. A last processor redacts anything shaped like a bot token or an API key:
secrets must never reach the logs, even through a third-party library's message.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Bot tokens are "<bot id>:<35 base64url chars>"; our API keys start with "ppk_"; Telegram URLs
# carry the token after "/bot".
_SECRET_PATTERNS = (
    re.compile(r"\d{3,}:[A-Za-z0-9_-]{30,}"),
    re.compile(r"ppk_[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)(bearer\s+)\S+"),
)


def redact(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(
            lambda m: (m.group(1) if m.re.groups else "") + "[REDACTED]",
            text,
        )
    return text


def _redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
    return event_dict


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    """Configures structlog and routes the stdlib loggers through it."""
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            *shared[1:],
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library loggers are chatty at debug level; keep them at warning unless asked for debug.
    for name in ("grpc", "asyncpg", "aiohttp", "aiohttp.access"):
        logging.getLogger(name).setLevel(level.upper() if level == "debug" else "WARNING")
