"""The edge's pure rules (issue 16): browser callback URLs under a prefix, decoded before they are
checked; the verified user's text as PostgreSQL can hold it; Pay's character rules on their own,
for checking before a lookup."""

from __future__ import annotations

import pytest

from portex_pay.domain.catalog import (
    callback_allowed,
    normalize_callback_prefix,
    storable_user,
)
from portex_pay.domain.init_data import TelegramUser
from portex_pay.domain.pay import PayCommand, text_violations

PREFIX = "https://api.example.com/hooks/"

REFUSED = {
    "dot-dot": "https://api.example.com/hooks/../admin",
    "dot-dot-encoded-slash": "https://api.example.com/hooks/..%2f..%2fadmin",
    "dot-dot-encoded-slash-upper": "https://api.example.com/hooks/..%2F..%2Fadmin",
    "encoded-dots": "https://api.example.com/hooks/%2e%2e/admin",
    "encoded-dots-upper-and-slash": "https://api.example.com/hooks/%2E%2E%2Fadmin",
    "half-encoded-dots": "https://api.example.com/hooks/.%2e/admin",
    "backslash": "https://api.example.com/hooks/..\\admin",
    "backslash-alone": "https://api.example.com/hooks\\x",
    "encoded-backslash": "https://api.example.com/hooks/..%5cadmin",
    "encoded-backslash-upper": "https://api.example.com/hooks/..%5Cadmin",
    "double-encoded": "https://api.example.com/hooks/%252e%252e%252fadmin",
    "double-encoded-dots": "https://api.example.com/hooks/%252e%252e/admin",
    "triple-encoded": "https://api.example.com/hooks/%25252e%25252e/admin",
    "encoded-too-deep": "https://api.example.com/hooks/%2525252e%2525252e/admin",
    "dot": "https://api.example.com/hooks/./x",
    "trailing-dot-dot": "https://api.example.com/hooks/x/..",
    "path-parameter-dot-dot": "https://api.example.com/hooks/..;/admin",
    "encoded-slash-alone": "https://api.example.com/hooks%2fx",
    "encoded-slash-inside": "https://api.example.com/hooks/a%2Fb",
    "encoded-nul": "https://api.example.com/hooks/x%00",
    "tab": "https://api.example.com/hooks/x\ty",
    "newline-in-host": "https://api.exa\nmple.com/hooks/x",
    "userinfo": "https://api.example.com@evil.com/hooks/",
    "userinfo-of-ours": "https://user@api.example.com/hooks/x",
    "encoded-at-host": "https://api.example.com%40evil.com/hooks/x",
    "other-host": "https://evil.com/hooks/x",
    "suffix-host": "https://api.example.com.evil.com/hooks/x",
    "other-scheme": "http://api.example.com/hooks/x",
    "other-port": "https://api.example.com:8443/hooks/x",
    "not-at-a-boundary": "https://api.example.com/hooksevil",
    "the-prefix-without-slash": "https://api.example.com/hooks",
    "outside": "https://api.example.com/admin",
    "not-a-url": "not a url",
}

ACCEPTED = {
    "plain": "https://api.example.com/hooks/x",
    "the-prefix-itself": "https://api.example.com/hooks/",
    "mixed-case-host": "https://API.Example.COM/hooks/x",
    "default-port": "https://api.example.com:443/hooks/x",
    "query-is-not-the-path": "https://api.example.com/hooks/x?next=../../admin",
    "encoded-letter": "https://api.example.com/hook%73/x",
    "utf-8": "https://api.example.com/hooks/caf%C3%A9",
    "dots-inside-a-name": "https://api.example.com/hooks/v1..2/x.json",
    "three-dots": "https://api.example.com/hooks/.../x",
}


@pytest.mark.parametrize("url", list(REFUSED.values()), ids=list(REFUSED))
def test_a_url_that_could_leave_the_prefix_is_refused(url: str) -> None:
    assert not callback_allowed(url, [PREFIX])


@pytest.mark.parametrize("url", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_a_url_under_the_prefix_is_accepted(url: str) -> None:
    assert callback_allowed(url, [PREFIX])


def test_a_prefix_without_a_trailing_slash_covers_itself_and_below() -> None:
    prefix = ["https://api.example.com/hooks"]
    assert callback_allowed("https://api.example.com/hooks", prefix)
    assert callback_allowed("https://api.example.com/hooks/x", prefix)
    assert not callback_allowed("https://api.example.com/hooksevil", prefix)
    assert not callback_allowed("https://api.example.com/hooks/../x", prefix)


@pytest.mark.parametrize(
    "prefix",
    [
        "https://api.example.com/hooks/../",
        "https://api.example.com/%2e%2e/hooks/",
        "https://api.example.com/a%2fb/",
        "https://api.example.com/hooks\\",
    ],
)
def test_a_prefix_that_servers_could_read_differently_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError):
        normalize_callback_prefix(prefix)
    # And one already stored covers nothing.
    assert not callback_allowed("https://api.example.com/hooks/x", [prefix])


def test_the_stored_user_has_nul_and_lone_surrogates_replaced_and_keeps_the_rest() -> None:
    user = TelegramUser(
        id=7,
        first_name="A\x00da \U0001f600\u200d",
        last_name="\ud800Love\udfff",
        username="ada\x00",
        language_code="e\ud83dn",
        is_premium=True,
        photo_url="https://t.me/i/\x00.jpg",
        allows_write_to_pm=True,
    )
    stored = storable_user(user)
    assert stored == TelegramUser(
        id=7,
        first_name="A\ufffdda \U0001f600\u200d",
        last_name="\ufffdLove\ufffd",
        username="ada\ufffd",
        language_code="e\ufffdn",
        is_premium=True,
        photo_url="https://t.me/i/\ufffd.jpg",
        allows_write_to_pm=True,
    )
    for value in (stored.first_name, stored.last_name, stored.username, stored.photo_url):
        assert value is not None
        value.encode("utf-8")  # strict: what PostgreSQL and protobuf need
    plain = TelegramUser(id=8, first_name="Ada\x01")  # other controls are kept as they are
    assert storable_user(plain) == plain


def test_the_character_rules_name_every_bad_text_field() -> None:
    command = PayCommand(
        tg_use_id=0,
        amount=0,
        label="item\x00",
        title="Book\ud800",
        description="ok\nfine",
        payload="\udfff",
        photo_url="https://x.example/\x00",
        callback_url="https://x.example/\u2028",
    )
    assert [v.field for v in text_violations(command)] == [
        "payload",
        "label",
        "title",
        "photo_url",
        "callback_url",
    ]
    assert text_violations(PayCommand(0, 0, "", "", "")) == []
