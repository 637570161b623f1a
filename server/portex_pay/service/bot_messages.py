"""An application's bot messages: the texts answered to /paysupport and /terms, and the optional
buyer messages (service/support.py says how they are used). The use case behind GetBotMessages /
SetBotMessages and `portex-pay admin show-bot-messages / set-bot-messages`: one set of rules for
both doors.

A change names only what it changes: an absent text is unchanged, an empty (or blank) text goes
back to the default, any other text is kept as given (1-4096 characters once stripped, the
length of one Telegram message; free text as domain/text.py defines it: no control characters
but TAB, LF and CR, no lone surrogate). A change that changes nothing is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from portex_pay.domain.application import Application
from portex_pay.domain.errors import ApplicationNotFound, FieldViolation, InvalidArgument
from portex_pay.domain.text import free_text_problem
from portex_pay.service.ports import Applications
from portex_pay.service.support import (
    DEFAULT_PAID_MESSAGE,
    DEFAULT_REFUNDED_MESSAGE,
    MESSAGE_MAX_CHARS,
    support_reply,
)

TEXT_FIELDS = ("support_text", "terms_text", "paid_message", "refunded_message")


@dataclass(frozen=True, slots=True)
class BotMessages:
    """The messages as the bot sends them: each text, and whether it is the default."""

    support_text: str
    support_text_default: bool
    terms_text: str
    terms_text_default: bool
    buyer_messages: bool
    paid_message: str
    paid_message_default: bool
    refunded_message: str
    refunded_message_default: bool

    @classmethod
    def of(cls, application: Application) -> BotMessages:
        return cls(
            support_text=support_reply(application, "paysupport"),
            support_text_default=application.support_text is None,
            terms_text=support_reply(application, "terms"),
            terms_text_default=application.terms_text is None,
            buyer_messages=application.buyer_messages,
            paid_message=application.paid_message or DEFAULT_PAID_MESSAGE,
            paid_message_default=application.paid_message is None,
            refunded_message=application.refunded_message or DEFAULT_REFUNDED_MESSAGE,
            refunded_message_default=application.refunded_message is None,
        )


def text_problem(text: str) -> str | None:
    """Why `text` cannot be a bot message (a field violation's description), or None: the
    project's free-text rule (line breaks allowed), within one Telegram message."""
    problem = free_text_problem(text)
    if problem is not None:
        return problem
    if len(text.strip()) > MESSAGE_MAX_CHARS:
        return f"must be at most {MESSAGE_MAX_CHARS} characters"
    return None


def bot_message_changes(
    texts: dict[str, str | None], buyer_messages: bool | None
) -> dict[str, str | bool | None]:
    """The validated change: column -> value (None: back to the default). `texts` maps names of
    TEXT_FIELDS to the new text, or None for unchanged. InvalidArgument names every bad field."""
    changes: dict[str, str | bool | None] = {}
    violations = []
    for name, text in texts.items():
        assert name in TEXT_FIELDS, name
        if text is None:
            continue
        problem = text_problem(text)
        if problem is not None:
            violations.append(FieldViolation(name, problem))
        changes[name] = text.strip() or None
    if violations:
        raise InvalidArgument(violations)
    if buyer_messages is not None:
        changes["buyer_messages"] = buyer_messages
    if not changes:
        raise InvalidArgument([FieldViolation("request", "names nothing to change")])
    return changes


class BotMessagesService:
    def __init__(self, applications: Applications) -> None:
        self._applications = applications

    async def get(self, application_id: UUID) -> BotMessages:
        application = await self._applications.get(application_id)
        if application is None:
            raise ApplicationNotFound(f"no application {application_id}")
        return BotMessages.of(application)

    async def set(
        self,
        application_id: UUID,
        texts: dict[str, str | None],
        buyer_messages: bool | None = None,
    ) -> BotMessages:
        changes = bot_message_changes(texts, buyer_messages)
        application = await self._applications.set_bot_messages(application_id, changes)
        if application is None:
            raise ApplicationNotFound(f"no application {application_id}")
        return BotMessages.of(application)
