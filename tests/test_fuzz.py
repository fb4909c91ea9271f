"""Hostile input over real sockets: thousands of malformed messages, then a valid stream.

ENDOSTREAM_FUZZ_N sets the number of messages per receiver (default 2000; the README reports
a 10,000+ run: ENDOSTREAM_FUZZ_N=10000 pytest tests/test_fuzz.py).
"""

from __future__ import annotations

import os
import struct
import threading
import time

import cv2
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from endostream.protocol import wire
from endostream.protocol.live import LiveReceiver, LiveSender
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.lossless_sender import LosslessSender
from endostream.types import Frame
from endostream.protocol.wire import EndOfStream

N = int(os.environ.get("ENDOSTREAM_FUZZ_N", "2000"))
BATCH = 20
EPOCH = 424242


def _frame(seq: int, sid: int = 0, h: int = 24, w: int = 32) -> Frame:
    return Frame(sid, seq, 1, np.full((h, w, 3), seq % 256, np.uint8))


def _valid(seq: int, sid: int, codec: str) -> list[bytes]:
    return [bytes(p) for p in wire.encode_frame(_frame(seq, sid), epoch=EPOCH, codec=codec)]


JPEG = bytes(cv2.imencode(".jpg", np.zeros((24, 32, 3), np.uint8))[1])

sids = st.integers(0, 2**32 - 1) | st.integers(0, 3)
seqs = st.integers(0, 2**64 - 1) | st.integers(0, 50)


@st.composite
def hostile(draw) -> list[bytes]:
    kind = draw(st.integers(0, 8))
    if kind == 0:  # random parts
        return draw(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
    base = _valid(draw(seqs), draw(sids), draw(st.sampled_from(["raw", "jpeg"])))
    hdr = bytearray(base[0])
    if kind == 1:  # truncated or extended header
        cut = draw(st.integers(0, 140))
        return [bytes(hdr[:cut]) + draw(st.binary(max_size=max(0, cut - 127))), base[1]]
    if kind == 2:  # flipped bytes anywhere in the header
        for _ in range(draw(st.integers(1, 6))):
            hdr[draw(st.integers(0, 127))] = draw(st.integers(0, 255))
        return [bytes(hdr), base[1]]
    if kind == 3:  # wrong payload size
        return [bytes(hdr), base[1][: draw(st.integers(0, max(0, len(base[1]) - 1)))]]
    if kind == 4:  # huge declared dimensions (with a payload length that "matches")
        w, h = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
        struct.pack_into("<HH", hdr, 40, w, h)
        return [bytes(hdr), base[1]]
    if kind == 5:  # JPEG codec with garbage, truncated or mis-sized JPEG
        struct.pack_into("<B", hdr, 47, wire.CODECS["jpeg"])
        payload = draw(st.sampled_from([JPEG[: len(JPEG) // 2], JPEG, b"\xff\xd8" + b"\x00" * 64]))
        payload = payload + draw(st.binary(max_size=20))
        struct.pack_into("<I", hdr, 52, len(payload))
        return [bytes(hdr), payload]
    if kind == 6:  # replayed / reordered seqs of one stream and epoch
        return _valid(draw(st.integers(0, 30)), 0, "raw")
    if kind == 7:  # wrong types for the message kind
        struct.pack_into("<B", hdr, 3, draw(st.sampled_from(list(wire.KINDS.values()))))
        return [bytes(hdr), base[1]] + draw(st.lists(st.binary(max_size=10), max_size=2))
    return base  # valid message with hostile stream id / seq


def _pump(rx, recv, sent_before: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while rx.stats.messages < sent_before and time.monotonic() < deadline:
        recv()
    assert rx.stats.messages == sent_before, "messages went missing"


@pytest.fixture(scope="module")
def live_pair():
    ctx = zmq.Context()
    rx = LiveReceiver("tcp://127.0.0.1:*", context=ctx, rcvhwm=100_000, max_width=4096,
                      max_height=4096)
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 100_000
    pub.connect(rx.endpoint)
    sent = 0
    while not rx.recv_newest(20):  # PUB/SUB join delay
        pub.send_multipart(_valid(sent, 7, "raw"))
        sent += 1
    rx.stats.messages = 0
    yield ctx, rx, pub, {"sent": 0}
    pub.close(0)
    rx.close()
    ctx.term()


@settings(max_examples=max(1, N // BATCH), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(batch=st.lists(hostile(), min_size=BATCH, max_size=BATCH))
def test_live_receiver_survives_hostile_messages(live_pair, batch):
    ctx, rx, pub, count = live_pair
    for parts in batch:
        pub.send_multipart(parts)
    count["sent"] += len(batch)
    _pump(rx, lambda: rx.recv_newest(10), count["sent"])
    assert len(rx.stats.streams) <= rx.max_streams


def test_live_valid_stream_after_fuzz(live_pair):
    ctx, rx, pub, count = live_pair
    assert count["sent"] >= N and rx.stats.malformed > N // 4
    with LiveSender(rx.endpoint, context=ctx) as tx:
        got, seq, deadline = [], 0, time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            tx.send(_frame(seq, sid=0))
            seq += 1
            got += [m for m in rx.recv_newest(20) if m.epoch == tx.epoch]
    assert len(got) >= 5
    assert [m.seq for m in got] == sorted({m.seq for m in got})
    assert got[-1].frame.image[0, 0, 0] == got[-1].seq % 256


@pytest.fixture(scope="module")
def lossless_pair():
    ctx = zmq.Context()
    rx = LosslessReceiver("tcp://127.0.0.1:*", context=ctx, max_width=4096, max_height=4096)
    dealer = ctx.socket(zmq.DEALER)
    dealer.sndhwm = 100_000
    dealer.connect(rx.endpoint)
    yield ctx, rx, dealer, {"sent": 0}
    dealer.close(0)
    rx.close()
    ctx.term()


@settings(max_examples=max(1, N // BATCH // 2), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(batch=st.lists(hostile(), min_size=BATCH, max_size=BATCH))
def test_lossless_receiver_survives_hostile_messages(lossless_pair, batch):
    ctx, rx, dealer, count = lossless_pair
    for parts in batch:
        dealer.send_multipart(parts)
    count["sent"] += len(batch)

    def recv():
        m = rx.recv(10)
        if m is not None:
            rx.ack_message(m)

    _pump(rx, recv, count["sent"])
    assert len(rx._streams) <= rx.max_streams and len(rx._ready) < 10_000


def test_lossless_valid_stream_after_fuzz(lossless_pair):
    ctx, rx, dealer, count = lossless_pair
    assert count["sent"] >= N // 2
    while rx.recv(10) is not None:  # whatever the fuzz left deliverable
        pass
    ok: list = []

    def produce():
        with LosslessSender(rx.endpoint, window=4) as tx:
            for i in range(20):
                tx.send(_frame(i, sid=1), timeout_s=10)
            ok.append(tx.end_stream(1, timeout_s=10))

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    seqs, deadline = [], time.monotonic() + 15
    while time.monotonic() < deadline:
        m = rx.recv(50)
        if m is None or m.epoch == EPOCH:
            continue
        rx.ack_message(m)
        if isinstance(m, EndOfStream):
            break
        seqs.append(m.seq)
    t.join(5)
    assert seqs == list(range(20)) and ok == [True]
