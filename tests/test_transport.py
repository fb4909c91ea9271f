"""Transport over real loopback sockets: live (newest wins) and lossless (acked, in order)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from endostream.protocol import wire
from endostream.protocol.factory import open_receiver, open_sender
from endostream.protocol.live import LiveReceiver, LiveSender
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.lossless_sender import LosslessSender
from endostream.protocol.sockets import check_bind_endpoint
from endostream.types import Frame
from endostream.protocol.wire import EndOfStream, FrameMessage

ANY_TCP = "tcp://127.0.0.1:*"


def frame(seq: int, stream_id: int = 0, h: int = 48, w: int = 64) -> Frame:
    return Frame(stream_id, seq, time.monotonic_ns(), np.full((h, w, 3), seq % 256, np.uint8),
                 stamps_ns={"grab": time.monotonic_ns()})


def sync_live(tx: LiveSender, rx: LiveReceiver, stream_id: int = 0, timeout_s: float = 5.0) -> int:
    """PUB/SUB has a join delay: send until the receiver sees a frame; return the next seq."""
    seq, deadline = 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tx.send(frame(seq, stream_id))
        seq += 1
        if rx.recv_newest(20):
            return seq
    raise AssertionError("live receiver never got a frame")


def test_bind_refuses_non_loopback():
    for ep in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.1.2.3:5555", "tcp://eth0:1"):
        with pytest.raises(ValueError, match="loopback"):
            check_bind_endpoint(ep)
    for ep in ("tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:1", "ipc:///tmp/x",
               "inproc://x"):
        check_bind_endpoint(ep)
    with pytest.warns(UserWarning, match="beyond loopback"):
        check_bind_endpoint("tcp://0.0.0.0:5555", allow_remote=True)
    with pytest.raises(ValueError, match="loopback"):
        LiveReceiver("tcp://0.0.0.0:*")


@pytest.mark.parametrize("scheme", ["tcp", "ipc", "inproc"])
def test_live_delivery_over_each_scheme(scheme, tmp_path):
    ctx = zmq.Context()
    ep = {"tcp": ANY_TCP, "ipc": f"ipc://{tmp_path}/live.sock", "inproc": "inproc://live"}[scheme]
    try:
        with LiveReceiver(ep, context=ctx) as rx, LiveSender(rx.endpoint, context=ctx) as tx:
            seq = sync_live(tx, rx)
            tx.send(frame(seq))
            got = []
            deadline = time.monotonic() + 3
            while not got and time.monotonic() < deadline:
                got = rx.recv_newest(50)
            assert [m.seq for m in got] == [seq]
            assert got[0].frame.image[0, 0, 0] == seq % 256
            assert {"grab", "encode", "send", "receive", "decode"} <= set(got[0].frame.stamps_ns)
    finally:
        ctx.term()


def test_live_first_frame_waits_for_the_subscription_and_a_gone_consumer_is_never_counted_sent():
    """A publisher discards what it sends before the consumer's subscription reaches it (the slow
    joiner): the sender waits for the subscription, so frame 0 of a fresh connection arrives;
    once the consumer has gone, frames are counted as unsubscribed, not as sent."""
    for attempt in range(3):  # the race is lost in microseconds: try it more than once
        rx = LiveReceiver(ANY_TCP)
        try:
            with LiveSender(rx.endpoint) as tx:
                deadline = time.monotonic() + 5
                while not tx.wait_for_consumer(0.02) and time.monotonic() < deadline:
                    rx.recv_newest(10)  # a bound socket attaches its new peer when it is used
                assert tx.subscribed and tx.send(frame(0)) and tx.stats.sent == 1
                got, deadline = [], time.monotonic() + 3
                while not got and time.monotonic() < deadline:
                    got = rx.recv_newest(50)
                assert [m.seq for m in got] == [0] and rx.stats.streams[0].first_seq == 0
                rx.close()
                deadline = time.monotonic() + 5
                while tx.wait_for_consumer(0.05) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert not tx.send(frame(1)) and (tx.stats.sent, tx.stats.unsubscribed) == (1, 1)
        finally:
            rx.close()


def test_live_slow_receiver_drops_and_never_goes_back():
    with LiveReceiver(ANY_TCP) as rx, LiveSender(rx.endpoint) as tx:
        seq = sync_live(tx, rx)
        delivered: list[int] = []
        last_sent = seq
        for k in range(40):  # producer at ~1 kHz, consumer "works" 15 ms per frame
            for _ in range(15):
                tx.send(frame(last_sent))
                last_sent += 1
                time.sleep(0.001)
            delivered += [m.seq for m in rx.recv_newest(10)]
            time.sleep(0.015)
        while not tx.send(frame(last_sent)):  # a last frame the socket accepted...
            time.sleep(0.005)
        last_sent += 1
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # ...arrives once the producer stops
            delivered += [m.seq for m in rx.recv_newest(50)]
            if delivered and delivered[-1] >= last_sent - 1:
                break
        assert delivered == sorted(set(delivered)), "a delivered frame was older than a newer one"
        sent = last_sent - seq
        assert len(delivered) < sent / 3
        st = rx.stats.streams[0]
        assert st.dropped > 0 and st.stale == 0
        # every frame sent after the sync is accounted for: delivered, dropped or refused
        assert delivered[-1] == last_sent - 1


def test_live_send_never_blocks():
    with LiveSender("tcp://127.0.0.1:9") as tx:  # nobody there
        t0 = time.monotonic()
        for i in range(300):
            tx.send(frame(i, h=480, w=640))
        assert time.monotonic() - t0 < 2.0
    with LiveReceiver(ANY_TCP, rcvhwm=1) as rx, LiveSender(rx.endpoint) as tx:
        sync_live(tx, rx)  # now connected, then the receiver stops reading ("paused")
        t0 = time.monotonic()
        results = [tx.send(frame(100 + i, h=480, w=640)) for i in range(500)]
        assert time.monotonic() - t0 < 3.0
        assert not all(results) and tx.stats.refused > 0


def test_live_several_streams_end_of_stream_and_restart():
    ctx = zmq.Context()
    with LiveReceiver(ANY_TCP, context=ctx) as rx, LiveSender(rx.endpoint, context=ctx) as a, \
            LiveSender(rx.endpoint, context=ctx) as b:
        sync_live(a, rx, stream_id=1)
        sync_live(b, rx, stream_id=2)
        a.send(frame(500, 1))
        b.send(frame(700, 2))
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 3
        while len(seen) < 2 and time.monotonic() < deadline:
            for m in rx.recv_newest(50):
                if m.seq in (500, 700):
                    seen[m.stream_id] = m.seq
        assert seen == {1: 500, 2: 700}
        assert a.end_stream(1)
        deadline = time.monotonic() + 3
        while not rx.stats.streams[1].ended and time.monotonic() < deadline:
            rx.recv_newest(50)
        assert rx.stats.streams[1].ended and not rx.stats.streams[2].ended
        assert rx.stats.streams[1].dropped >= 0
        with LiveSender(rx.endpoint, context=ctx) as again:  # producer 1 restarted: seq 0 again
            sync_live(again, rx, stream_id=1)
        assert rx.stats.streams[1].restarts == 1 and not rx.stats.streams[1].ended
    ctx.term()


def test_live_garbage_is_counted_not_fatal():
    ctx = zmq.Context()
    with LiveReceiver(ANY_TCP, context=ctx) as rx, LiveSender(rx.endpoint, context=ctx) as tx:
        seq = sync_live(tx, rx)
        raw = ctx.socket(zmq.PUB)
        raw.connect(rx.endpoint)
        for _ in range(50):
            rx.recv_newest(5)
            raw.send_multipart([b"garbage"])
        tx.send(frame(seq))
        got = []
        deadline = time.monotonic() + 3
        while not got and time.monotonic() < deadline:
            got = rx.recv_newest(50)
        raw.close(0)
        assert rx.stats.malformed > 0 and [m.seq for m in got] == [seq]
    ctx.term()


# ----------------------------------------------------------------------------- lossless


def produce_lossless(endpoint: str, seqs: range, stream_id: int = 0, window: int = 4,
                     errors: list | None = None, pause_s: float = 0.0) -> threading.Thread:
    """A producer thread (its socket lives in that thread) that sends then ends the stream."""

    def body():
        try:
            with LosslessSender(endpoint, window=window, ack_timeout_s=1.0) as tx:
                for s in seqs:
                    tx.send(frame(s, stream_id), timeout_s=20)
                    time.sleep(pause_s)
                assert tx.end_stream(stream_id, timeout_s=20)
        except BaseException as exc:  # surfaced by the test
            (errors if errors is not None else []).append(exc)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


def consume(rx: LosslessReceiver, sink: list, until_eos: int = 1, max_items: int | None = None,
            timeout_s: float = 15.0) -> int:
    """Receive, 'write' to sink, then ack; return how many end-of-streams were seen."""
    eos, deadline = 0, time.monotonic() + timeout_s
    while eos < until_eos and time.monotonic() < deadline:
        if max_items is not None and len(sink) >= max_items:
            break
        m = rx.recv(50)
        if m is None:
            continue
        if isinstance(m, EndOfStream):
            eos += 1
        else:
            sink.append((m.stream_id, m.seq))
        rx.ack_message(m)
    return eos


def test_lossless_every_seq_once_in_order():
    with LosslessReceiver(ANY_TCP) as rx:
        errors: list = []
        t = produce_lossless(rx.endpoint, range(200), window=4, errors=errors)
        sink: list = []
        assert consume(rx, sink) == 1
        t.join(10)
        assert not t.is_alive() and not errors, errors
        assert [s for _, s in sink] == list(range(200))
        assert rx.stats.duplicates == 0


@pytest.mark.parametrize("persist", [True, False])
def test_lossless_receiver_restart_loses_and_duplicates_nothing(tmp_path, persist):
    state = tmp_path / "state.json" if persist else None
    rx = LosslessReceiver(ANY_TCP, state_file=state)
    ep = rx.endpoint
    errors: list = []
    t = produce_lossless(ep, range(120), window=8, errors=errors, pause_s=0.002)
    sink: list = []
    consume(rx, sink, max_items=40)
    if persist:
        # the sink wrote one more frame and its seq was persisted, then the consumer died
        # before the ack left: only the state file keeps the resent copy from duplicating
        m = None
        while m is None:
            m = rx.recv(50)
        sink.append((m.stream_id, m.seq))
        rx._streams[(m.stream_id, m.epoch)].finished = m.seq
        rx._save_state()
    time.sleep(0.2)  # acks already sent leave the socket (linger is 0)
    rx.close()  # consumer "dies"; the producer blocks on its full window
    time.sleep(0.3)
    with LosslessReceiver(ep, state_file=state) as rx2:
        assert consume(rx2, sink) == 1
    t.join(10)
    assert not t.is_alive() and not errors, errors
    assert [s for _, s in sink] == list(range(120))


def test_lossless_several_streams_into_one_receiver():
    with LosslessReceiver(ANY_TCP) as rx:
        errors: list = []
        ts = [produce_lossless(rx.endpoint, range(60), stream_id=sid, errors=errors)
              for sid in (1, 2, 3)]
        sink: list = []
        assert consume(rx, sink, until_eos=3) == 3
        for t in ts:
            t.join(10)
        assert not t.is_alive() and not errors, errors
        for sid in (1, 2, 3):
            assert [s for x, s in sink if x == sid] == list(range(60))


def test_lossless_reorders_and_drops_duplicates():
    ctx = zmq.Context()
    with LosslessReceiver(ANY_TCP, context=ctx) as rx:
        dealer = ctx.socket(zmq.DEALER)
        dealer.connect(rx.endpoint)
        for s in (0, 2, 1, 1, 0, 3):
            dealer.send_multipart(wire.encode_frame(frame(s), epoch=7, window_start=0), copy=True)
        got = []
        deadline = time.monotonic() + 3
        while len(got) < 4 and time.monotonic() < deadline:
            m = rx.recv(50)
            if isinstance(m, FrameMessage):
                got.append(m.seq)
                rx.ack_message(m)
        assert got == [0, 1, 2, 3]
        assert rx.stats.duplicates == 2
        # a duplicate of finished work is re-acked, so a producer that missed the ack moves on
        dealer.send_multipart(wire.encode_frame(frame(1), epoch=7, window_start=0))
        rx.recv(200)
        assert dealer.poll(1000)
        acks = []
        while dealer.poll(100):
            acks.append(wire.decode_message(dealer.recv_multipart()))
        assert acks[-1] == wire.Ack(0, 7, 3)
        dealer.close(0)
    ctx.term()


def test_lossless_sender_waits_then_times_out_without_consumer():
    with LosslessSender("tcp://127.0.0.1:9", window=2) as tx:
        tx.send(frame(0), timeout_s=0.1)
        tx.send(frame(1), timeout_s=0.1)
        with pytest.raises(TimeoutError, match="unacknowledged"):
            tx.send(frame(2), timeout_s=0.3)
        with pytest.raises(ValueError, match="consecutive"):
            tx.send(frame(5), timeout_s=0.1)
        assert not tx.flush(timeout_s=0.1)


def test_factories_follow_the_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load("configs/transport/default.yaml")
    cfg.endpoint = ANY_TCP
    with open_receiver(cfg) as rx:
        assert isinstance(rx, LiveReceiver)
        cfg.endpoint = rx.endpoint
        with open_sender(cfg) as tx:
            assert isinstance(tx, LiveSender)
    cfg.mode, cfg.endpoint = "lossless", ANY_TCP
    with open_receiver(cfg) as rx:
        assert isinstance(rx, LosslessReceiver)
    cfg.mode = "carrier-pigeon"
    with pytest.raises(ValueError, match="mode"):
        open_sender(cfg)


# ----------------------------------------------------------------------------- raw fast path


def _recv_one(rx: LosslessReceiver, timeout_s: float = 5.0) -> FrameMessage:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = rx.recv(50)
        if isinstance(m, FrameMessage):
            return m
    raise AssertionError("no frame received")


def _owner(a: np.ndarray):
    """The object at the end of an array's ``base`` chain (what really holds its memory)."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a.obj if isinstance(a, memoryview) else a


