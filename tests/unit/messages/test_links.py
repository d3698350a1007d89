"""Signed unsubscribe links: they round-trip, and any tampering is caught."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from lifecycle.messages.links import (
    InvalidToken,
    PublicLinks,
    UnsubscribeToken,
    make_unsubscribe_token,
    make_unsubscribe_url,
    verify_unsubscribe_token,
)

SECRET = "link-secret-for-tests"


def test_token_round_trips():
    token = make_unsubscribe_token(SECRET, 42, "c-0001", "email")
    assert verify_unsubscribe_token(SECRET, token) == UnsubscribeToken(42, "c-0001", "email")


def test_url_carries_a_verifiable_token():
    url = make_unsubscribe_url("http://localhost:8080/lifecycle/", SECRET, 7, "c-9", "email")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://localhost:8080/lifecycle/unsubscribe"
    token = parse_qs(parts.query)["token"][0]
    assert verify_unsubscribe_token(SECRET, token).message_id == 7


def test_token_from_another_secret_is_rejected():
    token = make_unsubscribe_token("someone-else", 42, "c-0001", "email")
    with pytest.raises(InvalidToken):
        verify_unsubscribe_token(SECRET, token)


def test_swapping_the_payload_is_rejected():
    mine = make_unsubscribe_token(SECRET, 42, "c-0001", "email")
    theirs = make_unsubscribe_token(SECRET, 43, "c-0002", "email")
    forged = theirs.split(".")[0] + "." + mine.split(".")[1]
    with pytest.raises(InvalidToken):
        verify_unsubscribe_token(SECRET, forged)


@pytest.mark.parametrize("position", [0, 5, -1])
def test_flipping_any_character_is_rejected(position):
    token = make_unsubscribe_token(SECRET, 42, "c-0001", "email")
    index = position % len(token)
    flipped = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
    with pytest.raises(InvalidToken):
        verify_unsubscribe_token(SECRET, flipped)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "ünïcode.tøken"])
def test_malformed_tokens_are_rejected(token):
    with pytest.raises(InvalidToken):
        verify_unsubscribe_token(SECRET, token)


def test_an_empty_secret_is_refused():
    with pytest.raises(ValueError, match="lifecycle_default"):
        make_unsubscribe_token("", 1, "c", "email")


class _Conn:
    conn_id = "lifecycle_default"

    def __init__(self, host, password):
        self.host, self.password = host, password


def test_public_links_from_connection():
    links = PublicLinks.from_connection(_Conn("http://localhost:8080/lifecycle/", SECRET))
    assert links.url("/webhooks/twilio/status") == "http://localhost:8080/lifecycle/webhooks/twilio/status"
    token = parse_qs(urlsplit(links.unsubscribe_url(5, "c-5", "email")).query)["token"][0]
    assert verify_unsubscribe_token(SECRET, token) == UnsubscribeToken(5, "c-5", "email")


@pytest.mark.parametrize("host, password", [(None, SECRET), ("http://x", None)])
def test_public_links_need_host_and_secret(host, password):
    with pytest.raises(ValueError, match="lifecycle_default"):
        PublicLinks.from_connection(_Conn(host, password))
