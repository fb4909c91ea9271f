"""Rejected messages: a one-line reason each, counted and rate-limited per reason."""

from __future__ import annotations

import logging
import time

import numpy as np
import zmq

from endostream.protocol import wire
from endostream.protocol.live import LiveReceiver
from endostream.protocol.ratelog import RateLimitedLog
from endostream.types import Frame

ANY_TCP = "tcp://127.0.0.1:*"


def test_rate_limit_is_per_reason(caplog):
    rl = RateLimitedLog(logging.getLogger("t"), interval_s=60)
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(500):
            rl("magic", "bad magic")
        rl("version", "unsupported protocol version 9")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, "a flood of one reason hid another (or flooded the log)"
    assert "version" in lines[1] and "#1" in lines[1]
    assert rl.counts == {"magic": 500, "version": 1}


def test_rate_limit_reports_what_it_skipped(caplog):
    rl = RateLimitedLog(logging.getLogger("t"), interval_s=0.05)
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(10):
            rl("magic", "bad magic")
        time.sleep(0.08)
        rl("magic", "bad magic")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "#11" in lines[1] and "9 more" in lines[1]


def test_receiver_counts_rejects_and_stale_by_reason(caplog):
    """Over a real socket: 200 bad-magic, 1 bad-version, 1 ack, 3 replayed frames."""
    epoch = 5
    good = [bytes(p) for p in wire.encode_frame(
        Frame(0, 10, 1, np.zeros((8, 8, 3), np.uint8)), epoch=epoch)]
    with caplog.at_level(logging.INFO, logger="endostream.protocol.sockets"), \
            LiveReceiver(ANY_TCP, rcvhwm=1000) as rx:
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.sndhwm = 1000
        pub.connect(rx.endpoint)
        try:
            deadline = time.monotonic() + 5
            while not rx.recv_newest(20):
                assert time.monotonic() < deadline
                pub.send_multipart(good)
            for _ in range(200):
                pub.send_multipart([b"XX" + good[0][2:], good[1]])
            pub.send_multipart([good[0][:2] + b"\x09" + good[0][3:], good[1]])
            pub.send_multipart([bytes(p) for p in wire.encode_ack(0, epoch, 3)])
            for _ in range(3):
                pub.send_multipart(good)  # seq 10 again: replayed
            n = 1 + 200 + 1 + 1 + 3
            while rx.stats.messages < n and time.monotonic() < deadline + 5:
                rx.recv_newest(20)
        finally:
            pub.close(linger=0)
    s = rx.stats
    assert s.rejected == {"magic": 200, "version": 1, "ack_to_consumer": 1}
    assert s.malformed == 202
    assert s.stale_discarded >= 3 and s.streams[0].stale == s.stale_discarded
    text = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage() or "discarded" in r.getMessage()]
    assert sum("(magic #" in t for t in text) == 1
    assert any("(version #1" in t for t in text) and any("(ack_to_consumer #1" in t for t in text)
    assert any("(stale #1" in t for t in text)
    assert all("\n" not in t for t in text)
