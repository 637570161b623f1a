"""The Bot API methods of a chat bot: sendMessage, sendDocument (uploads, URLs, file ids),
getFile, deleteMessage, answerCallbackQuery and the bot's commands."""

from __future__ import annotations

import mimetypes
import re
import secrets
import time
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from portex_pay_devtools.fake_bot_api.chats import _Chats
from portex_pay_devtools.fake_bot_api.content import (
    _check_parse_mode,
    _document_json,
    _file_suffix,
    _message_options,
    _parse_bot_commands,
    _parse_command_scope,
)
from portex_pay_devtools.fake_bot_api.errors import _QUERY_TOO_OLD, BotApiError, _bad_request
from portex_pay_devtools.fake_bot_api.model import (
    DELETE_MESSAGE_WINDOW,
    MAX_BOT_COMMANDS,
    MAX_CAPTION_LENGTH,
    MAX_DOWNLOAD_SIZE,
    MAX_MESSAGE_LENGTH,
    UploadedFile,
    _Bot,
    _File,
)
from portex_pay_devtools.fake_bot_api.wire import _Args

# Bot API, BotCommand.command: "1-32 characters. Can contain only lowercase English letters, digits
# and underscores."
_BOT_COMMAND_RE: Final = re.compile(r"[a-z0-9_]{1,32}")