def _pattern(h: int = 480, w: int = 640) -> np.ndarray:
    return np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_raw_frame_is_not_copied_from_sender_array_to_received_image():
    """inproc hands libzmq's message over as it is, so the received image can share memory
    with the sent array only if neither side copied: not the encoder (a memoryview of the
    array), not the send (copy=False), not the receive (zmq.Frame) and not the decoder
    (np.frombuffer)."""
    ctx = zmq.Context()
    img = _pattern()
    try:
        with LosslessReceiver("inproc://zero-copy", context=ctx) as rx, \
                LosslessSender("inproc://zero-copy", context=ctx) as tx:
            tx.send(Frame(0, 0, time.monotonic_ns(), img), timeout_s=5)
            got = _recv_one(rx).frame.image
            assert np.shares_memory(got, img) and np.array_equal(got, img)
            assert isinstance(_owner(got), zmq.Frame)
            # the sender keeps the view (for resends), not a copy
            assert np.shares_memory(np.frombuffer(tx._unacked[(0, 0)][1], np.uint8), img)
    finally:
        ctx.term()


def test_raw_frame_over_tcp_is_a_view_of_the_received_zmq_frame():
    with LosslessReceiver(ANY_TCP) as rx, LosslessSender(rx.endpoint) as tx:
        img = _pattern()
        tx.send(Frame(0, 0, time.monotonic_ns(), img), timeout_s=5)
        m = _recv_one(rx)
        got = m.frame.image
        assert np.array_equal(got, img) and not got.flags.owndata
        owner = _owner(got)
        assert isinstance(owner, zmq.Frame) and len(owner) == img.nbytes
        rx.ack_message(m)
        assert tx.flush(timeout_s=5)


