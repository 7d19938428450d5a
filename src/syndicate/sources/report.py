"""What a gather run did, for the CLI and the logs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger("syndicate.sources")


@dataclass
class GatherReport:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, where: str, problem: str) -> None:
        message = f"{where}: {problem}"
        self.errors.append(message)
        log.error("%s", message)

    @property
    def changed(self) -> bool:
        return bool(self.new or self.updated or self.withdrawn)

    def summary(self) -> str:
        text = (
            f"{self.new} new, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.withdrawn} withdrawn"
        )
        if self.errors:
            text += f", {len(self.errors)} error(s)"  # files, sources, or pages of a sitemap
        return text
