"""Transport benchmark: endostream (lossless and live) vs imagezmq REQ/REP, same frames, same run.

One-way latency = consumer has the decoded image - producer is about to encode it (both on
time.monotonic_ns, one host). Producer and consumer are separate processes on tcp loopback.
The first WARMUP frames of every run are skipped (Holoscan-style). Prints a table and writes
out/bench_transport.json.

    nice -n 15 .venv/bin/python tools/bench_transport.py [--frames 300] [--out out/bench_transport.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

WARMUP = 20
ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT.parent / "shared/data/laparoscopy/endovis2017-sample/short_source.mp4"


def test_image(width: int, height: int) -> np.ndarray:
    """A real endoscopy frame when the sample clip is there (JPEG sizes then mean something),
    otherwise a smooth synthetic image."""
    cap = cv2.VideoCapture(str(CLIP)) if CLIP.exists() else None
    ok, img = cap.read() if cap is not None else (False, None)
    if not ok:
        yy, xx = np.mgrid[0:height, 0:width]
        img = np.dstack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) % 256)]).astype(np.uint8)
    return np.ascontiguousarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA))


# ----------------------------------------------------------------------------- producers


def _produce_endostream(mode: str, endpoint: str, width: int, height: int, codec: str, n: int,
                        window: int, pace_fps: float | None) -> None:
    from endostream.protocol.live import LiveSender
    from endostream.protocol.lossless_sender import LosslessSender
    from endostream.types import Frame

    img = test_image(width, height)
    frames = [img, img.copy()]  # alternate buffers: a zero-copy send must not see a rewrite
    if mode == "lossless":
        tx = LosslessSender(endpoint, window=window, codec=codec)
    else:
        tx = LiveSender(endpoint, codec=codec)
    with tx:
        time.sleep(0.5)  # let the connection (and, live, the subscription) settle
        t0 = time.monotonic()
        for i in range(n):
            if pace_fps:
                time.sleep(max(0.0, t0 + i / pace_fps - time.monotonic()))
            if mode == "lossless":
                tx.wait_ready(timeout_s=30)  # like REQ/REP: the clock starts when we may send
            t = time.monotonic_ns()
            f = Frame(0, i, t, frames[i % 2], stamps_ns={"grab": t})
            if mode == "lossless":
                tx.send(f, timeout_s=30)
            else:
                tx.send(f)
        ok = tx.end_stream(0, **({"timeout_s": 30} if mode == "lossless" else {}))
    if not ok:
        raise SystemExit(f"end-of-stream not acknowledged: {tx.stats}")


def _produce_imagezmq(endpoint: str, width: int, height: int, codec: str, n: int) -> None:
    import imagezmq

    img = test_image(width, height)
    sender = imagezmq.ImageSender(connect_to=endpoint)
    time.sleep(0.5)  # let the connection settle, as the endostream producer does
    for i in range(n):
        t = time.monotonic_ns()
        if codec == "jpeg":
            ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            sender.send_jpg(str(t), jpg)
        else:
            sender.send_image(str(t), img)
    sender.send_image("END", np.zeros((1, 1, 3), np.uint8))
    sender.close()


# ----------------------------------------------------------------------------- consumers


def _stats(lat_ns: list[int], captured_ns: list[int], arrived_ns: list[int], sent: int) -> dict:
    """Per received frame: latency, capture stamp at the producer and arrival time at the
    consumer (one host, one monotonic clock). Like the latencies, fps skips the first WARMUP
    frames: frames after them / (last arrival - capture of the first frame counted). Timing
    from the capture, not from an arrival, keeps a pipelined sender honest: by the time a
    frame arrives a window of later ones is already in flight."""
    got = len(arrived_ns)
    k = WARMUP if got > WARMUP + 1 else 0
    lat = np.array(lat_ns[k:], dtype=np.float64) / 1e6
    span = (arrived_ns[-1] - captured_ns[k]) / 1e9 if got else 0
    return {"frames_sent": sent, "frames_received": got,
            "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "max_ms": round(float(lat.max()), 3),
            "fps": round((got - k) / span, 1) if span > 0 else None}


def run_endostream(mode: str, width: int, height: int, codec: str, n: int, *, window: int = 32,
                   pace_fps: float | None = None) -> dict:
    from endostream.protocol.live import LiveReceiver
    from endostream.protocol.lossless_receiver import LosslessReceiver
    from endostream.protocol.wire import EndOfStream

    rx = LosslessReceiver("tcp://127.0.0.1:*") if mode == "lossless" else \
        LiveReceiver("tcp://127.0.0.1:*", rcvhwm=4)
    proc = mp.get_context("spawn").Process(
        target=_produce_endostream,
        args=(mode, rx.endpoint, width, height, codec, n, window, pace_fps))
    proc.start()
    lat, captured, arrived = [], [], []
    deadline = time.monotonic() + 120
    last_msg = time.monotonic()
    with rx:
        while time.monotonic() < deadline:
            if not proc.is_alive() and time.monotonic() - last_msg > 3:
                break  # producer gone and nothing more coming: report what arrived
            if mode == "lossless":
                m = rx.recv(200)
                msgs = [] if m is None else [m]
            else:
                msgs = rx.recv_newest(200)
                if not msgs and rx.stats.streams.get(0) and rx.stats.streams[0].ended:
                    break
            end = False
            last_msg = time.monotonic() if msgs else last_msg
            for m in msgs:
                if mode == "lossless":
                    rx.ack_message(m)
                if isinstance(m, EndOfStream):
                    end = True
                    continue
                arrived.append(time.monotonic_ns())
                captured.append(m.frame.t_capture_ns)
                lat.append(m.frame.stamps_ns["decode"] - m.frame.t_capture_ns)
            if end:
                break
        proc.join(30)
    out = _stats(lat, captured, arrived, n)
    out["producer_exitcode"] = proc.exitcode
    return out


def run_imagezmq(width: int, height: int, codec: str, n: int, port: int = 5599) -> dict:
    import imagezmq

    hub = imagezmq.ImageHub(open_port=f"tcp://127.0.0.1:{port}")
    proc = mp.get_context("spawn").Process(
        target=_produce_imagezmq, args=(f"tcp://127.0.0.1:{port}", width, height, codec, n))
    proc.start()
    lat, captured, arrived = [], [], []
    while True:
        if codec == "jpeg":
            name, buf = hub.recv_jpg()
            if name == "END":
                hub.send_reply(b"OK")
                break
            cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        else:
            name, image = hub.recv_image()
            if name == "END":
                hub.send_reply(b"OK")
                break
        now = time.monotonic_ns()
        lat.append(now - int(name))
        arrived.append(now)
        captured.append(int(name))
        hub.send_reply(b"OK")
    proc.join(30)
    hub.close()
    return _stats(lat, captured, arrived, n)


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out", default="out/bench_transport.json")
    args = ap.parse_args()
    from endostream.protocol.memory import retain_frame_buffers

    # Every consumer below runs in this process. Endostream's receivers make it keep freed
    # frame buffers (no page faults per received frame); do it up front so imagezmq's hub
    # runs under the same malloc settings whatever the order of the runs.
    malloc_retained = retain_frame_buffers()
    cases = [(1920, 1080, "raw"), (640, 480, "raw"), (640, 480, "jpeg"), (1920, 1080, "jpeg")]
    results = []
    for width, height, codec in cases:
        n = args.frames
        # window 1 = one frame in flight, like REQ/REP: the like-for-like latency figure;
        # window 32 = pipelined: the throughput figure (latency then includes queueing);
        # live paced at 30 fps = a tower's rate: what the overlay sees.
        row = {"size": f"{width}x{height}", "codec": codec,
               "endostream_lossless_window1": run_endostream("lossless", width, height, codec, n,
                                                             window=1),
               "endostream_lossless_window32": run_endostream("lossless", width, height, codec, n),
               "endostream_live_30fps": run_endostream("live", width, height, codec, n,
                                                       pace_fps=30.0),
               "imagezmq_reqrep": run_imagezmq(width, height, codec, n)}
        theirs = row["imagezmq_reqrep"]
        row["ratios_vs_imagezmq"] = {
            "window1_p50": round(row["endostream_lossless_window1"]["p50_ms"] / theirs["p50_ms"], 2),
            "window1_p99": round(row["endostream_lossless_window1"]["p99_ms"] / theirs["p99_ms"], 2),
            "window1_fps": round(row["endostream_lossless_window1"]["fps"] / theirs["fps"], 2),
            "window32_fps": round(row["endostream_lossless_window32"]["fps"] / theirs["fps"], 2)}
        results.append(row)
        print(f"{row['size']} {codec}", flush=True)
        for k, v in row.items():
            if isinstance(v, dict) and "p50_ms" in v:
                print(f"  {k:30} p50 {v['p50_ms']:8.2f} ms  p99 {v['p99_ms']:8.2f} ms  "
                      f"{v['fps']} fps  ({v['frames_received']}/{n} frames)", flush=True)
        print(f"  ratios vs imagezmq: {row['ratios_vs_imagezmq']}", flush=True)
    report = {"host": platform.node(), "cpus": os.cpu_count(), "frames_per_run": args.frames,
              "warmup_skipped": WARMUP, "latency": "decoded at consumer - before encode at producer",
              "consumer_malloc_retained": malloc_retained,
              "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