class _ChatMethods(_Chats):
    """sendMessage, sendDocument, getFile, deleteMessage, answerCallbackQuery, *MyCommands."""

    async def _send_message(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        # Reference server order: the content (get_input_message_text), then do_send_message's
        # options and chat; the length is Telegram's check when it sends.
        text = args.text("text")
        if not text:
            raise _bad_request("message text is empty")
        _check_parse_mode(text, args.text("parse_mode"))
        outgoing = self._outgoing(bot, args)
        if not text.strip():
            # Telegram trims the text; only spaces leave nothing to send.
            raise _bad_request("message must be non-empty")
        if len(text) > MAX_MESSAGE_LENGTH:
            raise _bad_request("message is too long")
        # The text comes back as sent: the fake parses no entities (markup stays in the text).
        return self._bot_message(bot, outgoing.chat_id, **_message_options(outgoing), text=text)

    async def _send_document(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        source = self._document_source(args)
        caption = args.text("caption")
        _check_parse_mode(caption, args.text("parse_mode"))
        outgoing = self._outgoing(bot, args)
        if isinstance(source, UploadedFile):
            if not source.data:
                raise _bad_request("file must be non-empty")
            document = self._new_file(bot, source.filename, source.content_type, source.data)
        elif source.lower().startswith(("http://", "https://")):
            # Telegram fetches the URL; the fake only records it (no bytes, no size), so the file
            # cannot be downloaded back. Which content types Telegram takes is its decision.
            name = unquote(urlsplit(source).path.rsplit("/", 1)[-1]) or None
            document = self._new_file(bot, name, None, None)
        else:
            found = self._files.get(source)
            # Bot API: a file_id "is unique for each individual bot and can't be transferred
            # from one bot to another".
            if found is None or found.bot_id != bot.id:
                raise _bad_request("wrong file identifier/HTTP URL specified")
            document = found
        if len(caption) > MAX_CAPTION_LENGTH:
            raise _bad_request("message caption is too long")
        self._files[document.file_id] = document
        content: dict[str, Any] = {"document": _document_json(document)}
        if caption:
            content["caption"] = caption
        return self._bot_message(bot, outgoing.chat_id, **_message_options(outgoing), **content)

    @staticmethod
    def _document_source(args: _Args) -> UploadedFile | str:
        # Reference server, get_input_file: a string is a file_id, an HTTP URL or
        # "attach://<name>" (the file part <name>, which is how aiogram uploads); otherwise a file
        # part named like the parameter.
        text = args.text("document").strip()
        if text.startswith("attach://"):
            upload = args.file(text.removeprefix("attach://"))
        elif text:
            return text
        else:
            upload = args.file("document")
        if upload is None:
            raise _bad_request("there is no document in the request")
        return upload

    def _new_file(
        self, bot: _Bot, file_name: str | None, content_type: str | None, data: bytes | None
    ) -> _File:
        # The Bot API server hands Telegram the file under its name, so the MIME type comes from
        # the extension; the part's Content-Type is the fake's fallback.
        guessed = mimetypes.guess_type(file_name)[0] if file_name else None
        if guessed is None and content_type and data is not None:
            guessed = content_type
        return _File(
            # Shaped like Telegram's: a document file_id starts "BQAC", a file_unique_id "AgAD".
            file_id=f"BQAC{secrets.token_urlsafe(48)}",
            file_unique_id=f"AgAD{secrets.token_urlsafe(9)}",
            bot_id=bot.id,
            file_name=file_name,
            mime_type=guessed or ("application/octet-stream" if data is not None else None),
            data=data,
        )

    async def _get_file(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        file_id = args.text("file_id")
        if not file_id:
            raise _bad_request("file_id not specified")
        stored = self._files.get(file_id)
        if stored is None or stored.bot_id != bot.id:
            raise _bad_request("invalid file_id")
        result: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
        }
        if stored.data is None:
            # Sent by URL: the fake has no bytes to offer, hence no size and no file_path (both
            # optional in File).
            return result
        if len(stored.data) > MAX_DOWNLOAD_SIZE:
            raise _bad_request("file is too big")
        if stored.file_path is None:
            stored.file_path = f"documents/file_{bot.next_file_number}{_file_suffix(stored)}"
            bot.next_file_number += 1
            self._file_paths[(bot.id, stored.file_path)] = stored
        result["file_size"] = len(stored.data)
        result["file_path"] = stored.file_path
        return result

    async def _delete_message(self, bot: _Bot, args: _Args) -> bool:
        chat_text = args.text("chat_id")
        message_id = args.integer("message_id", 0)
        if not chat_text:
            raise _bad_request("chat identifier is not specified")
        if message_id <= 0:
            raise _bad_request("message identifier is not specified")
        chat_id = self._chat_id(bot, chat_text)
        message = bot.messages.get((chat_id, message_id))
        if message is None:
            raise _bad_request("message to delete not found")
        # Bot API: in private chats a bot deletes both sides' messages, but only for 48 hours.
        if time.time() - message["date"] > DELETE_MESSAGE_WINDOW:
            raise _bad_request("message can't be deleted")
        del bot.messages[(chat_id, message_id)]
        return True

    async def _answer_callback_query(self, bot: _Bot, args: _Args) -> bool:
        query_id = args.text("callback_query_id").strip()
        # Unknown, another bot's, or answered already: Telegram's one answer for them all.
        if bot.callback_queries.get(query_id, True):
            raise BotApiError(400, _QUERY_TOO_OLD)
        # Bot API, answerCallbackQuery.text: "0-200 characters".
        if len(args.text("text")) > 200:
            raise _bad_request("MESSAGE_TOO_LONG")
        bot.callback_queries[query_id] = True
        return True

    async def _set_my_commands(self, bot: _Bot, args: _Args) -> bool:
        commands = _parse_bot_commands(args.text("commands"))
        key = (_parse_command_scope(args.text("scope")), args.text("language_code"))
        # Telegram's own checks, as it answers them (MTProto error names).
        if len(commands) > MAX_BOT_COMMANDS:
            raise _bad_request("BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            if not _BOT_COMMAND_RE.fullmatch(command["command"]):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(command["description"].strip()) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        if commands:
            bot.commands[key] = commands
        else:
            bot.commands.pop(key, None)  # an empty list deletes them, as deleteMyCommands
        return True

    async def _get_my_commands(self, bot: _Bot, args: _Args) -> list[dict[str, str]]:
        key = (_parse_command_scope(args.text("scope")), args.text("language_code"))
        return [dict(command) for command in bot.commands.get(key, [])]

    async def _delete_my_commands(self, bot: _Bot, args: _Args) -> bool:
        key = (_parse_command_scope(args.text("scope")), args.text("language_code"))
        bot.commands.pop(key, None)
        return True
