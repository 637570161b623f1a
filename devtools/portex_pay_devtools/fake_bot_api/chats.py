"""The private chats between the simulated users and the bots: the User and Chat objects, the
messages both sides send (stored per bot, numbered per chat), and resolving where a bot's send*
call goes (chat, reply, markup)."""

from __future__ import annotations

import time
from typing import Any

from portex_pay_devtools.fake_bot_api.content import _parse_reply_markup, _parse_reply_parameters
from portex_pay_devtools.fake_bot_api.errors import _bad_request
from portex_pay_devtools.fake_bot_api.model import _HISTORY_LIMIT, _Bot, _Outgoing
from portex_pay_devtools.fake_bot_api.state import _State
from portex_pay_devtools.fake_bot_api.wire import _INTEGER_RE, _Args


class _Chats(_State):
    """Builds and stores the messages of the private chats."""

    def _user(self, user_id: int) -> dict[str, Any]:
        return {
            "id": user_id,
            "is_bot": False,
            "first_name": self._first_names.get(user_id, f"User {user_id}"),
            "username": f"user{user_id}",
            "language_code": "en",
        }

    def _private_chat(self, user_id: int) -> dict[str, Any]:
        user = self._user(user_id)
        return {
            "id": user_id,
            "first_name": user["first_name"],
            "username": user["username"],
            "type": "private",
        }

    @staticmethod
    def _bot_user(bot: _Bot) -> dict[str, Any]:
        return {
            "id": bot.id,
            "is_bot": True,
            "first_name": bot.first_name,
            "username": bot.username,
        }

    def _message(self, bot: _Bot, user_id: int, **content: Any) -> dict[str, Any]:
        """A message from the user to the bot in their private chat."""
        return self._store_message(bot, user_id, self._user(user_id), content)

    def _bot_message(self, bot: _Bot, chat_id: int, **content: Any) -> dict[str, Any]:
        """A message the bot sends to the private chat `chat_id`."""
        message = self._store_message(bot, chat_id, self._bot_user(bot), content)
        bot.sent.append(message)
        if len(bot.sent) > _HISTORY_LIMIT:
            del bot.sent[0]
        return message

    def _store_message(
        self, bot: _Bot, chat_id: int, sender: dict[str, Any], content: dict[str, Any]
    ) -> dict[str, Any]:
        message_id = bot.next_message_ids.get(chat_id, 1)
        bot.next_message_ids[chat_id] = message_id + 1
        message = {
            "message_id": message_id,
            "from": sender,
            "chat": self._private_chat(chat_id),
            "date": int(time.time()),
            **content,
        }
        bot.messages[(chat_id, message_id)] = message
        if len(bot.messages) > _HISTORY_LIMIT:
            del bot.messages[next(iter(bot.messages))]
        return message

    def _outgoing(self, bot: _Bot, args: _Args) -> _Outgoing:
        # do_send_message: reply parameters and markup are parsed before the chat is checked.
        reply = _parse_reply_parameters(args)
        markup = _parse_reply_markup(args.text("reply_markup"))
        chat_id = self._chat_id(bot, args.text("chat_id"))
        reply_to: dict[str, Any] | None = None
        if reply is not None:
            reply_chat, message_id, allow_without_reply = reply
            target = None
            # The fake keeps no cross-chat replies: another chat's message is never found.
            if not reply_chat or self._chat_id(bot, reply_chat) == chat_id:
                target = bot.messages.get((chat_id, message_id))
            if target is None and not allow_without_reply:
                raise _bad_request("message to be replied not found")
            if target is not None:
                # Bot API, Message.reply_to_message: "will not contain further
                # reply_to_message fields even if it itself is a reply".
                reply_to = {k: v for k, v in target.items() if k != "reply_to_message"}
        return _Outgoing(chat_id, reply_to, markup)

    @staticmethod
    def _chat_id(bot: _Bot, text: str) -> int:
        # Reference server, check_chat. A bot reaches a private chat only after its user wrote to
        # it (or paid it); the fake has no groups, channels or public usernames, so "@name" and
        # every other chat is not found, as Telegram says of a chat the bot cannot see.
        text = text.strip()
        if not text:
            raise _bad_request("chat_id is empty")
        if not _INTEGER_RE.fullmatch(text) or int(text) not in bot.chats:
            raise _bad_request("chat not found")
        return int(text)
