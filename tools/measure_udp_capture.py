"""Measure what share of a 25 fps UDP MPEG-TS stream a live consumer shows (docs/CAPTURE.md).

Debian's ffmpeg sends ``--seconds`` of a 384x288 test pattern at real time to a UDP port;
`endostream produce source=network` reads it and `endostream consume` (live, no sinks)
shows it; the consumer's summary gives frames shown. Run once per jitter setting:

    nice -n 19 .venv/bin/python tools/measure_udp_capture.py --jitter-ms 200 0
    nice -n 19 .venv/bin/python tools/measure_udp_capture.py --jitter-ms 200 0 --send-trace

``--send-trace`` leaves the consumer out (its own CPU share decides what it shows on a
loaded machine) and measures what the producer sends: every frame's send time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _udp_bound(port: int) -> bool:
    return any(f":{port:04X} " in ln for ln in Path("/proc/net/udp").read_text().splitlines()[1:])


def _wait(cond, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(jitter_ms: float, seconds: int, size: str, work: Path) -> dict:
    port, ep = _port(socket.SOCK_DGRAM), f"tcp://127.0.0.1:{_port(socket.SOCK_STREAM)}"
    out = work / f"consume_j{jitter_ms:g}"
    cli = [sys.executable, "-m", "endostream.cli"]
    con_log = open(work / f"consume_j{jitter_ms:g}.log", "w")
    con = subprocess.Popen([*cli, "consume", "transport.mode=live", f"transport.endpoint={ep}",
                            f"out={out}", "sink=[]", "idle_timeout_s=600", "model.threads=1",
                            "log_level=INFO"], cwd=REPO, env=ENV, stdout=con_log, stderr=subprocess.STDOUT)
    _wait(lambda: " on " in (work / f"consume_j{jitter_ms:g}.log").read_text() or con.poll() is not None,
          600, "the consumer")
    prod = subprocess.Popen([*cli, "produce", "source=network", f"source.uri=udp://127.0.0.1:{port}",
                             f"transport.endpoint={ep}", "source.open_timeout_s=600",
                             f"source.jitter_buffer_ms={jitter_ms}"], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _wait(lambda: _udp_bound(port), 600, "the producer")
    frames = 25 * seconds
    cam = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                          f"testsrc2=size={size}:rate=25", "-frames:v", str(frames), "-c:v", "libx264",
                          "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-f", "mpegts",
                          f"udp://127.0.0.1:{port}?pkt_size=1316"], check=True)
    del cam
    time.sleep(8.0)  # the producer's queue and the consumer's backlog drain
    prod.send_signal(signal.SIGINT)  # end-of-stream ends the consumer
    p_out, _ = prod.communicate(timeout=300)
    con.wait(timeout=300)
    con_log.close()
    produced = json.loads(p_out.strip().splitlines()[-1])
    shown = json.loads((out / "summary.json").read_text())
    return {"jitter_buffer_ms": jitter_ms, "camera_frames": frames, "producer_frames": produced["frames"],
            "consumer_shown": shown["frames_shown"], "exit_reason": shown["exit_reason"],
            "shown_of_camera": round(shown["frames_shown"] / frames, 3),
            "shown_of_produced": round(shown["frames_shown"] / max(1, produced["frames"]), 3)}


def send_trace(jitter_ms: float, seconds: int, size: str, poll_ms: float = 10.0) -> dict:
    """The producer's side alone: a plain SUB socket (deep queue, no newest-wins) records
    every frame's ``send`` stamp; a consumer that wakes every ``poll_ms`` and shows only the
    newest frame would show one frame per distinct wake-up among those stamps."""
    import numpy as np
    import zmq

    from endostream.protocol import wire

    port = _port(socket.SOCK_DGRAM)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.rcvhwm = 100000
    sub.subscribe(b"")
    ep = f"tcp://127.0.0.1:{_port(socket.SOCK_STREAM)}"
    sub.bind(ep)
    prod = subprocess.Popen([sys.executable, "-m", "endostream.cli", "produce", "source=network",
                             f"source.uri=udp://127.0.0.1:{port}", f"transport.endpoint={ep}",
                             "source.open_timeout_s=600", f"source.jitter_buffer_ms={jitter_ms}"],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _wait(lambda: _udp_bound(port), 600, "the producer")
    frames = 25 * seconds
    cam = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
                            f"testsrc2=size={size}:rate=25", "-frames:v", str(frames), "-c:v", "libx264",
                            "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-f", "mpegts",
                            f"udp://127.0.0.1:{port}?pkt_size=1316"])
    sends: list[int] = []
    quiet_since = None
    while True:
        if sub.poll(200):
            h = wire.unpack_header(sub.recv_multipart()[0])
            if h.kind == "frame":
                sends.append(dict(h.stamps_ns)["send"])
                quiet_since = None
        if cam.poll() is not None:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 8:
                break
    prod.send_signal(signal.SIGINT)
    prod.communicate(timeout=300)
    sub.close(0)
    ctx.term()
    t = np.array(sends) / 1e9
    gaps_ms = np.diff(t) * 1000
    shown = len(np.unique(np.floor(t / (poll_ms / 1000))))
    return {"jitter_buffer_ms": jitter_ms, "camera_frames": frames, "sent": len(sends),
            "gaps_under_10ms": round(float((gaps_ms < 10).mean()), 3),
            "gap_ms_p50": round(float(np.median(gaps_ms)), 1),
            f"newest_wins_{poll_ms:g}ms_shows": shown, "shown_of_camera": round(shown / frames, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jitter-ms", type=float, nargs="+", default=[200.0, 0.0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--size", default="384x288")
    ap.add_argument("--send-trace", action="store_true",
                    help="no consumer: record every frame's send time (the producer's side alone)")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("ffmpeg not found (apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory() as tmp:
        for j in args.jitter_ms:
            if args.send_trace:
                print(json.dumps(send_trace(j, args.seconds, args.size)), flush=True)
            else:
                print(json.dumps(measure(j, args.seconds, args.size, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
