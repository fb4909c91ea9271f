"""Signal state: a stalled feed never looks live. Real producer and consumer processes on
loopback, the viewer's /status.json and page in headless Chromium; plus the state machine and
the cards in-process."""

from __future__ import annotations

import json
import logging
import signal
import socket
import time
import urllib.request

import cv2
import numpy as np

from conftest import cli, count_video_frames, free_endpoint, make_clip, summary, wait_consumer_ready, wait_for
from endostream.consumer.signal import ENDED, LIVE, NO_SIGNAL, WAITING, SignalTracker, draw_card
from test_viewer import _chromium, _colour, screenshot

RED_BORDER = (40, 40, 235)  # signal.draw_card's NO SIGNAL colour, BGR


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    return urllib.request.urlopen(url, timeout=timeout).read()


def _status(port: int) -> dict:
    return json.loads(_get(f"http://127.0.0.1:{port}/status.json"))


def _frame(port: int) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(_get(f"http://127.0.0.1:{port}/frame.jpg", 10), np.uint8),
                        cv2.IMREAD_COLOR)


def _wait_state(port: int, state: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        try:
            last = _status(port)
        except OSError:
            last = {}
        if last.get("state") == state:
            return last
        time.sleep(0.1)
    raise AssertionError(f"/status.json not {state} within {timeout} s: {last}")


def test_kill_and_restart_producer_status_cards_page_and_recording(tmp_path, procs, clip_dir):
    """waiting -> live -> (producer SIGKILLed) no_signal within 2 s, NO SIGNAL cards on the
    viewer and in the overlay video -> (producer restarted) live. Each transition one log line."""
    clip = make_clip(clip_dir / "signal100.mp4", 100, fps=25)
    ep, port, out = free_endpoint(), _free_port(), tmp_path / "out"
    con = procs(cli("consume", "transport.mode=live", f"transport.endpoint={ep}", f"out={out}",
                    "sink=[video,viewer]", f"sink.viewer.port={port}", "idle_timeout_s=60",
                    "no_signal_after_ms=1000", "model.threads=1", "log_level=INFO"),
                tmp_path / "consume.log")
    wait_consumer_ready(con)
    s = _status(port)
    assert s["state"] == WAITING and s["frames_shown"] == 0 and s["last_frame_age_ms"] is None
    produce = cli("produce", f"source.uri={clip}", "transport.mode=live", f"transport.endpoint={ep}",
                  "pace=native", "loop=true")
    prod = procs(produce, tmp_path / "produce1.log")
    s = _wait_state(port, LIVE, 60)
    assert s["frames_shown"] > 0 and s["backend"] and s["model"] == "polyp"
    wait_for(lambda: _status(port)["frames_shown"] > 20, 60, "20 frames shown")
    s = _status(port)
    assert s["last_frame_age_ms"] < 1000 and s["fps"] and s["latency_ms"] is not None

    browser = _chromium()
    if browser:  # the page live: green LIVE badge, the frame in colour
        page = screenshot(browser, f"http://127.0.0.1:{port}/", tmp_path / "live.png", tmp_path / "prof")
        assert _colour(page[:60], (0x2e, 0x7a, 0x1b)).sum() > 200, "no LIVE badge"

    prod.p.send_signal(signal.SIGKILL)
    prod.p.wait()
    t_kill = time.monotonic()
    _wait_state(port, NO_SIGNAL, 10)
    assert time.monotonic() - t_kill < 2.0, f"no_signal after {time.monotonic() - t_kill:.1f} s"
    # The viewer shows the NO SIGNAL card (red border on the dimmed last image), not the frame.
    wait_for(lambda: np.abs(_frame(port)[2, 80].astype(int) - RED_BORDER).max() < 60, 10,
             "the NO SIGNAL card on the viewer")
    card = _frame(port)
    inner = card[20:-20, 20:-20].astype(int)
    assert (np.abs(inner[..., 0] - inner[..., 2]) < 40).mean() > 0.9, "the last image must be greyed"
    time.sleep(1.0)
    s = _status(port)
    assert s["state"] == NO_SIGNAL and s["last_frame_age_ms"] > 1000 and s["fps"] is None

    if browser:  # the page: red NO SIGNAL badge, the card in the image
        page = screenshot(browser, f"http://127.0.0.1:{port}/", tmp_path / "nosignal.png", tmp_path / "prof")
        assert _colour(page[:60], (0x18, 0x18, 0xc0)).sum() > 200, "no red NO SIGNAL badge"
        assert _colour(page[60:], RED_BORDER, tol=50).sum() > 1000, "no NO SIGNAL card in the page"

    prod2 = procs(produce, tmp_path / "produce2.log")
    _wait_state(port, LIVE, 60)
    con.p.send_signal(signal.SIGTERM)
    assert con.wait(60) == 0, con.text()
    prod2.kill()

    log = con.text()
    for line in ("stream 0: video started", "stream 0: NO SIGNAL", "stream 0: signal back after"):
        assert log.count(line) == 1, f"{line!r} logged {log.count(line)} times:\n{log[-3000:]}"
    sm = summary(out)
    sig = sm["signal"]
    assert sig["losses"] == 1 and sig["no_signal_s"] > 1.0 and sig["video_cards"] > 0
    # the recording holds every frame shown plus the NO SIGNAL cards: the gap stays visible
    assert count_video_frames(out / "overlay.mp4") == sm["frames_shown"] + sig["video_cards"]


def test_source_lost_report_is_no_signal_at_once(tmp_path, procs):
    """The producer says its camera stopped (wire kind source-lost): the consumer shows NO
    SIGNAL without waiting for no_signal_after_ms (here 30 s), and live again on the next frame."""
    from endostream.protocol.live import LiveSender
    from endostream.types import Frame

    ep, port = free_endpoint(), _free_port()
    con = procs(cli("consume", f"transport.endpoint={ep}", f"out={tmp_path / 'out'}", "sink=[viewer]",
                    f"sink.viewer.port={port}", "no_signal_after_ms=30000", "idle_timeout_s=60",
                    "model.threads=1", "log_level=INFO"), tmp_path / "consume.log")
    wait_consumer_ready(con)
    img = np.full((96, 128, 3), 90, np.uint8)
    seq = 0
    with LiveSender(ep) as tx:
        def send_until(state: str) -> None:
            nonlocal seq
            deadline = time.monotonic() + 60
            while _status(port)["state"] != state:
                assert time.monotonic() < deadline, f"not {state}: {_status(port)}"
                tx.send(Frame(0, seq, time.monotonic_ns(), img))
                seq += 1
                time.sleep(0.04)

        send_until(LIVE)  # PUB/SUB: frames until the subscription has landed
        assert tx.source_lost(0)
        t0 = time.monotonic()
        _wait_state(port, NO_SIGNAL, 10)
        assert time.monotonic() - t0 < 5.0
        send_until(LIVE)
    log = con.text()
    assert "stream 0: NO SIGNAL (the producer reported its source lost)" in log, log[-2000:]
    assert "stream 0: signal back after" in log


def test_end_of_stream_is_ended(tmp_path, procs, clip_dir):
    """A producer that finishes: the consumer logs the end in one line and stops; its summary
    says ended and the video holds exactly the frames shown (no cards without a gap)."""
    clip = make_clip(clip_dir / "signal30.mp4", 30, fps=25)
    ep, out = free_endpoint(), tmp_path / "out"
    con = procs(cli("consume", "transport.mode=lossless", f"transport.endpoint={ep}", f"out={out}",
                    "idle_timeout_s=30", "model.threads=1", "log_level=INFO"), tmp_path / "consume.log")
    wait_consumer_ready(con)
    prod = procs(cli("produce", f"source.uri={clip}", "transport.mode=lossless",
                     f"transport.endpoint={ep}", "pace=fast"), tmp_path / "produce.log")
    assert prod.wait(90) == 0, prod.text()
    assert con.wait(60) == 0, con.text()
    sm = summary(out)
    assert sm["signal"]["state"] == ENDED and sm["signal"]["video_cards"] == 0
    assert con.text().count("stream 0: ended") == 1
    assert count_video_frames(out / "overlay.mp4") == sm["frames_shown"] == 30


# ---------------------------------------------------------------------------- in-process


def test_tracker_transitions_log_one_line_each(caplog):
    caplog.set_level(logging.INFO, logger="endostream.consumer.signal")
    tr = SignalTracker(no_signal_after_ms=500)
    img = np.zeros((48, 64, 3), np.uint8)
    assert tr.state == WAITING and tr.last_frame_age_ms(0.0) is None
    tr.on_frame(0, img, now=10.0)
    tr.tick(10.4)
    assert tr.state == LIVE
    tr.tick(10.6)
    tr.tick(11.0)  # still lost: no second line
    assert tr.state == NO_SIGNAL and tr.last_frame_age_ms(11.0) == 1000.0
    tr.on_frame(0, img, now=12.0, new_epoch=True)
    assert tr.state == LIVE
    tr.on_lost(0, 12.1)  # the producer reported its source lost
    assert tr.state == NO_SIGNAL
    tr.on_frame(0, img, now=12.5)
    tr.on_end(0, 13.0, seq=40)
    assert tr.state == ENDED
    tr.on_frame(1, img, now=13.0)  # a second stream: any live stream makes the consumer live
    assert tr.state == LIVE
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["stream 0: video started (64x48)",
                     "stream 0: NO SIGNAL (no frame for 500 ms)",
                     "stream 0: signal back after 2.0 s without frames (producer restarted)",
                     "stream 0: NO SIGNAL (the producer reported its source lost)",
                     "stream 0: signal back after 0.5 s without frames",
                     "stream 0: ended (end-of-stream after seq 39)",
                     "stream 1: video started (64x48)"], lines


def test_cards_dim_the_last_image_and_say_why():
    frame = np.zeros((288, 384, 3), np.uint8)
    frame[:] = (60, 90, 200)  # reddish mucosa
    card = draw_card(NO_SIGNAL, frame, age_s=3.2)
    assert card.shape == frame.shape and card.dtype == np.uint8
    centre = card[20:60, 20:100].astype(int)  # away from the text: the dimmed image
    assert centre.max() < 100 and np.abs(centre[..., 0] - centre[..., 2]).max() < 5  # grey, dark
    assert np.abs(card[1, 192].astype(int) - RED_BORDER).max() < 10  # red border
    text = card[100:200, 60:330]
    assert ((text[..., 2] > 200) & (text[..., 1] < 80)).sum() > 300  # red "NO SIGNAL"
    waiting = draw_card(WAITING)
    assert waiting.shape == (360, 640, 3) and waiting[2, 320, 2] > 200
    assert draw_card(ENDED, frame, age_s=1.0).shape == frame.shape
