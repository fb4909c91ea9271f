"""`endostream produce` as a real process into real receivers; run_producer in-process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from conftest import cli, free_endpoint
from endostream.capture.producer import run_producer
from endostream.protocol.live import LiveSender
from endostream.protocol.lossless_receiver import LosslessReceiver
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
        deadline = time.monotonic() + 240
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
        out, err = proc.communicate(timeout=240)  # Python's start-up alone took 30 s under load
    assert proc.returncode == 0, err
    assert seqs == list(range(25)) and with_gt == 25
    assert '"frames_sent": 25' in out


def test_produce_cli_missing_file_is_one_line_error():
    r = subprocess.run([*CLI, "produce", "source.uri=/no/such/clip.mp4"], cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "no/such/clip.mp4" in r.stderr


def test_run_producer_live_paces_and_never_blocks_without_consumer():
    """Nobody there: the first frame waits the bounded subscription wait, then the stream runs at
    its pace and every frame is counted as unsubscribed (discarded by the socket), none as sent."""
    frames = (Frame(0, i, time.monotonic_ns(), np.zeros((48, 64, 3), np.uint8)) for i in range(20))
    with LiveSender("tcp://127.0.0.1:9") as tx:
        t0 = time.monotonic()
        summary = run_producer(frames, tx, pace_fps=100, subscribe_wait_s=0.3)
        took = time.monotonic() - t0
    assert summary["frames"] == 20 and 0.3 + 0.15 < took < 2.0
    assert (summary["frames_sent"], summary["frames_unsubscribed"]) == (0, 20)


# ------------------------------------------------------------------ signals, progress, no peer


def test_sigint_on_the_producer_ends_a_real_consumer_on_end_of_stream(tmp_path, procs, clip_dir):
    """Ctrl-C on a producer that would run forever (a looped clip): end-of-stream goes out
    before it exits, and the consumer stops on it, not on its (long) idle timeout."""
    from conftest import make_clip, summary, wait_consumer_ready, wait_for

    clip = make_clip(clip_dir / "sigint25.mp4", 25, fps=25)
    ep, out = free_endpoint(), tmp_path / "out"
    con = procs(cli("consume", "transport.mode=live", f"transport.endpoint={ep}", f"out={out}",
                    "idle_timeout_s=300", "model.threads=1", "log_level=INFO", "sink=[]"),
                tmp_path / "consume.log")
    wait_consumer_ready(con, timeout=240)
    prod = procs(cli("produce", f"source.uri={clip}", f"transport.endpoint={ep}", "loop=true",
                     "pace=native"), tmp_path / "produce.log")
    wait_for(lambda: "receiving stream 0" in con.text() or "stream 0:" in con.text()
             or prod.p.poll() is not None, 240, "the consumer to receive frames")
    time.sleep(2.0)
    prod.p.send_signal(signal.SIGINT)
    t_sig = time.monotonic()
    assert prod.wait(120) == 0, prod.text()
    assert con.wait(120) == 0, con.text()
    took = time.monotonic() - t_sig
    assert summary(out)["exit_reason"] == "end of stream", con.text()[-2000:]
    assert took < 120  # the idle timeout (300 s) was not what ended it
    line = [ln for ln in prod.text().splitlines() if ln.startswith("{")][-1]
    assert json.loads(line)["stopped_by"] == "SIGINT"


def test_progress_line_on_a_terminal_and_no_consumer_warning(tmp_path):
    """stderr a terminal: a one-line progress rewritten in place (at most once a second);
    at the end, a warning that no consumer received anything (nobody listens there)."""
    import pty

    clip = ROOT / "assets/demo/clinicdb_demo.mp4"
    master, slave = pty.openpty()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*CLI, "produce", f"source.uri={clip}", f"transport.endpoint={free_endpoint()}",
         "pace=native", "max_frames=75"], cwd=ROOT, stdout=subprocess.PIPE, stderr=slave,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out, _ = proc.communicate(timeout=120)
    err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, err
    took = time.monotonic() - t0
    updates = [u for u in err.split("\r") if u.startswith("frames ")]
    assert 1 <= len(updates) <= took + 1, err  # at most one update a second
    assert " fps  drops " in updates[-1] and "\n" not in "".join(updates)
    assert re.search(r"WARNING .*no consumer", err), err  # the sender says so as it closes
    assert json.loads(out.strip().splitlines()[-1])["peer_accepted"] is False


def test_progress_is_silent_when_stderr_is_not_a_terminal(tmp_path):
    r = subprocess.run([*CLI, "produce", f"source.uri={ROOT / 'assets/demo/clinicdb_demo.mp4'}",
                        f"transport.endpoint={free_endpoint()}", "pace=fast", "max_frames=10"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "\r" not in r.stderr
    assert not [ln for ln in r.stderr.splitlines() if ln.startswith("frames ")]
