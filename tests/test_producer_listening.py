"""A producer with nobody listening says so early and again, naming the endpoint; with a
consumer it stays quiet. Real ZeroMQ sockets on loopback, a real producer process."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time

import numpy as np

from conftest import ENV, REPO, cli, free_endpoint
from endostream.capture.producer import NobodyListening, run_producer
from endostream.protocol.live import LiveReceiver, LiveSender
from endostream.types import Frame


def _frames(n: int):
    return (Frame(0, i, time.monotonic_ns(), np.zeros((48, 64, 3), np.uint8)) for i in range(n))


def test_nobody_listening_warns_early_and_repeats(caplog):
    ep = free_endpoint()
    caplog.set_level(logging.INFO, logger="endostream.capture.producer")
    with LiveSender(ep) as tx:
        watch = NobodyListening(tx, ep, first_s=0.5, repeat_s=1.0)
        run_producer(_frames(250), tx, pace_fps=100, listening=watch)  # 2.5 s
    lines = [r.getMessage() for r in caplog.records if "no consumer at" in r.getMessage()]
    assert 2 <= len(lines) <= 3 and watch.warnings == len(lines), lines
    assert all(ep in ln and "start `endostream consume` there" in ln for ln in lines)


def test_quiet_when_a_consumer_takes_the_frames(caplog):
    ep = free_endpoint()
    caplog.set_level(logging.INFO, logger="endostream.capture.producer")
    with LiveReceiver(ep) as rx, LiveSender(ep) as tx:
        watch = NobodyListening(tx, ep, first_s=0.5, repeat_s=1.0)
        time.sleep(0.3)  # the handshake
        summary = run_producer(_frames(150), tx, pace_fps=100, listening=watch)
        rx.recv_newest(100)
    assert summary["peer_accepted"] and watch.warnings == 0 and "no consumer at" not in caplog.text


def test_live_producer_cli_says_within_seconds_that_nobody_listens(tmp_path):
    ep = free_endpoint()
    log = tmp_path / "produce.log"
    proc = subprocess.Popen(cli("produce", "source=demo", f"transport.endpoint={ep}", "loop=true"),
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)
    try:
        deadline = time.monotonic() + 60  # start-up (imports, opening the clip) plus a few seconds
        while "no consumer at" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    line = next(ln for ln in log.read_text().splitlines() if "no consumer at" in ln)
    assert re.search(rf"WARNING .*no consumer at {re.escape(ep)} has taken this producer's frames in [3-9] s", line), line
