"""Feed folders: the URL segment of a tag, author or source, and which feed owns a folder.

`feed_slug` is not `sources.content.slugify` (which makes review ids and must never
change): it keeps every ASCII value's folder exactly as before, but spells accented
letters without their accents (`Ciné` → `cine`) and gives a value with letters that have
no ASCII spelling (`日本映画`), or none at all (`★`, `..`), a short stable hash, so that
such values no longer share one folder.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from syndicate.feeds.model import HISTORY

# Letters NFKD does not take apart, spelled the usual way in URLs.
_LATIN = str.maketrans(
    {"ß": "ss", "æ": "ae", "ø": "o", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"}
)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
MAX_SLUG = 255  # a folder name's length limit on common file systems


def _hash(value: str) -> str:
    # Spellings that differ only in case or Unicode form ("ＡＢ", "ab") share a feed.
    text = unicodedata.normalize("NFKC", value).casefold()
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass"), usedforsecurity=False)
    return digest.hexdigest()[:8]


def feed_slug(value: str) -> str:
    """The folder name of a tag's (author's, source's) feeds; never empty, always ASCII.

    ASCII values keep the folder they always had: lowercased, each run of other
    characters made one "-". Never change what this returns for a value: it is part of
    each feed's URL and Atom id.
    """
    if value.isascii():
        slug = _NOT_SLUG.sub("-", value.lower()).strip("-")
        lossy = False
    else:
        text = unicodedata.normalize("NFKD", value.lower())
        text = "".join(c for c in text if not unicodedata.combining(c)).translate(_LATIN)
        slug = _NOT_SLUG.sub("-", text).strip("-")
        # Letters or digits with no ASCII spelling were dropped: "日本映画 2024" must not
        # share the feed of "中国映画 2024".
        lossy = any(not c.isascii() and c.isalnum() for c in text)
    if not slug:
        return f"t-{_hash(value)}"
    if lossy:
        slug = f"{slug[: MAX_SLUG - 9]}-{_hash(value)}"
    elif len(slug) > MAX_SLUG:
        slug = f"{slug[: MAX_SLUG - 9].rstrip('-')}-{_hash(value)}"
    return slug


RESERVED = {"archive": "the digests' issue pages"}  # first segments of folders not for feeds


class Folders:
    """Which feed owns which folder, so that no feed writes into another's.

    A feed owns its folder and everything under its history/ (its archive pages). Feeds
    whose folder is fixed claim theirs first; a per-value feed (one per tag, author or
    source) whose folder another feed owns, or that would hold another feed within its
    own history/, is refused.
    """

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}  # folder -> the key of the feed that owns it
        # Folders whose history/ holds another feed's folder -> that feed's key.
        self.nested: dict[str, str] = {}

    def owner(self, folder: str) -> str | None:
        """Who already owns `folder` or stands in its way; None if it is free."""
        if folder in self.owners:
            return self.owners[folder]
        parts = folder.split("/")[:-1]
        if parts and parts[0] in RESERVED:
            return RESERVED[parts[0]]
        for index, part in enumerate(parts):
            if part == HISTORY:
                parent = "".join(f"{p}/" for p in parts[:index])
                if parent in self.owners:
                    return self.owners[parent]
        return self.nested.get(folder)

    def claim(self, folder: str, key: str) -> None:
        self.owners[folder] = key
        parts = folder.split("/")[:-1]
        for index, part in enumerate(parts):
            if part == HISTORY:
                self.nested.setdefault("".join(f"{p}/" for p in parts[:index]), key)
