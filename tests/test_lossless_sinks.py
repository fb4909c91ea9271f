"""Lossless acknowledges only what every sink holds: a real consumer process, real producers
(LosslessSender over tcp loopback), real MP4 / PNG / journal files counted afterwards."""

from __future__ import annotations

import time

import cv2
import numpy as np

from conftest import (CONSUME_FAST, cli, count_video_frames, free_endpoint, read_rows, summary,
                      wait_consumer_ready)
from endostream.protocol.lossless_sender import LosslessSender
from endostream.types import Frame


def _frame(stream_id: int, seq: int) -> Frame:
    img = np.zeros((128, 160, 3), np.uint8)
    img[:] = (40, 40, 140)
    cv2.circle(img, (30 + 4 * seq % 100, 64), 24, (120, 180, 230), -1)
    return Frame(stream_id, seq, time.monotonic_ns(), img)


def _consume(ep: str, out, *extra: str) -> list[str]:
    return cli("consume", "transport.mode=lossless", f"transport.endpoint={ep}", f"out={out}",
               *CONSUME_FAST, *extra)


def _video_frames(out) -> int:
    return sum(count_video_frames(p) for p in sorted(out.glob("overlay*.mp4")))


def test_a_sink_failing_mid_stream_stops_acknowledgement(tmp_path, procs):
    """The mask folder turns into a file mid-stream: no frame is acknowledged that is not in
    the MP4, the mask PNGs and the journal; one line names the sink, the file and the reason."""
    ep, out = free_endpoint(), tmp_path / "out"
    con = procs(_consume(ep, out, "sink=[video,masks]", "idle_timeout_s=6"), tmp_path / "consume.log")
    wait_consumer_ready(con)
    with LosslessSender(ep, window=4, ack_timeout_s=1.0) as tx:
        for seq in range(8):
            tx.send(_frame(0, seq), timeout_s=60)
        # The last frame's video fragment is written when the next frame comes: 7 of 8 acked.
        deadline = time.monotonic() + 60
        while tx.stats.acked < 7:
            assert time.monotonic() < deadline, "the first frames were never acknowledged"
            tx.service(50)
        masks = out / "masks"
        masks.rename(out / "masks_before")
        masks.write_text("not a folder any more")  # the next PNG cannot be written
        for seq in range(8, 24):
            try:
                tx.send(_frame(0, seq), timeout_s=4)
            except TimeoutError:
                break  # the window is full: nothing more is acknowledged
        tx.flush(timeout_s=3)
        acked = tx.stats.acked
    assert con.wait(90) == 1, con.text()[-3000:]

    pngs = sorted((out / "masks_before").glob("*.png"))
    rows = read_rows(out / "frames.csv")
    assert 7 <= acked <= min(len(pngs), len(rows), _video_frames(out)), \
        (acked, len(pngs), len(rows), _video_frames(out))
    assert [int(r["seq"]) for r in rows] == list(range(len(rows)))
    s = summary(out)
    assert "masks" in s["acks_stopped"] and str(masks) in s["acks_stopped"], s["acks_stopped"]
    assert s["frames_not_written"] >= 1 and s["frames_acknowledged"] == acked
    stopped = [ln for ln in con.text().splitlines() if "ERROR" in ln and "acknowledgement stopped" in ln]
    assert len(stopped) == 1 and str(masks) in stopped[0] and "Not a directory" in stopped[0], stopped


def test_two_producers_with_one_stream_id_overwrite_nothing(tmp_path, procs):
    """Two producers (two epochs) both send stream 0, seq 0..5: every mask is its own file,
    the journal and the summary count each epoch."""
    ep, out = free_endpoint(), tmp_path / "out"
    con = procs(_consume(ep, out, "sink=[video,masks]", "idle_timeout_s=4", "min_streams=9"),
                tmp_path / "consume.log")
    wait_consumer_ready(con)
    with LosslessSender(ep, window=4) as a, LosslessSender(ep, window=4) as b:
        for seq in range(6):
            a.send(_frame(0, seq), timeout_s=60)
            b.send(_frame(0, seq), timeout_s=60)
        assert a.end_stream(0, timeout_s=60) and b.end_stream(0, timeout_s=60)
        epochs = {a.epoch, b.epoch}
    assert con.wait(60) == 0, con.text()[-3000:]

    names = sorted(p.name for p in (out / "masks").glob("*.png"))
    assert len(names) == 12, names
    assert {n.split("_")[1] for n in names} == {f"e{e:016x}" for e in epochs}
    rows = read_rows(out / "frames.csv")
    assert sorted((int(r["epoch"]), int(r["seq"])) for r in rows) == sorted(
        (e, s) for e in epochs for s in range(6))
    assert sorted(summary(out)["written_by_epoch"].values()) == [6, 6]
    assert _video_frames(out) == 12


def test_a_stream_ends_while_another_stays_open_and_idle(tmp_path, procs):
    """Stream 0 ends while stream 1 (another producer) is open and sends nothing: stream 0's
    end-of-stream is acknowledged at once, not when stream 1 sends again."""
    ep, out = free_endpoint(), tmp_path / "out"
    con = procs(_consume(ep, out, "sink=[video,masks]", "idle_timeout_s=20", "min_streams=2"),
                tmp_path / "consume.log")
    wait_consumer_ready(con)
    with LosslessSender(ep, window=8) as a, LosslessSender(ep, window=8) as b:
        for seq in range(5):
            a.send(_frame(0, seq), timeout_s=60)
        for seq in range(3):
            b.send(_frame(1, seq), timeout_s=60)
        t0 = time.monotonic()
        assert a.end_stream(0, timeout_s=30), \
            f"stream 0's end was not acknowledged ({a.outstanding} outstanding) while stream 1 idled"
        waited = time.monotonic() - t0
        assert b.end_stream(1, timeout_s=30)
    assert con.wait(60) == 0, con.text()[-3000:]
    assert waited < 25
    rows = read_rows(out / "frames.csv")
    assert sorted((int(r["stream_id"]), int(r["seq"])) for r in rows) == \
        [(0, s) for s in range(5)] + [(1, s) for s in range(3)]
    assert _video_frames(out) == 8 and len(list((out / "masks").glob("*.png"))) == 8


def test_a_state_file_that_cannot_be_written_is_named_and_nothing_is_acknowledged(tmp_path):
    """A full disk or a vanished folder under the lossless state file: the error names the
    file, and the ack is not sent (nor repaired later by a heartbeat)."""
    import pytest

    from endostream.protocol.lossless_receiver import LosslessReceiver

    folder = tmp_path / "state"
    folder.mkdir()
    state = folder / "lossless_state.json"
    with LosslessReceiver("tcp://127.0.0.1:*", state_file=state) as rx, \
            LosslessSender(rx.endpoint, window=4) as tx:
        tx.send(_frame(0, 0), timeout_s=10)
        msg, deadline = None, time.monotonic() + 10
        while msg is None and time.monotonic() < deadline:
            tx.service(10)
            msg = rx.recv(50)
        assert msg is not None
        folder.rename(tmp_path / "state_gone")
        folder.write_text("not a folder")
        with pytest.raises(OSError, match=str(state)):
            rx.ack_message(msg)
        t_end = time.monotonic() + 2.5  # heartbeats (1 s) would repair a lost ack
        while time.monotonic() < t_end:
            tx.service(50)
            rx.recv(10)
        assert tx.stats.acked == 0
