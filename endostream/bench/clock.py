"""Clock offset between two hosts from a ping exchange (NTP's on-wire method, min-RTT filter).

On one host producer and consumer share ``time.monotonic_ns`` and no offset is needed. Across
hosts each ping gives four stamps: t0 client send, t1 server receive, t2 server send, t3 client
receive (t0, t3 on the client's clock; t1, t2 on the server's). Then

    offset = ((t1 - t0) + (t2 - t3)) / 2      server clock - client clock
    delay  = (t3 - t0) - (t2 - t1)            round trip spent on the wire

If the two one-way trips were equal the offset is exact; whatever the asymmetry, the true
offset lies within offset +- delay / 2. Queueing only ever adds delay, so the sample with the
smallest round trip has the tightest bound: that is the estimate, and delay/2 its uncertainty.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import zmq

_STAMPS = struct.Struct("<qq")


@dataclass(frozen=True)
class ClockOffset:
    """``offset_ns``: server clock minus client clock; subtract it from a server stamp to
    express it on the client's clock. The true offset lies within +- ``uncertainty_ns``."""

    offset_ns: int
    uncertainty_ns: int
    min_rtt_ns: int
    samples: int

    def as_dict(self) -> dict[str, float | int]:
        return {"offset_ms": self.offset_ns / 1e6, "uncertainty_ms": self.uncertainty_ns / 1e6,
                "min_rtt_ms": self.min_rtt_ns / 1e6, "samples": self.samples}


def estimate_offset(samples: Sequence[tuple[int, int, int, int]]) -> ClockOffset:
    """(t0, t1, t2, t3) ns per ping -> the min-round-trip offset estimate and its bound."""
    if not samples:
        raise ValueError("estimate_offset: no ping samples")
    best = None
    for t0, t1, t2, t3 in samples:
        delay = (t3 - t0) - (t2 - t1)
        if delay < 0:
            continue  # impossible unless a clock stepped mid-ping; the sample is worthless
        if best is None or delay < best[0]:
            best = (delay, ((t1 - t0) + (t2 - t3)) // 2)
    if best is None:
        raise ValueError("estimate_offset: every sample has a negative round trip")
    delay, offset = best
    return ClockOffset(int(offset), int(delay // 2 + delay % 2), int(delay), len(samples))


def serve_pings(sock: zmq.Socket, count: int, timeout_ms: int = 5000) -> int:
    """Answer up to ``count`` pings on a bound REP socket with (t1, t2); returns the number
    answered (fewer when the client goes quiet for ``timeout_ms``)."""
    done = 0
    while done < count and sock.poll(timeout_ms):
        sock.recv()
        t1 = time.monotonic_ns()
        sock.send(_STAMPS.pack(t1, time.monotonic_ns()))
        done += 1
    return done


def ping(sock: zmq.Socket, count: int = 50, timeout_ms: int = 2000) -> ClockOffset:
    """Ping a :func:`serve_pings` peer ``count`` times over a connected REQ socket."""
    samples = []
    for _ in range(count):
        t0 = time.monotonic_ns()
        sock.send(b"p")
        if not sock.poll(timeout_ms):
            raise TimeoutError(f"clock ping: no reply within {timeout_ms} ms")
        t1, t2 = _STAMPS.unpack(sock.recv())
        samples.append((t0, t1, t2, time.monotonic_ns()))
    return estimate_offset(samples)


def same_host() -> dict[str, float | int | str]:
    """What the report records when both ends read the same monotonic clock."""
    return {"method": "same host, shared time.monotonic_ns", "offset_ms": 0.0, "uncertainty_ms": 0.0}
