"""How the fake fails a Bot API call: BotApiError (the `{"ok": false, ...}` answer, with the same
HTTP status) and the descriptions several methods share."""

from __future__ import annotations

from typing import Any, Final

_QUERY_ID_INVALID: Final = "Bad Request: QUERY_ID_INVALID"
_QUERY_TOO_OLD: Final = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
_CONFLICT_WEBHOOK_ACTIVE: Final = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_CONFLICT_OTHER_GET_UPDATES: Final = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_CONFLICT_SET_WEBHOOK: Final = "Conflict: terminated by setWebhook request"
_REQUEST_TOO_LARGE: Final = "Request Entity Too Large"


class BotApiError(Exception):
    """A failed Bot API answer; the HTTP status equals `error_code`, as Telegram does."""

    def __init__(self, error_code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        # Bot API: on flood control Telegram adds ResponseParameters.retry_after.
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad_request(reason: str) -> BotApiError:
    return BotApiError(400, f"Bad Request: {reason}")
