"""Counters kept by the senders and receivers (exposed as ``.stats``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SenderStats:
    sent: int = 0
    refused: int = 0  # live: the socket's queue was full, the frame was dropped at once
    unsubscribed: int = 0  # live: no consumer was subscribed, so the socket discarded the frame
    resent: int = 0  # lossless: frames sent again after acks stopped coming
    acked: int = 0
    source_lost: int = 0  # source-lost notices sent


@dataclass
class StreamStats:
    """Per stream id. ``dropped``: frames never delivered (seq gaps since the first seq seen,
    including frames superseded by a newer one); ``stale``: older or replayed seqs discarded;
    ``restarts``: new producer epochs; ``first_seq``: the first seq seen of the current epoch;
    ``lost``: a source-lost notice came and no frame since."""

    epoch: int | None = None
    last_seq: int | None = None
    first_seq: int | None = None
    received: int = 0
    delivered: int = 0
    dropped: int = 0
    stale: int = 0
    end_of_stream: int = 0
    ended: bool = False
    restarts: int = 0
    source_lost: int = 0
    lost: bool = False


@dataclass
class ReceiverStats:
    messages: int = 0  # every multipart message taken off the socket, valid or not
    malformed: int = 0  # rejected: sum of ``rejected``
    rejected: dict[str, int] = field(default_factory=dict)  # reason key -> count
    stale_discarded: int = 0  # well-formed but older than what was delivered (replay, reorder, resend)
    streams: dict[int, StreamStats] = field(default_factory=dict)
    # lossless only
    duplicates: int = 0
    out_of_window: int = 0
    hold_dropped: int = 0  # out-of-order messages not held or released (bytes, seconds, eviction)

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.streams.values())
