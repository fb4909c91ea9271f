"""Which stream ids the live consumer keeps state for. Stream ids are the peer's choice, so
their number is bounded: at most ``max_streams`` at a time; a stream that stops sending
before it became a room (``room_frames`` frames) is forgotten once it is quiet for
``idle_s``, without a NO SIGNAL card (one stray frame is not a procedure room). When the
table is full, a new id takes the place of the least recently seen stream that is not yet a
room, else of the least recently seen room quiet for ``idle_s``; when every stream in the
table is a room that is sending, frames of new ids are refused and counted."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

# A stream becomes a room (NO SIGNAL cards, kept while quiet) after this many frames shown:
# a fifth of a second of a real feed, more than a scanner sending a frame or two per id.
ROOM_FRAMES = 5


@dataclass
class _Seen:
    last_t: float
    frames: int = 0


class StreamTable:
    """Admission and eviction of live stream ids (see the module docstring).

    Args:
        max_streams: streams held at once (``transport.max_streams``).
        idle_s: a stream quiet this long may be evicted (the NO SIGNAL threshold).
        room_frames: frames after which a stream is a room.
    """

    def __init__(self, max_streams: int, idle_s: float, room_frames: int = ROOM_FRAMES) -> None:
        if max_streams < 1:
            raise ValueError(f"transport.max_streams={max_streams}: expected >= 1")
        self.max_streams, self.idle_s, self.room_frames = int(max_streams), float(idle_s), room_frames
        self._seen: OrderedDict[int, _Seen] = OrderedDict()  # least recently seen first
        self.refused = 0  # frames of new ids refused while the table was full of active streams
        self.evicted = 0  # streams forgotten (quiet non-rooms, or quiet rooms making way)
        self._gone: list[int] = []

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, stream_id: int) -> bool:
        return stream_id in self._seen

    def admit(self, stream_id: int, now: float) -> bool:
        """A frame of ``stream_id`` arrived: True when the consumer should handle it."""
        seen = self._seen.get(stream_id)
        if seen is None:
            if len(self._seen) >= self.max_streams and not self._evict_one(now):
                self.refused += 1
                return False
            seen = self._seen[stream_id] = _Seen(now)
        self._seen.move_to_end(stream_id)
        seen.last_t = now
        seen.frames += 1
        return True

    def is_room(self, stream_id: int) -> bool:
        seen = self._seen.get(stream_id)
        return seen is not None and seen.frames >= self.room_frames

    def expire(self, now: float) -> list[int]:
        """Streams to forget now: quiet non-rooms, and those evicted to admit new ids."""
        for sid, seen in list(self._seen.items()):
            if seen.frames < self.room_frames and now - seen.last_t >= self.idle_s:
                self._drop(sid)
        gone, self._gone = self._gone, []
        return gone

    def _evict_one(self, now: float) -> bool:
        # least recently seen first: a stray id before any room, a quiet room before refusing
        for sid, seen in self._seen.items():
            if seen.frames < self.room_frames:
                self._drop(sid)
                return True
        for sid, seen in self._seen.items():
            if now - seen.last_t >= self.idle_s:
                self._drop(sid)
                return True
        return False

    def _drop(self, stream_id: int) -> None:
        del self._seen[stream_id]
        self._gone.append(stream_id)
        self.evicted += 1
