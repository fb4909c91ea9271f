"""Bounded state for everything a peer controls, over real sockets and a real consumer process:
message size (refused at the socket), the lossless reorder buffer (frames, bytes, seconds),
stream ids (a flood of them), and the log lines they can cause."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import zmq

from conftest import CONSUME_FAST, cli, free_endpoint, read_rows, summary, wait_consumer_ready
from endostream.protocol import wire
from endostream.protocol.live import LiveReceiver, LiveSender
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.ratelog import RateLimitedLog
from endostream.types import Frame

ANY_TCP = "tcp://127.0.0.1:*"
HUGE = 100 << 20  # 100 MiB


def _parts(sid: int, seq: int, epoch: int = 7, w: int = 64, h: int = 48,
           window_start: int = 0) -> list[bytes]:
    """A frame message as a lossless producer whose window starts at ``window_start`` sends it."""
    img = np.full((h, w, 3), seq % 256, np.uint8)
    parts = [bytes(p) for p in wire.encode_frame(Frame(sid, seq, time.monotonic_ns(), img), epoch=epoch)]
    parts[0] = bytes(wire.send_header(parts[0], window_start))
    return parts


@pytest.mark.parametrize("mode", ["live", "lossless"])
def test_a_100_mb_message_is_refused_at_the_socket(mode):
    """ZMQ_MAXMSGSIZE (from max_width x max_height): the receiver never takes the 100 MB part
    in (no reject to count, it never arrived); the frames after it still do."""
    ctx = zmq.Context()
    rx_cls = LiveReceiver if mode == "live" else LosslessReceiver
    rx = rx_cls(ANY_TCP, context=ctx, max_width=640, max_height=480)
    assert rx.sock.maxmsgsize == 640 * 480 * 3
    tx = ctx.socket(zmq.PUB if mode == "live" else zmq.DEALER)
    tx.sndhwm = 10_000
    tx.connect(rx.endpoint)
    got: list[int] = []

    def pump(seq: int) -> None:
        tx.send_multipart(_parts(0, seq, window_start=seq))  # every earlier one acked
        msg = rx.recv_newest(50) if mode == "live" else [rx.recv(50)]
        got.extend(m.seq for m in msg if m is not None and hasattr(m, "frame"))

    try:
        seq = 0
        deadline = time.monotonic() + 10
        while not got:  # connected (a PUB drops until the subscription arrived)
            assert time.monotonic() < deadline
            pump(seq)
            seq += 1
        header = _parts(0, seq, window_start=seq)[0]
        tx.send_multipart([header, bytes(HUGE)])  # claims 64x48 but carries 100 MiB
        seq += 1
        before = len(got)
        deadline = time.monotonic() + 20
        while len(got) < before + 3:  # ZeroMQ dropped the connection; the sender reconnects
            assert time.monotonic() < deadline, "no frame got through after the huge message"
            pump(seq)
            seq += 1
        assert rx.stats.malformed == 0, f"the huge message reached the receiver: {rx.stats.rejected}"
    finally:
        tx.close(linger=0)
        rx.close()
        ctx.term()


def test_lossless_reorder_buffer_is_bounded_in_bytes_and_seconds():
    """Seq 0 withheld, 40 frames of 230 KB after it: at most max_hold_bytes are held, and
    nothing after max_hold_s; the frames, resent, are then delivered in order."""
    ctx = zmq.Context()
    rx = LosslessReceiver(ANY_TCP, context=ctx, max_hold_bytes=2 << 20, max_hold_s=1.0)
    dealer = ctx.socket(zmq.DEALER)
    dealer.sndhwm = 1000
    dealer.connect(rx.endpoint)
    try:
        for seq in range(1, 41):
            dealer.send_multipart(_parts(0, seq, w=320, h=240))
        deadline = time.monotonic() + 10
        while rx.stats.messages < 40 and time.monotonic() < deadline:
            assert rx.recv(50) is None  # nothing deliverable: seq 0 is missing
            assert rx.held_bytes <= 2 << 20
        assert rx.stats.messages == 40 and rx.stats.hold_dropped > 0
        assert 0 < rx.held_bytes <= 2 << 20
        time.sleep(1.2)
        assert rx.recv(50) is None
        assert rx.held_bytes == 0, "held frames outlived max_hold_s"
        for seq in range(0, 41):  # the producer resends everything unacked
            dealer.send_multipart(_parts(0, seq, w=320, h=240))
        seqs: list[int] = []
        deadline = time.monotonic() + 10
        while len(seqs) < 41 and time.monotonic() < deadline:
            m = rx.recv(50)
            if m is not None:
                seqs.append(m.seq)
                rx.ack_message(m)
        assert seqs == list(range(41))
    finally:
        dealer.close(linger=0)
        rx.close()
        ctx.term()


def test_rate_limit_holds_overall_whatever_the_keys(caplog):
    """Fresh keys every time (a peer varying what it sends) still make at most max_lines."""
    rl = RateLimitedLog(logging.getLogger("t_overall"), interval_s=60, max_lines=5)
    with caplog.at_level(logging.WARNING, logger="t_overall"):
        for i in range(500):
            rl(f"k{i % 70}", "something a peer did")
    assert len(caplog.records) == 5 and rl.suppressed == 495
    assert len(rl.counts) <= rl.max_keys + 1


def test_curve_refusals_are_rate_limited_overall(tmp_path, caplog):
    """500 fresh client keys refused: a handful of lines, not one per key."""
    from endostream.protocol.security import _AllowList

    (tmp_path / "allowed").mkdir()
    allow = _AllowList(tmp_path / "allowed")
    with caplog.at_level(logging.WARNING, logger="endostream.protocol.security"):
        for i in range(500):
            assert not allow.callback("*", zmq.curve_keypair()[0])  # a fresh key, z85 as ZAP passes it
    lines = [r.getMessage() for r in caplog.records if "refused unknown CURVE" in r.getMessage()]
    assert 1 <= len(lines) <= 3, lines
    assert allow.denied_total == 500


def test_a_flood_of_stream_ids_leaves_the_live_consumer_bounded(tmp_path, procs):
    """300 stream ids, one frame each, then a real 25 fps stream that stops without an end:
    the consumer keeps state for at most transport.max_streams, shows the real stream, and
    writes its NO SIGNAL cards into the recording at most once a second, none for stray ids."""
    ep, out = free_endpoint(), tmp_path / "out"
    con = procs(cli("consume", "transport.mode=live", f"transport.endpoint={ep}", f"out={out}",
                    "idle_timeout_s=5", "sink=[video]", *CONSUME_FAST), tmp_path / "consume.log")
    wait_consumer_ready(con)
    t0 = time.monotonic()
    with LiveSender(ep, sndhwm=1000) as tx:
        img = np.full((48, 64, 3), 90, np.uint8)
        deadline = time.monotonic() + 20
        while not tx.handshakes_ok:
            assert time.monotonic() < deadline
            tx.send(Frame(5000, 0, time.monotonic_ns(), img))
            time.sleep(0.05)
        for sid in range(300):
            tx.send(Frame(sid, 0, time.monotonic_ns(), img))
            time.sleep(0.003)
        real = 1000
        frame = np.full((128, 160, 3), 60, np.uint8)
        for seq in range(75):  # 3 s at 25 fps
            tx.send(Frame(real, seq, time.monotonic_ns(), frame))
            time.sleep(0.04)
    assert con.wait(60) == 0, con.text()[-3000:]  # 5 s without a frame: idle_timeout_s
    elapsed = time.monotonic() - t0

    s = summary(out)
    assert s["streams_held"] <= 16
    assert s["streams_evicted"] >= 1
    assert 1 <= s["signal"]["video_cards"] <= elapsed + 1, s["signal"]  # the gap marked, not flooded
    shown_real = sum(1 for r in read_rows(out / "frames.csv") if int(r["stream_id"]) == real)
    assert shown_real >= 75 // 2, f"the real stream showed {shown_real} of 75 frames"
    # The per-room deadline warning of consumer.worker is left to that module's owner.
    lines = [ln for ln in con.text().splitlines() if "endostream.consumer.worker" not in ln]
    assert len(lines) < 100, "a peer flooded the log"
    starts = [ln for ln in lines if "video started" in ln]  # rooms only: not the stray ids
    assert any(f"stream {real}:" in ln for ln in starts), starts[:5]
    assert all(f"stream {real}:" in ln or "stream 5000:" in ln for ln in starts), starts[:5]
