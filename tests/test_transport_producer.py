"""`endostream produce` as a real process into real receivers; run_producer in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from endostream.capture.producer import run_producer
from endostream.protocol.transport import LiveSender, LosslessReceiver
from endostream.types import Frame
from endostream.protocol.wire import EndOfStream, FrameMessage

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "endostream.cli"]


def test_produce_cli_lossless_delivers_every_frame_with_gt():
    clip = ROOT / "assets/demo/clinicdb_demo.mp4"
    with LosslessReceiver("tcp://127.0.0.1:*") as rx:
        proc = subprocess.Popen(
            [*CLI, "produce", f"source.uri={clip}", "transport.mode=lossless",
             f"transport.endpoint={rx.endpoint}", "pace=fast", "max_frames=25", "codec=jpeg",
             "stream_id=4"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        seqs, with_gt = [], 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = rx.recv(100)
            if m is None:
                continue
            rx.ack_message(m)
            if isinstance(m, EndOfStream):
                break
            seqs.append(m.seq)
            with_gt += m.frame.gt_mask is not None
            assert m.stream_id == 4 and m.codec == "jpeg"
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert seqs == list(range(25)) and with_gt == 25
    assert '"frames_sent": 25' in out


def test_produce_cli_missing_file_is_one_line_error():
    r = subprocess.run([*CLI, "produce", "source.uri=/no/such/clip.mp4"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "no/such/clip.mp4" in r.stderr


def test_run_producer_live_paces_and_never_blocks_without_consumer():
    frames = (Frame(0, i, time.monotonic_ns(), np.zeros((48, 64, 3), np.uint8)) for i in range(20))
    with LiveSender("tcp://127.0.0.1:9") as tx:
        t0 = time.monotonic()
        summary = run_producer(frames, tx, pace_fps=100)
        took = time.monotonic() - t0
    assert summary["frames"] == 20 and 0.15 < took < 2.0
