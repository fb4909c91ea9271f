"""A jitter buffer for live network streams: frames that arrive in bursts are released at
their presentation times, holding none longer than ``max_hold_s``.

Why: a network stream (UDP MPEG-TS from ffmpeg, RTSP over a busy link) delivers frames in
bursts a few ms apart; the live consumer keeps only the newest frame per stream, so a burst
shows as one frame. Spacing them by their timestamps lets it show each.

How: frame i is due at ``anchor + pts_i``. A late frame moves the anchor later (the buffer
grows by what the network delayed); a frame that would wait more than ``max_hold_s`` moves
it earlier (the added latency stays bounded); and after ``relax_frames`` frames that all
waited, the anchor moves earlier by half the smallest wait, so the buffer shrinks back once
the bursts stop. Added latency is therefore 0 for an even stream and at most ``max_hold_s``.
"""

from __future__ import annotations


class JitterBuffer:
    """Release times on the caller's monotonic clock (seconds). Not thread-safe."""

    def __init__(self, max_hold_s: float, *, relax_frames: int = 25, max_pts_jump_s: float = 2.0) -> None:
        self.max_hold_s = max(0.0, max_hold_s)
        self.relax_frames = relax_frames
        self.max_pts_jump_s = max_pts_jump_s  # a larger step is a new timeline (reconnect, wrap)
        self.reset()

    def reset(self) -> None:
        """Forget the timeline (after a reconnect the timestamps start somewhere else)."""
        self._anchor: float | None = None
        self._last_pts: float | None = None
        self._min_hold = float("inf")
        self._count = 0

    def release_at(self, pts_s: float | None, arrival_s: float) -> float:
        """When to release a frame with presentation time ``pts_s`` (seconds, any origin)
        that arrived at ``arrival_s``; never earlier than its arrival."""
        if self.max_hold_s <= 0 or pts_s is None:
            return arrival_s
        if (self._anchor is None or self._last_pts is None or pts_s <= self._last_pts - 1e-6
                or pts_s - self._last_pts > self.max_pts_jump_s):
            self.reset()
            self._anchor = arrival_s - pts_s
        self._last_pts = pts_s
        due = self._anchor + pts_s
        if due < arrival_s:  # late: absorb it
            self._anchor += arrival_s - due
            due = arrival_s
        elif due - arrival_s > self.max_hold_s:  # would wait too long: bound the latency
            self._anchor -= due - arrival_s - self.max_hold_s
            due = arrival_s + self.max_hold_s
        self._min_hold = min(self._min_hold, due - arrival_s)
        self._count += 1
        if self._count >= self.relax_frames:
            if self._min_hold > 0:
                self._anchor -= self._min_hold / 2
            self._min_hold, self._count = float("inf"), 0
        return due
