"""A rate-limited log of refused messages and connections: one summary line per interval, with counts.

A peer (or a flood of handshakes) may be refused thousands of times a second; one line each would
fill the disk.  Counting is thread-safe (the ZAP handler counts from its own thread); the main loop
calls :meth:`RejectionLog.flush` often and a line is written at most once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

DEFAULT_INTERVAL_S = 10.0


class RejectionLog:
    def __init__(self, logger: logging.Logger, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._counts: Counter[str] = Counter()
        self._last_detail = ""
        self._lock = threading.Lock()
        self._next_line = time.monotonic()  # the first refusal is reported at once, later ones in summaries

    def count(self, reason: str, detail: str = "") -> None:
        """Note one refusal; ``reason`` groups the counts, ``detail`` (e.g. the error text) is kept for the last one."""
        with self._lock:
            self._counts[reason] += 1
            self._last_detail = detail or reason

    def flush(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._counts or now < self._next_line:
                return
            counts, detail = self._counts, self._last_detail
            self._counts = Counter()
            self._next_line = now + self.interval_s
        total = sum(counts.values())
        summary = ", ".join(f"{count} {reason}" for reason, count in counts.most_common())
        self.logger.warning("Refused since the last such line (one per %g s at most): %s; %d in all (last: %s)",
                            self.interval_s, summary, total, detail)
