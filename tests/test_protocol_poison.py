"""One bad frame never poisons a stream (issue 15, item 1), over real loopback sockets.

The poison sequence: 10 valid frames, one frame with the JPEG codec, garbage bytes and
seq 1,000,000, then 60 valid frames and end-of-stream. No state may change before a message
is fully valid, so every valid frame after the poison is delivered (lossless: acknowledged).
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import zmq

from endostream.protocol import wire
from endostream.protocol.live import LiveReceiver
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.lossless_sender import LosslessSender
from endostream.protocol.wire import EndOfStream, FrameMessage
from endostream.types import Frame

ANY_TCP = "tcp://127.0.0.1:*"
H, W = 24, 32
POISON_SEQ = 1_000_000


def image(seq: int) -> np.ndarray:
    return np.full((H, W, 3), seq % 256, np.uint8)


def frame(seq: int) -> Frame:
    return Frame(0, seq, time.monotonic_ns(), image(seq))


def poison(epoch: int, variant: str) -> list[bytes]:
    """A JPEG-codec frame whose payload does not decode, with a far-future seq/window_start.
    ``garbage``: random bytes (no JPEG markers); ``truncated``: valid SOI/SOF declaring the
    header's size, cut after the scan header (passes the marker check, fails decoding)."""
    if variant == "garbage":
        payload = np.random.default_rng(1).integers(0, 256, 700, dtype=np.uint8).tobytes()
    else:
        jpg = cv2.imencode(".jpg", image(7))[1].tobytes()
        payload = jpg[:jpg.index(b"\xff\xda") + 14]
    hdr = wire.pack_header(wire.Header("frame", 0, epoch, POISON_SEQ, POISON_SEQ, time.monotonic_ns(),
                                       W, H, 3, "bgr8", "jpeg", "colonoscopy", 0, len(payload)))
    return [hdr, payload]


def valid(epoch: int, seq: int, codec: str) -> list[bytes]:
    return [bytes(p) for p in wire.encode_frame(frame(seq), epoch=epoch, codec=codec)]


@pytest.mark.parametrize("variant", ["garbage", "truncated"])
@pytest.mark.parametrize("codec", ["jpeg", "raw"])
def test_live_poison_in_a_burst(variant, codec):
    """All 72 messages in one burst through one PUB: the newest valid frame and the end of
    stream arrive, nothing after the poison is discarded as stale."""
    epoch = 42
    with LiveReceiver(ANY_TCP, rcvhwm=1000) as rx:
        ctx = zmq.Context.instance()
        pub = ctx.socket(zmq.PUB)
        pub.sndhwm = 1000
        pub.connect(rx.endpoint)
        try:
            seq, deadline = 0, time.monotonic() + 5
            while not rx.recv_newest(20):  # PUB/SUB join delay: frames 0.. until one arrives
                assert time.monotonic() < deadline
                pub.send_multipart(valid(epoch, seq, codec))
                seq += 1
            first = seq
            msgs = [valid(epoch, s, codec) for s in range(first, first + 10)]
            msgs.append(poison(epoch, variant))
            msgs += [valid(epoch, s, codec) for s in range(first + 10, first + 70)]
            msgs.append([bytes(p) for p in wire.encode_end_of_stream(0, epoch, first + 70)])
            for m in msgs:
                pub.send_multipart(m)
            got: list[int] = []
            deadline = time.monotonic() + 10
            while not rx.stats.streams[0].ended and time.monotonic() < deadline:
                got += [m.seq for m in rx.recv_newest(50)]
        finally:
            pub.close(linger=0)
        st = rx.stats.streams[0]
        assert st.ended and st.last_seq == first + 70
        assert got and got[-1] == first + 69, "the newest valid frame was not delivered"
        assert rx.stats.stale_discarded == 0 and st.stale == 0
        assert rx.stats.malformed == 1 and sum(rx.stats.rejected.values()) == 1
        assert set(rx.stats.rejected) <= {"jpeg_invalid", "jpeg_decode", "jpeg_size"}
        # every frame after the sync is delivered or counted as dropped (newest wins), none lost
        assert st.delivered + st.dropped == first + 70 - st.first_seq


