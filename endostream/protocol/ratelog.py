"""Rate-limited logging for anything a peer can trigger."""

from __future__ import annotations

import logging
import time

from endostream.protocol.limits import LOG_INTERVAL_S


class RateLimitedLog:
    """One log line per key (a reject reason, a handshake failure), then at most one per
    ``interval_s`` per key, saying how many were not logged: a flood of one kind of garbage
    never hides a different problem, and never floods the log."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self.logger, self.interval_s = logger, interval_s
        self.counts: dict[str, int] = {}
        self._last: dict[str, tuple[float, int]] = {}  # key -> (time logged, count then)

    def __call__(self, key: str, text: str, level: int = logging.WARNING) -> None:
        n = self.counts[key] = self.counts.get(key, 0) + 1
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval_s:
            return
        skipped = n - (last[1] if last else 0) - 1
        self._last[key] = (now, n)
        more = f", {skipped} more since the last line" if skipped > 0 else ""
        self.logger.log(level, "%s (%s #%d%s)", text.splitlines()[0][:240] if text else key, key, n, more)
