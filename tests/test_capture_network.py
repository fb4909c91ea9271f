"""Network sources end to end on loopback, with Debian's ffmpeg as the camera: UDP MPEG-TS,
HTTP (``ffmpeg -listen 1``, which serves exactly one connection), RTSP over TCP and UDP
(GStreamer's gst-rtsp-server, tests/capture_rtsp_server.py), errors that name their cause,
and reconnection after the sender is killed and restarted.

Frames go through the real producer loop and real ZeroMQ sockets into a live receiver that
keeps the newest frame per stream, as the consumer does. Bounds hold on a loaded 2-core
machine (a training run in the background): counts are fractions, deadlines generous.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import ENV, REPO, cli, wait_for
from endostream.capture.producer import StopSignals, run_producer
from endostream.capture.sources import SourceError, open_source
from endostream.protocol.live import LiveReceiver, LiveSender

FFMPEG = shutil.which("ffmpeg")
SYSTEM_PYTHON = "/usr/bin/python3"
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None, reason="Debian's ffmpeg is not installed (apt-get install ffmpeg; .ci/run does)")


def _has_rtsp_server() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import GstRtspServer, Gst; Gst.init(None); "
             "assert Gst.ElementFactory.find('udpsrc') and Gst.ElementFactory.find('rtph264pay')")
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


needs_rtsp = pytest.mark.skipif(
    FFMPEG is None or not _has_rtsp_server(),
    reason="ffmpeg or GStreamer's RTSP server is not installed (apt-get install ffmpeg python3-gi "
           "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good; .ci/run does)")


# --------------------------------------------------------------------------- helpers


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bound(port: int, proto: str) -> bool:
    """A socket is bound to ``port`` (UDP) or listening on it (TCP), from /proc/net."""
    lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
    want = f":{port:04X}"
    return any(f.split()[1].endswith(want) and (proto == "udp" or f.split()[3] == "0A")
               for f in lines)


def ffmpeg_camera(out: list[str], *, frames: int, size: str = "160x120") -> subprocess.Popen:
    """Debian's ffmpeg as a 25 fps camera: a test pattern encoded as H.264 at real time
    (``-re``), one keyframe a second as cameras send, no B-frames (zerolatency)."""
    return subprocess.Popen(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
         f"testsrc2=size={size}:rate=25", "-frames:v", str(frames), "-c:v", "libx264",
         "-preset", "ultrafast", "-tune", "zerolatency", "-g", "25", "-pix_fmt", "yuv420p", *out],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Watcher:
    """A live consumer's receive loop: newest frame per stream, backlog drained as the
    consumer's ``_newest_frames`` does; records shown seqs, loss notices and the end."""

    def __init__(self, rx: LiveReceiver) -> None:
        self.rx = rx
        self.shown: list[int] = []
        self.shown_at: list[float] = []
        self.lost_at: list[float] = []

    def poll(self) -> None:
        msgs = self.rx.recv_newest(50)
        for _ in range(1000) if msgs else ():
            more = self.rx.recv_newest(1)
            if not more:
                break
            msgs += more
        newest = {m.stream_id: m for m in msgs if type(m).__name__ == "FrameMessage"}
        st = self.rx.stats.streams.get(0)
        while st is not None and len(self.lost_at) < st.source_lost:  # source-lost notices
            self.lost_at.append(time.monotonic())
        for m in newest.values():
            self.shown.append(m.seq)
            self.shown_at.append(time.monotonic())

    @property
    def ended(self) -> bool:
        st = self.rx.stats.streams.get(0)
        return bool(st and st.ended)

    def until(self, cond, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
            self.poll()


def produce_in_thread(frames, endpoint: str) -> tuple[threading.Thread, dict]:
    """run_producer on its own thread with its own LiveSender (one socket, one thread)."""
    result: dict = {}

    def body() -> None:
        try:
            with LiveSender(endpoint) as tx:
                result["summary"] = run_producer(frames, tx)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, result


# --------------------------------------------------------------------------- errors


def test_network_errors_name_the_cause(tmp_path):
    refused = free_port()
    with pytest.raises(SourceError, match="connection refused") as err:
        open_source(f"rtsp://127.0.0.1:{refused}/cam", open_timeout_s=5)
    assert "corrupt" not in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SourceError, match="connection refused"):
        open_source(f"http://127.0.0.1:{refused}/live.ts", open_timeout_s=5)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"timed out after 1 s \(no data arrived"):
        open_source(f"udp://127.0.0.1:{free_port(socket.SOCK_DGRAM)}", open_timeout_s=1)
    assert time.monotonic() - t0 < 30  # the timeout bounds the wait (30: a loaded machine)


def test_audio_only_file_says_no_video_stream(tmp_path):
    import av
    import numpy as np

    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in s.encode(frame):
            c.mux(p)
    with pytest.raises(SourceError, match=r"no video stream \(streams: audio\)"):
        open_source(str(wav))


# --------------------------------------------------------------------------- UDP


