"""Idle-connection flood against a live consumer's browser viewer, and what it does to the stream.

    .venv/bin/python tools/flood_viewer.py [--connections 1600] [--seconds 10] [--nofile 1024]

Starts ``endostream consume sink=[viewer]`` (its descriptor limit lowered to ``--nofile``, a
common default) and a live ``endostream produce`` of the demo clip in a loop, waits for LIVE,
then opens ``--connections`` TCP connections to the viewer that never finish a request (half
send a partial header). Prints the consumer's descriptors, how fast /status.json answers, MJPEG
frames received and frames shown per second before and during the flood, the consumer's peak
descriptors and resident memory during it, and the tracebacks in the consumer's log.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
_OPEN_BUDGET_S = 60.0  # a viewer that stops accepting makes each connect wait: bound the flood


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(port: int) -> tuple[dict, float]:
    t0 = time.monotonic()
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=10).read()
    return json.loads(body), (time.monotonic() - t0) * 1000.0


def _mjpeg_parts(port: int, seconds: float) -> int:
    resp = urllib.request.urlopen(f"http://127.0.0.1:{port}/stream.mjpg", timeout=10)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        line = resp.fp.readline()
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            resp.fp.readline()
            resp.fp.read(length)
            n += 1
    resp.close()
    return n


def _window(port: int, pid: int, seconds: float) -> dict:
    """Frames shown per second (status), MJPEG frames per second, status latency, descriptors."""
    ps = psutil.Process(pid)
    try:
        s0, _ = _status(port)
        t0 = time.monotonic()
        parts = _mjpeg_parts(port, seconds)
        s1, ms = _status(port)
    except OSError as exc:  # the viewer does not answer at all
        return {"error": f"{type(exc).__name__}: {exc}", "fds": ps.num_fds()}
    dt = time.monotonic() - t0
    return {"shown_per_s": round((s1["frames_shown"] - s0["frames_shown"]) / dt, 1),
            "mjpeg_per_s": round(parts / seconds, 1), "status_ms": round(ms, 1),
            "fds": ps.num_fds(), "state": s1["state"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1600)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--nofile", type=int, default=1024)
    ap.add_argument("--repo", type=Path, default=REPO, help="a checkout to run (an older one, to compare)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flood-"))
    port, zport = _free_port(), _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    lim = a.nofile

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    cli = [sys.executable, "-m", "endostream.cli"]
    ep = f"tcp://127.0.0.1:{zport}"
    con_log = (work / "consumer.log").open("wb")
    con = subprocess.Popen(cli + ["consume", "sink=[viewer]", f"sink.viewer.port={port}",
                                  f"transport.endpoint={ep}", "idle_timeout_s=600", "model.threads=1",
                                  f"out={work / 'out'}"], cwd=a.repo, env=env, stdout=con_log,
                           stderr=subprocess.STDOUT, preexec_fn=limit)
    prod = None
    sockets: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                _status(port)
                break
            except OSError:
                time.sleep(0.5)
        prod = subprocess.Popen(cli + ["produce", "source=demo", f"transport.endpoint={ep}", "loop=true"],
                                cwd=a.repo, env=env, stdout=subprocess.DEVNULL, stderr=(work / "producer.log").open("wb"))
        while _status(port)[0]["state"] != "live":
            time.sleep(0.5)
        time.sleep(3)
        before = _window(port, con.pid, a.seconds)
        print(f"before flood: {before}", flush=True)
        peak, rss = [0], [0.0]
        done = threading.Event()

        def sample() -> None:  # the consumer's descriptors and memory while the flood opens and holds
            ps = psutil.Process(con.pid)
            while not done.wait(0.2):
                peak[0] = max(peak[0], ps.num_fds())
                rss[0] = max(rss[0], ps.memory_info().rss / 2**20)

        threading.Thread(target=sample, daemon=True).start()
        t0 = time.monotonic()
        failed = 0
        for i in range(a.connections):
            if time.monotonic() - t0 > _OPEN_BUDGET_S:
                break
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                if i % 2:
                    s.sendall(b"GET /status.json HTTP/1.1\r\nHost: 127")  # never finished
                sockets.append(s)
            except OSError:  # the viewer's backlog is full: it stopped accepting
                failed += 1
        opened = time.monotonic() - t0
        print(f"opened {len(sockets)} connections, {failed} failed, in {opened:.1f} s", flush=True)
        during = _window(port, con.pid, a.seconds)
        done.set()
        print(f"during flood ({a.connections} connections opened in {opened:.1f} s, consumer nofile {lim}): "
              f"{during}, peak fds {peak[0]}, peak RSS {rss[0]:.0f} MB", flush=True)
    finally:
        for s in sockets:
            s.close()
        if prod is not None:
            prod.send_signal(signal.SIGINT)
            prod.wait(60)
        try:
            con.wait(60)
        except subprocess.TimeoutExpired:
            con.send_signal(signal.SIGINT)
            con.wait(60)
        con_log.close()
    log = (work / "consumer.log").read_text(errors="replace")
    summary = json.loads((work / "out" / "summary.json").read_text())
    print(f"consumer: exit {con.returncode}, {log.count('Traceback')} tracebacks, "
          f"{len(log.splitlines())} log lines; frames received {summary.get('frames_received')}, "
          f"shown {summary.get('frames_shown')}; log {work / 'consumer.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
