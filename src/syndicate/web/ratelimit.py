"""A sliding-window limit on sign-ups, per address and per client IP.

In memory, per process: enough to stop a form being used to flood an inbox or the list
from one place. Several web processes each keep their own count, so the effective limit
is that many times higher; a site that needs one shared limit puts it in its proxy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW = 3600.0  # seconds: the limits are per hour


class RateLimit:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self.hits: dict[str, deque[float]] = {}
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one attempt for `key`; False when it is over the limit (not counted)."""
        now = self.clock()
        with self.lock:
            hits = self.hits.setdefault(key, deque())
            while hits and hits[0] <= now - WINDOW:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            if len(self.hits) > 100_000:  # a flood of distinct keys: forget the idle ones
                self._forget_idle(now)
            return True

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, v in self.hits.items() if not v or v[-1] <= now - WINDOW]:
            del self.hits[key]