@needs_ffmpeg
def test_udp_mpegts_through_the_produce_command_and_sigint_ends_it(tmp_path):
    """`endostream produce` on a UDP MPEG-TS stream: frames reach a live consumer, spread by
    the jitter buffer; SIGINT sends end-of-stream. The frame counts are printed for the
    record; docs/CAPTURE.md has the measured figure on an idle and a loaded machine."""
    port = free_port(socket.SOCK_DGRAM)
    with LiveReceiver("tcp://127.0.0.1:*") as rx:
        log = open(tmp_path / "produce.log", "w")
        prod = subprocess.Popen(
            # a read timeout far beyond the run: at exit the reader is surely still blocked in FFmpeg
            cli("produce", "source=network", f"source.uri=udp://127.0.0.1:{port}",
                f"transport.endpoint={rx.endpoint}", "source.open_timeout_s=120", "source.read_timeout_s=120"),
            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            wait_for(lambda: bound(port, "udp") or prod.poll() is not None, 120, "the producer to listen")
            sent = 75
            cam = ffmpeg_camera(["-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"], frames=sent)
            w = Watcher(rx)
            w.until(lambda: cam.poll() is not None, 120, "the camera to finish")
            last = [time.monotonic()]

            def quiet() -> bool:  # every frame the producer will get is shown
                if w.shown_at and w.shown_at[-1] > last[0]:
                    last[0] = w.shown_at[-1]
                return time.monotonic() - last[0] > 3

            w.until(quiet, 120, "the stream to go quiet")
            prod.send_signal(subprocess.signal.SIGINT)
            w.until(lambda: w.ended, 60, "end-of-stream after SIGINT")
            out, _ = prod.communicate(timeout=60)
        finally:
            prod.kill()
            log.close()
    assert prod.returncode == 0, (tmp_path / "produce.log").read_text()[-2000:]
    # ...and the process left without waiting for it (letting the interpreter shut down around a
    # thread inside FFmpeg once crashed the producer with SIGSEGV after a clean stop)
    assert "exiting without it" in (tmp_path / "produce.log").read_text()
    summary = json.loads(out.strip().splitlines()[-1])
    print(f"udp: camera sent {sent}, producer got {summary['frames']}, consumer showed {len(w.shown)}")
    assert summary["stopped_by"] == "SIGINT" and summary["peer_accepted"]
    # Loose: on the loaded 2-core machine a starved producer or receive loop loses frames
    # (measured 57 of 75 decoded, 12 shown at worst); docs/CAPTURE.md has the figures.
    assert summary["frames"] >= 0.25 * sent and len(w.shown) >= 10
    assert w.shown == sorted(w.shown)


# --------------------------------------------------------------------------- HTTP


@needs_ffmpeg
def test_http_from_ffmpeg_listen_is_opened_once(tmp_path):
    """`ffmpeg -listen 1` serves one HTTP connection: a probe-close-reopen would fail."""
    port = free_port()
    cam = ffmpeg_camera(["-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/live.ts"], frames=75)
    try:
        wait_for(lambda: bound(port, "tcp"), 60, "ffmpeg to listen")
        frames = open_source(f"http://127.0.0.1:{port}/live.ts", reconnect=False, open_timeout_s=30)
        assert frames.live  # MPEG-TS over HTTP has no duration: a live stream
        with LiveReceiver("tcp://127.0.0.1:*") as rx:
            t, result = produce_in_thread(frames, rx.endpoint)
            w = Watcher(rx)
            w.until(lambda: w.ended or "error" in result, 120, "end-of-stream")
            t.join(30)
    finally:
        cam.kill()
        cam.wait()
    assert "error" not in result, result.get("error")
    assert result["summary"]["frames"] >= 0.5 * 75  # one connection delivered the stream
    assert len(w.shown) >= 10  # loose: a starved receive loop shows fewer (docs/CAPTURE.md)


# --------------------------------------------------------------------------- RTSP


class RtspCamera:
    """ffmpeg sends H.264 RTP to a port; gst-rtsp-server serves it at rtsp://.../cam."""

    def __init__(self, tmp_path: Path, transport: str, frames: int) -> None:
        self.port, self.rtp_port, self.transport = free_port(), free_port(socket.SOCK_DGRAM), transport
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.log = tmp_path / "rtsp_server.log"
        self.server: subprocess.Popen | None = None
        self.start_server()
        self.cam = ffmpeg_camera(["-f", "rtp", f"rtp://127.0.0.1:{self.rtp_port}"], frames=frames)

    def start_server(self) -> float:
        """Start (or restart) the server; returns when it listens (monotonic time)."""
        self.server = subprocess.Popen(
            [SYSTEM_PYTHON, str(REPO / "tests/capture_rtsp_server.py"), str(self.port),
             str(self.rtp_port), self.transport], stdout=subprocess.PIPE,
            stderr=open(self.log, "a"), text=True)
        assert self.server.stdout.readline().strip() == "ready", self.log.read_text()
        return time.monotonic()

    def kill_server(self) -> None:
        self.server.kill()
        self.server.wait()

    def close(self) -> None:
        for p in (self.cam, self.server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@needs_rtsp
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_streams_over_tcp_and_udp_transport(tmp_path, transport):
    """A server offering only one RTP transport; the client asks for it with
    ``options={rtsp_transport: ...}``; asking for the other one is refused, said so."""
    cam = RtspCamera(tmp_path, transport, frames=250)
    try:
        # The transport the server offers first: on a loaded machine, GStreamer's server answered
        # the session after a refused one with a 5XX now and then (seen once in a full-suite run).
        frames = open_source(cam.url, options={"rtsp_transport": transport}, open_timeout_s=30,
                             max_frames=40)
        assert frames.live
        with LiveReceiver("tcp://127.0.0.1:*") as rx:
            t, result = produce_in_thread(frames, rx.endpoint)
            w = Watcher(rx)
            w.until(lambda: w.ended or "error" in result, 120, "40 frames and end-of-stream")
            t.join(30)
        other = "udp" if transport == "tcp" else "tcp"
        with pytest.raises(SourceError, match="refused the transport"):
            open_source(cam.url, options={"rtsp_transport": other}, open_timeout_s=30)
    finally:
        cam.close()
    assert "error" not in result, result.get("error")
    assert result["summary"]["frames"] == 40
    assert len(w.shown) >= 5 and w.shown == sorted(w.shown)  # loose: a loaded machine


@needs_rtsp
def test_rtsp_server_killed_and_restarted_resumes_within_5_s(tmp_path):
    """The server goes away mid-stream: the consumer is told the source is lost (not
    ended), the producer reconnects with back-off, and frames flow again within 5 s of the
    server listening again; seq keeps counting."""
    cam = RtspCamera(tmp_path, "any", frames=2500)
    lost_reasons: list[str] = []
    try:
        frames = open_source(cam.url, open_timeout_s=30, read_timeout_s=2.0,
                             on_lost=lost_reasons.append)
        with LiveReceiver("tcp://127.0.0.1:*") as rx:
            stop = StopSignals()  # not entered: no signal handlers, stopped by request()
            result: dict = {}

            def body() -> None:
                try:
                    with LiveSender(rx.endpoint) as tx:
                        result["summary"] = run_producer(frames, tx, stop=stop)
                except BaseException as exc:  # noqa: BLE001 - handed to the test
                    result["error"] = exc

            t = threading.Thread(target=body, daemon=True)
            t.start()
            w = Watcher(rx)
            w.until(lambda: len(w.shown) >= 10, 120, "the first frames")
            cam.kill_server()
            killed = time.monotonic()
            w.until(lambda: w.lost_at and w.lost_at[-1] > killed, 60, "the source-lost notice")
            before = len(w.shown)
            ready = cam.start_server()
            w.until(lambda: len(w.shown) > before + 5, 60, "frames after the restart")
            first_back = w.shown_at[before]
            stop.request("test")
            w.until(lambda: w.ended, 60, "end-of-stream after the stop")
            t.join(30)
    finally:
        cam.close()
    assert "error" not in result, result.get("error")
    resumed_s = first_back - ready
    print(f"rtsp: server back -> first frame shown: {resumed_s:.2f} s; lost: {lost_reasons[:1]}")
    assert lost_reasons and "127.0.0.1" in lost_reasons[0]
    assert resumed_s < 5.0
    assert w.shown == sorted(w.shown)  # seq kept counting across the reconnect
    assert result["summary"]["source_reconnects"] >= 1 and result["summary"]["source_losses"] >= 1


@needs_ffmpeg
def test_udp_sender_killed_and_restarted_is_lost_then_back(tmp_path):
    """UDP: the sender stops (killed), the read times out -> lost, reported once a second
    while lost; a new sender on the same port is picked up without reopening by hand."""
    port = free_port(socket.SOCK_DGRAM)
    out = ["-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"]
    cams = [ffmpeg_camera(out, frames=2500)]
    lost: list[float] = []
    restarted: list[float] = []

    def on_lost(reason: str) -> None:  # called on this thread while the source is lost
        lost.append(time.monotonic())
        if len(lost) == 2:  # lost, and said so again a second later: bring the camera back
            cams.append(ffmpeg_camera(out, frames=2500))
            restarted.append(time.monotonic())

    try:
        frames = open_source(f"udp://127.0.0.1:{port}", open_timeout_s=60, read_timeout_s=1.0,
                             on_lost=on_lost)
        first = [next(frames) for _ in range(10)]
        cams[0].kill()
        t_kill = time.monotonic()
        after = next(f for f in frames if restarted and f.t_capture_ns / 1e9 > restarted[0])
        back_s = after.t_capture_ns / 1e9 - restarted[0]
        frames.close()
    finally:
        for cam in cams:
            cam.kill()
            cam.wait()
    print(f"udp: sender restarted -> first frame {back_s:.2f} s (includes ffmpeg's start)")
    assert [f.seq for f in first] == list(range(10)) and after.seq >= 10
    assert lost[0] - t_kill < 30 and lost[1] - lost[0] >= 0.9  # repeated once a second
    assert frames.stats.losses == 1 and frames.stats.reconnects == 1
    assert back_s < 30  # ffmpeg's start-up on a loaded machine; the RTSP test bounds the reconnect
