"""What the last build wrote, so the next one renders only the documents that changed.

For each file: a fingerprint of everything its content depends on (the feed's settings,
its page links, and each item's id and stored version), and the size and modification
time the file had when written. A document whose fingerprint matches and whose file is
untouched is not rendered at all; any doubt (no state file, a file edited or deleted by
hand, another version of syndicate) means rendering it, and `write_if_changed` still
leaves identical bytes alone. Deleting the state file is always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from syndicate.output import write_if_changed

log = logging.getLogger(__name__)

FORMAT = 1


def fingerprint(parts: Iterable[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1e")
    return digest.hexdigest()


class BuildState:
    def __init__(self, path: Path, settings: str) -> None:
        self.path = path
        self.settings = settings
        self.files: dict[str, list[str | int]] = {}
        try:
            data = json.loads(path.read_bytes())
            if data.get("format") == FORMAT and data.get("settings") == settings:
                self.files = data["files"]
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            log.warning("%s cannot be read (%s); rendering every feed", path, exc)

    def fresh(self, key: str, print_: str, path: str) -> bool:
        """Whether `path` still holds what the last build wrote for this fingerprint."""
        known = self.files.get(key)
        if known is None or known[0] != print_:
            return False
        try:
            stat = os.stat(path)  # noqa: PTH116 (a str path: no Path object per file)
        except OSError:
            return False
        return known[1:] == [stat.st_size, stat.st_mtime_ns]

    def record(self, key: str, print_: str, path: Path) -> None:
        stat = path.stat()
        self.files[key] = [print_, stat.st_size, stat.st_mtime_ns]

    def save(self) -> None:
        data = {"format": FORMAT, "settings": self.settings, "files": self.files}
        content = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        try:
            write_if_changed(self.path, content)
        except OSError as exc:  # the feeds are written; only the next build's shortcut is lost
            log.warning("cannot write %s: %s", self.path, exc)
