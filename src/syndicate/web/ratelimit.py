"""A sliding-window limit on sign-ups, per address and per client IP.

In memory, per process: enough to stop a form being used to flood an inbox or the list
from one place. Several web processes each keep their own count, so the effective limit
is that many times higher; a site that needs one shared limit puts it in its proxy.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW = 3600.0  # seconds: the limits are per hour
MAX_KEYS = 100_000  # the least recently seen keys are forgotten beyond this


class RateLimit:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self.hits: OrderedDict[str, deque[float]] = OrderedDict()
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one attempt for `key`; False when it is over the limit (not counted)."""
        now = self.clock()
        with self.lock:
            hits = self.hits.pop(key, None) or deque()
            self.hits[key] = hits  # now the most recently seen
            while hits and hits[0] <= now - WINDOW:
                hits.popleft()
            if len(self.hits) > MAX_KEYS:  # a flood of distinct keys: drop the oldest
                self.hits.popitem(last=False)
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


def address_key(address: str) -> str:
    """One key per mailbox: name+anything@example.com counts as name@example.com."""
    local, _, domain = address.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def client_key(host: str) -> str:
    """One key per client: an IPv6 client owns a whole /64, so that is what counts."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
