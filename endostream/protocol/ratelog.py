"""Rate-limited logging for anything a peer can trigger (malformed messages, refused keys,
stream ids coming and going): the one limiter every such log line goes through."""

from __future__ import annotations

import logging
import time

from endostream.protocol.limits import LOG_INTERVAL_S, LOG_MAX_KEYS, LOG_MAX_LINES


class RateLimitedLog:
    """The first line of each key (a reject reason, a refused handshake), then at most one
    per ``interval_s`` per key, each saying how many were not logged; and over all keys
    together at most ``max_lines`` lines per ``interval_s``, so a peer that varies what it
    sends (fresh keys, fresh stream ids) cannot flood the log either. A flood of one kind of
    garbage never hides a different problem: each key keeps its own first line while the
    overall budget lasts. Keys are code-chosen words, never peer data; their number is capped
    all the same (``max_keys``: beyond it, keys share the ``"other"`` slot).

    ``per_key=False``: only the overall budget applies and lines are logged as they are
    (state transitions: each is worth a line until a peer makes them a flood); a line after
    suppressed ones says how many were not logged."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S,
                 max_lines: int = LOG_MAX_LINES, max_keys: int = LOG_MAX_KEYS, *,
                 per_key: bool = True) -> None:
        self.logger, self.interval_s = logger, interval_s
        self.max_lines, self.max_keys, self.per_key = max_lines, max_keys, per_key
        self._unlogged = 0  # suppressed since the last line (per_key=False)
        self.counts: dict[str, int] = {}
        self.suppressed = 0  # lines not logged, all keys together
        self._last: dict[str, tuple[float, int]] = {}  # key -> (time logged, count then)
        self._window_t = -float("inf")  # start of the current overall window
        self._window_lines = 0

    def __call__(self, key: str, text: str, level: int = logging.WARNING) -> bool:
        """Count one event of ``key``; log ``text`` (its first line) when allowed. Returns
        whether it was logged."""
        if key not in self.counts and len(self.counts) >= self.max_keys:
            key = "other"
        n = self.counts[key] = self.counts.get(key, 0) + 1
        now = time.monotonic()
        last = self._last.get(key)
        if self.per_key and last is not None and now - last[0] < self.interval_s:
            self.suppressed += 1
            return False
        if now - self._window_t >= self.interval_s:
            self._window_t, self._window_lines = now, 0
        if self._window_lines >= self.max_lines:
            self.suppressed += 1
            self._unlogged += 1
            return False
        self._window_lines += 1
        if not self.per_key:
            more = f" ({self._unlogged} similar lines not logged before this one)" if self._unlogged else ""
            self._unlogged = 0
            self.logger.log(level, "%s%s", text.splitlines()[0][:240] if text else key, more)
            return True
        skipped = n - (last[1] if last else 0) - 1
        self._last[key] = (now, n)
        more = f", {skipped} more since the last line" if skipped > 0 else ""
        self.logger.log(level, "%s (%s #%d%s)", text.splitlines()[0][:240] if text else key, key, n, more)
        return True
