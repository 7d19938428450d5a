"""Signed tokens for the links in every email: unsubscribe, preferences, confirm.

Each token is an HMAC (itsdangerous) over one subscriber id and one purpose, keyed with
the secret from the environment; a token for one purpose or one address never acts on
another, and a changed byte makes it invalid.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property, lru_cache
from typing import Literal

from itsdangerous import BadData, SignatureExpired, Signer, TimestampSigner
from itsdangerous.signer import HMACAlgorithm

Purpose = Literal["unsubscribe", "preferences", "confirm", "draft"]


class InvalidToken(Exception):
    """The token was forged, altered, or made for another purpose."""


class _OneShotHMAC(HMACAlgorithm):
    """itsdangerous's HMAC, computed by the C one-shot `hmac.digest`: the same signatures,
    without building an HMAC object per token."""

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, self.digest_method)


class _TokenSigner(Signer):
    """A Signer that derives its key once, not once per token (a send mints two tokens
    per subscriber: at a million subscribers, that is two million derivations saved)."""

    @cached_property
    def _derived(self) -> bytes:
        return super().derive_key()

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._derived if secret_key is None else super().derive_key(secret_key)


@lru_cache(maxsize=16)
def _signer(secret: str, purpose: Purpose) -> Signer:
    # A plain Signer over the id ("123.<signature>"): every email carries two tokens, and
    # the serializer's JSON + zlib round made them 9x slower to mint for no gain here.
    return _TokenSigner(secret, salt=f"syndicate.{purpose}", algorithm=_OneShotHMAC(hashlib.sha1))


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


class ExpiredToken(InvalidToken):
    """A confirmation link older than its limit: the reader signs up again."""


@lru_cache(maxsize=4)
def _confirm_signer(secret: str) -> TimestampSigner:
    return TimestampSigner(secret, salt="syndicate.confirm")


def make_confirm_token(secret: str, subscriber_id: int, digests: Sequence[str]) -> str:
    """A dated link that confirms `digests` for one subscriber: the digests travel in the
    token, so an address already subscribed adds digests only by confirming them."""
    value = f"{subscriber_id}:{','.join(digests)}"
    return _confirm_signer(secret).sign(value).decode("ascii")


def read_confirm_token(secret: str, token: str, max_age: timedelta) -> tuple[int, list[str]]:
    try:
        value = (
            _confirm_signer(secret)
            .unsign(token, max_age=int(max_age.total_seconds()))
            .decode("ascii")
        )
    except SignatureExpired:
        raise ExpiredToken("this confirmation link has expired") from None
    except (BadData, UnicodeError):
        raise InvalidToken("this confirmation link is not valid") from None
    subscriber, _, digests = value.partition(":")
    if not subscriber.isdigit():
        raise InvalidToken("this confirmation link is not valid")
    return int(subscriber), [d for d in digests.split(",") if d]
