"""Kind 5 "source lost": the producer's source dropped, the stream is not over."""

from __future__ import annotations

import time

import numpy as np

from endostream.protocol import wire
from endostream.protocol.live import LiveReceiver, LiveSender
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.lossless_sender import LosslessSender
from endostream.protocol.wire import EndOfStream, FrameMessage, SourceLost
from endostream.types import Frame

ANY_TCP = "tcp://127.0.0.1:*"


def frame(seq: int, stream_id: int = 0) -> Frame:
    return Frame(stream_id, seq, time.monotonic_ns(), np.full((24, 32, 3), seq % 256, np.uint8))


def test_source_lost_round_trip():
    parts = [bytes(p) for p in wire.encode_source_lost(3, 77, 12, t_ns=555)]
    assert parts[0][3] == 5 and parts[1] == b""
    assert wire.decode_message(parts) == SourceLost(3, 77, 12, 555)


def test_live_source_lost_reported_then_frames_resume():
    with LiveReceiver(ANY_TCP) as rx, LiveSender(rx.endpoint) as tx:
        seq, deadline = 0, time.monotonic() + 5
        while not rx.recv_newest(20):  # PUB/SUB join delay
            assert time.monotonic() < deadline
            tx.send(frame(seq))
            seq += 1
        rx.take_events()
        assert tx.source_lost(0)
        events: list = []
        deadline = time.monotonic() + 3
        while not events and time.monotonic() < deadline:
            rx.recv_newest(20)
            events = rx.take_events()
        assert events == [SourceLost(0, tx.epoch, seq, events[0].t_ns)]
        st = rx.stats.streams[0]
        assert st.lost and st.source_lost == 1 and not st.ended
        got: list = []
        deadline = time.monotonic() + 3
        while not got and time.monotonic() < deadline:
            sent = tx.send(frame(seq))  # the source is back: the next frame carries the same seq
            got = rx.recv_newest(50)
            assert sent or not got
        assert [m.seq for m in got] == [seq] and not rx.stats.streams[0].lost


def test_lossless_source_lost_delivered_in_order_and_once():
    with LosslessReceiver(ANY_TCP) as rx, LosslessSender(rx.endpoint, window=64) as tx:
        for i in range(5):
            tx.send(frame(i))
        tx.source_lost(0)
        tx.source_lost(0)  # said twice before the source came back: delivered once
        for i in range(5, 10):
            tx.send(frame(i))
        got: list = []
        deadline = time.monotonic() + 10
        while not (got and isinstance(got[-1], EndOfStream)) and time.monotonic() < deadline:
            m = rx.recv(50)
            tx.service(0)
            if m is not None:
                got.append(m)
                rx.ack_message(m)  # a no-op for SourceLost
            if len(got) == 11 and tx.outstanding == 0 and not any(isinstance(g, EndOfStream) for g in got):
                tx._queue(0, 10, wire.encode_end_of_stream(0, tx.epoch, 10))
        kinds = [("f", m.seq) if isinstance(m, FrameMessage) else (type(m).__name__, m.seq) for m in got]
        assert kinds == ([("f", i) for i in range(5)] + [("SourceLost", 5)]
                         + [("f", i) for i in range(5, 10)] + [("EndOfStream", 10)])
        st = rx.stats.streams[0]
        assert st.source_lost == 1 and not st.lost and st.ended
        assert tx.flush(5) and not tx.never_accepted