def test_raw_payload_travels_as_its_own_part():
    """Header and pixels are two parts of one message (no concatenation): the consumer gets
    the pixels as a part of exactly height x width x 3 bytes."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    img = _pattern(270, 480)
    try:
        with LosslessSender(f"tcp://127.0.0.1:{port}", context=ctx) as tx:
            tx.send(Frame(0, 0, time.monotonic_ns(), img), timeout_s=5)
            assert router.poll(5000)
            identity, header, payload = router.recv_multipart(copy=False)
            h = wire.unpack_header(header.bytes)
            assert (len(header), h.width, h.height, h.codec) == (wire.HEADER_SIZE, 480, 270, "raw")
            assert len(payload) == h.payload_len == 270 * 480 * 3
            assert payload.bytes == img.tobytes()
            assert "send" in dict(h.stamps_ns)
    finally:
        router.close(0)
        ctx.term()


_FAULTS_SCRIPT = r"""
import resource, sys, threading
import numpy as np
from endostream.protocol import memory
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.lossless_sender import LosslessSender
from endostream.protocol.wire import EndOfStream
from endostream.types import Frame

img = np.zeros((480, 640, 3), np.uint8)  # 921,600 bytes = 225 pages per frame
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with LosslessReceiver("tcp://127.0.0.1:*", retain_buffers=sys.argv[1] == "1") as rx:
    def produce():
        with LosslessSender(rx.endpoint, window=32) as tx:
            for seq in range(400):
                tx.send(Frame(0, seq, 0, img), timeout_s=60)
            tx.end_stream(0, timeout_s=60)
    t = threading.Thread(target=produce)
    t.start()
    n, f0 = 0, 0
    while True:
        m = rx.recv(100)
        if m is None:
            continue
        rx.ack_message(m)
        if isinstance(m, EndOfStream):
            break
        n += 1
        if n == 100:
            f0 = faults()
    t.join()
    print(memory._buffers_retained, (faults() - f0) / 300)
"""


def test_receivers_reuse_frame_buffers_instead_of_faulting_them_in():
    """libzmq mallocs every received frame; with glibc's defaults those buffers go back to
    the kernel and every frame page-faults (and zeroes) its buffer again. A receiver makes
    the process keep them (protocol.memory.retain_frame_buffers)."""
    import os
    import subprocess
    import sys

    if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
        pytest.skip("malloc tuning is glibc only")
    out = {}
    for retain in ("1", "0"):
        r = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, retain], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
        assert r.returncode == 0, r.stderr
        flag, per_frame = r.stdout.split()
        out[retain] = (flag, float(per_frame))
    assert out["1"][0] == "True" and out["0"][0] == "None"
    # Without it about 80-100 faults per 225-page frame here (glibc 2.36), with it about 6.
    assert out["1"][1] < 225 / 10, out
