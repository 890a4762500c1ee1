"""A sliding-window limit on failed token checks, per client address.

Tokens are 256-bit secrets, so guessing one is hopeless anyway; the limit keeps a client that
tries from costing the database a lookup per guess and makes such a client visible (429s in the
access log). Used by the inbox (``copyhunt.inbox.app``) for the sign-in form and Bearer tokens::

    limiter = FailureLimiter(max_failures=10, window_seconds=300)
    wait = limiter.retry_after(address)   # None: go ahead; else seconds to wait (send 429)
    ... if the token was wrong: limiter.record_failure(address)

Only failures count, and a success does not reset them: a customer holding a valid token must not
be able to clear the count between guesses at someone else's. The state is in memory, per process:
several inbox processes each allow ``max_failures`` (still a constant factor). The client address is
what the server saw; behind a reverse proxy, let uvicorn resolve it (``--forwarded-allow-ips``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from typing import Callable

__all__ = ["FailureLimiter"]


class FailureLimiter:
    """At most ``max_failures`` failures per key within any ``window_seconds``.

    Memory is bounded: at most ``max_keys`` addresses are tracked; beyond that the addresses whose
    last failure is oldest are forgotten first (a flood of fresh addresses cannot exhaust memory,
    and the cost is only that the forgotten ones start counting again). Thread-safe: FastAPI runs
    sync routes on a thread pool.
    """

    def __init__(
        self,
        max_failures: int,
        window_seconds: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window_seconds <= 0 or max_keys < 1:
            raise ValueError("max_failures and max_keys must be >= 1 and window_seconds > 0")
        self.max_failures = max_failures
        self.window = float(window_seconds)
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()  # least recently failed first
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> int | None:
        """None when ``key`` may try now; else whole seconds until its oldest counted failure expires."""
        with self._lock:
            now = self._clock()
            times = self._recent(key, now)
            if times is None or len(times) < self.max_failures:
                return None
            return max(1, math.ceil(times[0] + self.window - now))

    def record_failure(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque(maxlen=self.max_failures)
            times.append(now)
            self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def tracked(self) -> int:
        """How many addresses have failures inside the window (for tests and metrics)."""
        with self._lock:
            now = self._clock()
            return sum(1 for key in list(self._failures) if self._recent(key, now) is not None)
