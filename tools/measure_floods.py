"""Consumer memory and the real stream's shown frames under hostile floods (issue: bounded state).

Each scenario starts a real consumer process on loopback, floods it from this process, then
sends a real stream (185 frames of 640x480 at 25 fps) and reads the consumer's summary and
frames.csv. Resident memory (RSS) of the consumer is sampled every 50 ms.

    .venv/bin/python tools/measure_floods.py [--scenarios baseline,ids,huge,garbage,held] [--out out/floods]

Prints one JSON line per scenario.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from endostream.protocol import wire  # noqa: E402
from endostream.protocol.live import LiveSender  # noqa: E402
from endostream.protocol.lossless_sender import LosslessSender  # noqa: E402
from endostream.types import Frame  # noqa: E402

REAL_FRAMES, REAL_SID = 185, 9999


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Consumer:
    """A consumer process and its RSS sampled in a thread."""

    def __init__(self, mode: str, ep: str, out: Path, *extra: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.out, self.log = out, open(out / "consume.log", "w")
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        self.p = subprocess.Popen([sys.executable, "-m", "endostream.cli", "consume",
                                   f"transport.mode={mode}", f"transport.endpoint={ep}", f"out={out}",
                                   "model.threads=1", "sink=[video]", *extra],
                                  cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.rss: list[tuple[float, int]] = []
        self._stop = False
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        deadline = time.monotonic() + 120
        while " on tcp://" not in (out / "consume.log").read_text():
            if self.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((out / "consume.log").read_text()[-2000:])
            time.sleep(0.1)
        self.t0 = time.monotonic()

    def _sample(self) -> None:
        ps = psutil.Process(self.p.pid)
        while not self._stop:
            try:
                self.rss.append((time.monotonic(), ps.memory_info().rss))
            except psutil.Error:
                return
            time.sleep(0.05)

    def rss_mb(self, since: float = 0.0) -> float:
        vals = [r for t, r in self.rss if t >= since]
        return round(max(vals) / 2**20, 1) if vals else 0.0

    def finish(self, timeout: float = 120) -> dict:
        rc = self.p.wait(timeout)
        self._stop = True
        summary = json.loads((self.out / "summary.json").read_text())
        with open(self.out / "frames.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        lines = (self.out / "consume.log").read_text().splitlines()
        return {"rc": rc, "summary": summary, "rows": rows, "log_lines": len(lines)}


def _real_stream(ep: str, lossless: bool = False) -> None:
    img = np.zeros((480, 640, 3), np.uint8)
    img[:] = (40, 40, 140)
    tx = LosslessSender(ep) if lossless else LiveSender(ep)
    with tx:
        if not lossless:  # a PUB drops until connected: wait for the handshake
            deadline = time.monotonic() + 10
            while not tx.handshakes_ok and time.monotonic() < deadline:
                tx._drain_monitor()
                time.sleep(0.02)
        t0 = time.monotonic()
        for seq in range(REAL_FRAMES):
            img[200:280, (seq * 3) % 560:(seq * 3) % 560 + 80] = (120, 180, 230)
            f = Frame(REAL_SID, seq, time.monotonic_ns(), img.copy())
            tx.send(f, timeout_s=120) if lossless else tx.send(f)
            delay = t0 + (seq + 1) / 25 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if lossless:
            tx.end_stream(REAL_SID, timeout_s=120)
        else:
            tx.end_stream(REAL_SID)


def _result(name: str, con: Consumer, res: dict, **more) -> dict:
    s = res["summary"]
    shown = sum(1 for r in res["rows"] if int(r["stream_id"]) == REAL_SID)
    return {"scenario": name, "consumer_rss_peak_mb": con.rss_mb(), "real_shown": shown,
            "real_sent": REAL_FRAMES, "real_shown_pct": round(100 * shown / REAL_FRAMES, 1),
            "streams_held": s.get("streams_held"), "video_cards": s["signal"]["video_cards"],
            "malformed": s["malformed_messages"], "log_lines": res["log_lines"], "rc": res["rc"], **more}


def baseline(out: Path) -> dict:
    """The real stream alone: the figures the floods are compared with."""
    ep = _endpoint()
    con = Consumer("live", ep, out / "baseline", "idle_timeout_s=5")
    _real_stream(ep)
    return _result("no flood", con, con.finish())


def ids(out: Path) -> dict:
    """2,000 stream ids, one 640x480 frame each, then the real stream."""
    ep = _endpoint()
    con = Consumer("live", ep, out / "ids", "idle_timeout_s=5")
    img = np.full((480, 640, 3), 90, np.uint8)
    with LiveSender(ep, sndhwm=10_000) as tx:
        time.sleep(0.5)
        for sid in range(2000):
            tx.send(Frame(sid, 0, time.monotonic_ns(), img))
        time.sleep(0.5)
    _real_stream(ep)
    return _result("2000 stream ids", con, con.finish())


def huge(out: Path) -> dict:
    """Three 1 GiB messages (one valid 64x48 header each), then the real stream."""
    ep = _endpoint()
    con = Consumer("live", ep, out / "huge", "idle_timeout_s=5")
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 10
    pub.connect(ep)
    time.sleep(1.0)
    big = bytes(1 << 30)
    head = bytes(wire.encode_frame(Frame(1, 0, 0, np.zeros((48, 64, 3), np.uint8)))[0])
    t = time.monotonic()
    for _ in range(3):
        pub.send_multipart([head, big], copy=False)
        time.sleep(1.0)
    flood_peak = con.rss_mb(since=t)
    pub.close(linger=0)
    ctx.term()
    del big
    _real_stream(ep)
    return _result("three 1 GiB messages", con, con.finish(), rss_peak_during_flood_mb=flood_peak)


def garbage(out: Path) -> dict:
    """50,000 garbage messages (1 KiB of random bytes) while the real stream plays."""
    ep = _endpoint()
    con = Consumer("live", ep, out / "garbage", "idle_timeout_s=5")
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 100_000
    pub.connect(ep)
    time.sleep(1.0)
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        rng = np.random.default_rng(0)
        junk = [rng.bytes(1024) for _ in range(64)]
        while not stop.is_set() and sent[0] < 50_000:
            try:
                pub.send(junk[sent[0] % 64], zmq.NOBLOCK)
                sent[0] += 1
            except zmq.Again:
                time.sleep(0.001)

    th = threading.Thread(target=flood)
    th.start()
    _real_stream(ep)
    stop.set()
    th.join()
    pub.close(linger=0)
    ctx.term()
    return _result("garbage during the stream", con, con.finish(), garbage_sent=sent[0])


def held(out: Path) -> dict:
    """Lossless: 510 frames of 1280x720 with seq 0 withheld, then the producer goes; RSS
    during, 20 s after; then a real lossless stream is delivered in full."""
    ep = _endpoint()
    con = Consumer("lossless", ep, out / "held", "idle_timeout_s=60", "min_streams=1")
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.sndhwm = 1000
    dealer.connect(ep)
    img = np.full((720, 1280, 3), 77, np.uint8)
    parts0 = wire.encode_frame(Frame(5, 1, time.monotonic_ns(), img), epoch=12345)
    payload, h0 = bytes(parts0[1]), wire.unpack_header(bytes(parts0[0]))
    t = time.monotonic()
    for seq in range(1, 511):  # one payload, a header per seq: window_start 0, seq 0 never sent
        head = wire.pack_header(dataclasses.replace(h0, seq=seq, window_start=0))
        dealer.send_multipart([head, payload], copy=False)
    time.sleep(2.0)
    during = con.rss_mb(since=t)
    dealer.close(linger=0)
    ctx.term()
    gone = time.monotonic()
    time.sleep(20.0)
    after = [r for tt, r in con.rss if tt >= gone + 19.0]
    _real_stream(ep, lossless=True)
    return _result("510 held 1280x720 frames (lossless)", con, con.finish(timeout=600),
                   rss_peak_during_mb=during,
                   rss_20s_after_producer_gone_mb=round(after[-1] / 2**20, 1) if after else None)


SCENARIOS = {"baseline": baseline, "ids": ids, "huge": huge, "garbage": garbage, "held": held}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="baseline,ids,huge,garbage,held")
    ap.add_argument("--out", default="out/floods")
    args = ap.parse_args()
    for name in args.scenarios.split(","):
        print(json.dumps(SCENARIOS[name](Path(args.out))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
