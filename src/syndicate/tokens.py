"""Signed tokens for the links in every email: unsubscribe, preferences, confirm.

Each token is an HMAC (itsdangerous) over one subscriber id and one purpose, keyed with
the secret from the environment; a token for one purpose or one address never acts on
another, and a changed byte makes it invalid.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from itsdangerous import BadData, Signer

Purpose = Literal["unsubscribe", "preferences", "confirm"]


class InvalidToken(Exception):
    """The token was forged, altered, or made for another purpose."""


@lru_cache(maxsize=16)
def _signer(secret: str, purpose: Purpose) -> Signer:
    # A plain Signer over the id ("123.<signature>"): every email carries two tokens, and
    # the serializer's JSON + zlib round made them 9x slower to mint for no gain here.
    return Signer(secret, salt=f"syndicate.{purpose}")


def make_token(secret: str, purpose: Purpose, subscriber_id: int) -> str:
    return _signer(secret, purpose).sign(str(subscriber_id)).decode("ascii")


def read_token(secret: str, purpose: Purpose, token: str) -> int:
    try:
        value = _signer(secret, purpose).unsign(token).decode("ascii")
    except (BadData, UnicodeError):
        raise InvalidToken(f"this {purpose} link is not valid") from None
    if not value.isdigit():
        raise InvalidToken(f"this {purpose} link is not valid")
    return int(value)
