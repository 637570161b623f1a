"""Logging: one JSON pipeline for our logs and the libraries', with secrets redacted."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from portex_pay.logging import configure_logging, redact

TOKEN = "123456789:AAH8kLmN0pQrStUvWxYz_abcdefghijklmn"
KEY = "ppk_Zx9yW8vU7tS6rQ5pO4nM3lK2jI1hG0fE"


def test_redact_removes_bot_tokens_api_keys_and_bearer_values() -> None:
    text = redact(f"POST https://api.telegram.org/bot{TOKEN}/getMe key={KEY} Bearer abc.def")
    assert TOKEN not in text
    assert KEY not in text
    assert "abc.def" not in text
    assert "getMe" in text


def test_library_and_structlog_lines_are_json_without_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    try:
        structlog.get_logger("portex_pay.test").info("calling", url=f"/bot{TOKEN}/getMe")
        logging.getLogger("aiohttp.client").warning("failed %s", f"/bot{TOKEN}/x key {KEY}")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert [line["event"].split()[0] for line in lines] == ["calling", "failed"]
    assert lines[1]["logger"] == "aiohttp.client"
    assert all(TOKEN not in json.dumps(line) and KEY not in json.dumps(line) for line in lines)


def test_auto_format_is_json_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("auto", "info")  # pytest's captured stderr is not a terminal
    try:
        structlog.get_logger("portex_pay.test").info("hello", answer=42)
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert (line["event"], line["answer"], line["level"]) == ("hello", 42, "info")
