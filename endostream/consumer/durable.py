"""Lossless acknowledgement: a message is acknowledged only when every storage sink holds it
durably and its journal row is written, so nothing acknowledged is ever missing after a
crash, a full disk or a sink error.

A storage sink is one with ``durable_count`` (the video and mask sinks): after a frame's
``write`` its ``frames_accepted`` is the count that ``durable_count`` must reach for the
frame to be durable (the video's fragment is written when the next frame comes or on
``sync``; a mask PNG is durable when renamed into place). Then, in order: the journal row
(``frames.csv``, what a restarted consumer skips), then the receiver's ack (its state file,
then the reply). Display sinks (viewer, window, re-publish) hold nothing and never block.

When a storage sink fails, the journal or the state file cannot be written, or a frame could
not be drawn, acknowledgement stops for good: one error line says what failed and why,
every frame from then on is counted in ``not_written``, and the producer keeps the frames
and resends them to the next consumer. Nothing after the failure is written either, so a
restarted consumer (same ``out``) finds exactly the frames that were acknowledged.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from typing import Any

log = logging.getLogger(__name__)

MAX_COUNTED_EPOCHS = 256  # (stream, epoch) pairs whose written frames the summary lists


def _inner(sink: Any) -> Any:
    return getattr(sink, "sink", sink)  # GuardedSink wraps the real sink


class DurableAcks:
    """Acknowledge lossless messages once they are durable (see the module docstring).

    Args:
        receiver: the lossless receiver (``ack_message``).
        sinks: the consumer's guarded sinks.
        journal: ``write(row)`` appending one ``frames.csv`` row (raises OSError).
    """

    def __init__(self, receiver: Any, sinks: list[Any], journal: Any) -> None:
        self.rx, self.journal = receiver, journal
        self.storage = [g for g in sinks if hasattr(_inner(g), "durable_count")]
        self._pending: deque[tuple[Any, dict[str, Any] | None, list[tuple[Any, int]]]] = deque()
        self.stopped: str | None = None  # why acknowledgement stopped
        self.not_written = 0  # frames received but never acknowledged (after a failure)
        self.acked = 0
        self.written: OrderedDict[tuple[int, int], int] = OrderedDict()  # (stream, epoch) -> frames

    # ---- from the consumer
    def add(self, msg: Any, row: dict[str, Any] | None, *, ok: bool = True,
            why: str = "") -> None:
        """``msg`` went through the display path (``ok=False``: it could not be written, ``why``)."""
        if self.stopped is None and not ok:
            self._stop(why)
        if self.stopped is not None:
            self.not_written += _is_frame(msg)
            return
        marks = [(g, _inner(g).frames_accepted) for g in self.storage]
        self._pending.append((msg, row, marks))
        self.commit()

    def sync(self) -> None:
        """Make every storage sink durable now (a stream ended: its last frames must not wait
        for another stream's next frame), then acknowledge what became durable."""
        for g in self.storage:
            if hasattr(_inner(g), "sync") and not g.disabled:
                g.call("sync")
        self.commit()

    def commit(self) -> None:
        """Acknowledge, in order, every pending message that is durable everywhere."""
        while self._pending and self.stopped is None:
            failed = next((g for g in self.storage if g.disabled), None)
            if failed is not None:
                self._stop(f"sink {failed.name} failed: {failed.error}")
                break
            msg, row, marks = self._pending[0]
            if any(_inner(g).durable_count < n for g, n in marks):
                return
            try:
                if row is not None:
                    self.journal(row)
                self.rx.ack_message(msg)  # after the journal: acknowledged means findable
            except OSError as exc:
                self._stop(str(exc))
                break
            self._pending.popleft()
            if _is_frame(msg):
                self.acked += 1
                self._count(msg)

    def summary(self) -> dict[str, Any]:
        return {"acks_stopped": self.stopped, "frames_not_written": self.not_written,
                "frames_acknowledged": self.acked,
                "written_by_epoch": {f"{sid}:{epoch:016x}": n for (sid, epoch), n in self.written.items()}}

    # ---- internals
    def _stop(self, why: str) -> None:
        self.stopped = why or "unknown error"
        held = sum(_is_frame(m) for m, _, _ in self._pending)
        self.not_written += held
        self._pending.clear()
        log.error("lossless: acknowledgement stopped: %s; %d frame(s) not acknowledged, and none "
                  "will be from now on (the producer keeps them and resends them to the next "
                  "consumer); fix the cause and restart the consumer with the same out folder",
                  self.stopped, held)

    def _count(self, msg: Any) -> None:
        key = (msg.stream_id, msg.epoch)
        self.written[key] = self.written.pop(key, 0) + 1
        if len(self.written) > MAX_COUNTED_EPOCHS:
            self.written.popitem(last=False)


def _is_frame(msg: Any) -> bool:
    return hasattr(msg, "frame")
