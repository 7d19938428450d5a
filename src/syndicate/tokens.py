"""Signed tokens for the links in every email: unsubscribe, preferences, confirm.

Each token is an HMAC (itsdangerous) over one subscriber id and one purpose, keyed with
the secret from the environment; a token for one purpose or one address never acts on
another, and a changed byte makes it invalid.
"""

from __future__ import annotations

from typing import Literal

from itsdangerous import BadData, URLSafeSerializer

Purpose = Literal["unsubscribe", "preferences", "confirm"]


class InvalidToken(Exception):
    """The token was forged, altered, or made for another purpose."""


def make_token(secret: str, purpose: Purpose, subscriber_id: int) -> str:
    return URLSafeSerializer(secret, salt=f"syndicate.{purpose}").dumps(subscriber_id)


def read_token(secret: str, purpose: Purpose, token: str) -> int:
    try:
        value = URLSafeSerializer(secret, salt=f"syndicate.{purpose}").loads(token)
    except BadData:
        raise InvalidToken(f"this {purpose} link is not valid") from None
    if not isinstance(value, int):
        raise InvalidToken(f"this {purpose} link is not valid")
    return value