@pytest.mark.parametrize("variant", ["garbage", "truncated"])
def test_live_poison_every_frame_after_it_delivered(variant):
    """Lock-step (each message waits until the receiver took it): all 60 frames after the
    poison are delivered, none dropped, none stale."""
    epoch = 43
    with LiveReceiver(ANY_TCP) as rx:
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.connect(rx.endpoint)
        try:
            seq, deadline = 0, time.monotonic() + 5
            while not rx.recv_newest(20):
                assert time.monotonic() < deadline
                pub.send_multipart(valid(epoch, seq, "jpeg"))
                seq += 1
            first, got = seq, []

            def step(parts: list[bytes]) -> None:
                n = rx.stats.messages
                pub.send_multipart(parts)
                t_end = time.monotonic() + 5
                while rx.stats.messages == n and time.monotonic() < t_end:
                    got.extend(m.seq for m in rx.recv_newest(20))
                assert rx.stats.messages > n, "a message never arrived"

            for s in range(first, first + 10):
                step(valid(epoch, s, "jpeg"))
            step(poison(epoch, variant))
            for s in range(first + 10, first + 70):
                step(valid(epoch, s, "jpeg"))
            step([bytes(p) for p in wire.encode_end_of_stream(0, epoch, first + 70)])
        finally:
            pub.close(linger=0)
        assert got == list(range(first, first + 70))
        st = rx.stats.streams[0]
        assert st.ended and st.dropped == 0 and rx.stats.stale_discarded == 0
        assert rx.stats.malformed == 1
        assert [e.seq for e in rx.take_events() if isinstance(e, EndOfStream)] == [first + 70]


@pytest.mark.parametrize("variant", ["garbage", "truncated"])
def test_lossless_poison_every_frame_after_it_acknowledged(variant):
    """The real LosslessSender streams 10 + 60 frames; between them a second client on the
    same (stream, epoch) sends the poison with window_start 1,000,000. Every frame is
    delivered once, in order, and acknowledged to the real sender (not to the poisoner)."""
    with LosslessReceiver(ANY_TCP) as rx, LosslessSender(rx.endpoint, window=8) as tx:
        got: list = []
        stop = threading.Event()

        def consume() -> None:
            while not stop.is_set():
                m = rx.recv(50)
                if m is None:
                    continue
                got.append(m)
                rx.ack_message(m)
                if isinstance(m, EndOfStream):
                    return

        th = threading.Thread(target=consume, daemon=True)
        th.start()
        for s in range(10):
            tx.send(frame(s), timeout_s=10)
        assert tx.flush(10)
        bad = zmq.Context.instance().socket(zmq.DEALER)
        bad.connect(rx.endpoint)
        try:
            bad.send_multipart(poison(tx.epoch, variant))
            deadline = time.monotonic() + 5
            while rx.stats.malformed == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert rx.stats.malformed == 1
            for s in range(10, 70):
                tx.send(frame(s), timeout_s=10)
            assert tx.end_stream(0, timeout_s=10), "not every frame was acknowledged"
            th.join(5)
            assert bad.poll(200) == 0, "the poisoner got an ack"
        finally:
            stop.set()
            bad.close(linger=0)
        frames = [m.seq for m in got if isinstance(m, FrameMessage)]
        assert frames == list(range(70)) and isinstance(got[-1], EndOfStream)
        assert tx.stats.acked == 71 and tx.outstanding == 0
        assert rx.stats.duplicates == 0 and rx.stats.out_of_window == 0
        assert set(rx.stats.rejected) <= {"jpeg_invalid", "jpeg_decode", "jpeg_size"}
