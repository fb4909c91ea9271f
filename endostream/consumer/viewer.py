"""Browser viewer: the newest overlay as MJPEG over HTTP(S), for headless machines.

``GET /`` the page: the video scaled to fit the window (aspect kept) and, outside the image,
a status bar (signal state, fps, display lag, mask age, model, "research use only") polled
twice a second; ``GET /stream.mjpg`` the stream (``multipart/x-mixed-replace``);
``GET /frame.jpg`` the newest frame once; ``GET /status.json`` the state for room monitoring:
``{"state": "waiting|live|no_signal|ended", "fps", "last_frame_age_ms", "mask_age_ms",
"frames_shown", ...}``.

A stalled feed never looks live: the consumer sends full-frame NO SIGNAL cards while no frames
arrive (:mod:`endostream.consumer.signal`); ``last_frame_age_ms`` is computed when asked, so a
consumer whose display loop hangs still reads ``no_signal``; and the page greys the image out and
says DISCONNECTED when ``/status.json`` stops answering (the consumer exited or hangs). Before
the first frame the stream carries a "WAITING FOR VIDEO" card, never a broken image.

Latest frame only: :meth:`MjpegViewer.update` replaces one slot; each client thread sends
whatever is newest when it is ready, so a slow browser skips frames and never builds a queue
or slows the pipeline. Images given as arrays are JPEG-encoded lazily, once per frame, and
only when someone is watching.

Security: binds 127.0.0.1 by default. Bound to any other address it requires a token
(``?token=...``, compared in constant time; one is generated when none is given) and serves
HTTPS when given ``certfile``/``keyfile``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

from endostream.consumer.signal import LIVE, NO_SIGNAL, WAITING, draw_card

log = logging.getLogger(__name__)

_BOUNDARY = "endostreamframe"
_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>endostream viewer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
html,body{{margin:0;height:100%;background:#000;color:#ddd;font:15px system-ui,sans-serif}}
body{{display:flex;flex-direction:column}}
#bar{{display:flex;flex-wrap:wrap;gap:6px 18px;align-items:center;padding:6px 12px;background:#181818;
  border-bottom:1px solid #333}}
#state{{font-weight:700;padding:2px 10px;border-radius:4px;min-width:9em;text-align:center}}
.live{{background:#1b7a2e;color:#fff}} .waiting{{background:#a86b00;color:#fff}}
.no_signal,.disconnected{{background:#c01818;color:#fff}} .ended{{background:#555;color:#fff}}
.k{{color:#888}} #ruo{{margin-left:auto;color:#f5b400;font-weight:600}}
#view{{position:relative;flex:1;min-height:0;display:flex;align-items:center;justify-content:center}}
#video{{width:100%;height:100%;object-fit:contain;display:block}}
#video.stale{{filter:grayscale(1) brightness(.3)}}
#cover{{position:absolute;inset:0;display:none;align-items:center;justify-content:center;
  flex-direction:column;text-align:center;color:#ff4040;font-size:min(7vw,64px);font-weight:700}}
#cover small{{color:#ddd;font-size:min(3vw,22px);font-weight:400;margin-top:.5em}}
</style></head>
<body>
<div id="bar">
 <span id="state" class="waiting">CONNECTING</span>
 <span><span class="k">fps</span> <b id="fps">-</b></span>
 <span><span class="k">display lag</span> <b id="lag">-</b></span>
 <span><span class="k">AI mask age</span> <b id="mask">-</b></span>
 <span><span class="k">last frame</span> <b id="age">-</b></span>
 <span><span class="k">model</span> <b id="model">-</b></span>
 <span><span class="k">frames</span> <b id="shown">-</b></span>
 <span id="ruo">RESEARCH USE ONLY - not for diagnosis</span>
</div>
<div id="view"><img id="video" alt="" src="/stream.mjpg{query}">
<div id="cover"><span id="cover-title">DISCONNECTED</span><small id="cover-text"></small></div></div>
<script>
const Q = "{query}", LABEL = {{waiting:"WAITING FOR VIDEO", live:"LIVE", no_signal:"NO SIGNAL",
  ended:"STREAM ENDED", disconnected:"DISCONNECTED"}};
const $ = id => document.getElementById(id);
let fails = 0, last = null, lastOk = null, imgBroken = false;
const ms = v => v == null ? "-" : Math.round(v) + " ms";
function setState(s) {{ $("state").textContent = LABEL[s] || s; $("state").className = s;
  document.body.dataset.state = s; }}
function show(s) {{
  last = s; lastOk = new Date(); fails = 0;
  setState(s.state);
  $("fps").textContent = s.fps == null ? "-" : s.fps.toFixed(1);
  $("lag").textContent = ms(s.latency_ms); $("mask").textContent = ms(s.mask_age_ms);
  $("age").textContent = s.last_frame_age_ms == null ? "-" :
    (s.last_frame_age_ms < 1000 ? ms(s.last_frame_age_ms) : (s.last_frame_age_ms / 1000).toFixed(1) + " s ago");
  $("model").textContent = [s.model, s.backend].filter(Boolean).join(" / ") || "-";
  $("shown").textContent = s.frames_shown;
  $("cover").style.display = "none"; $("video").classList.remove("stale");
  if (imgBroken) {{ imgBroken = false; $("video").src = "/stream.mjpg" + Q + (Q ? "&" : "?") + "t=" + Date.now(); }}
}}
function lost() {{
  const ended = last && last.state === "ended";
  setState(ended ? "ended" : "disconnected");
  $("cover-title").textContent = ended ? "STREAM ENDED" : "DISCONNECTED";
  $("cover-text").textContent = "no updates from the consumer" +
    (lastOk ? " since " + lastOk.toLocaleTimeString() : "") + " - the image is not live";
  $("cover").style.display = "flex"; $("video").classList.add("stale");
  for (const id of ["fps", "lag", "mask", "age"]) $(id).textContent = "-";  // nothing is current
}}
async function poll() {{
  const ctl = new AbortController(), timer = setTimeout(() => ctl.abort(), 1500);
  try {{
    const r = await fetch("/status.json" + Q, {{cache: "no-store", signal: ctl.signal}});
    if (!r.ok) throw new Error(r.status);
    show(await r.json());
  }} catch (e) {{ if (++fails >= 2) lost(); }}
  finally {{ clearTimeout(timer); setTimeout(poll, 500); }}
}}
$("video").addEventListener("error", () => {{ imgBroken = true; lost(); }});
poll();
</script></body></html>
"""

def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MjpegViewer:
    """MJPEG-over-HTTP viewer served from a background thread.

    Args:
        host: bind address; anything but loopback requires a token.
        port: TCP port; 0 picks a free one (see :attr:`url`).
        token: access token for non-loopback use; generated when ``None`` and needed.
        certfile, keyfile: PEM files; when given the viewer serves HTTPS.
        jpeg_quality: 0..100 for frames given as arrays.
        max_fps: cap on frames sent per client per second (saves CPU for browsers).
        no_signal_after_ms: ``/status.json`` says ``no_signal`` when the newest frame is older
            than this, whatever the consumer last reported (its loop may hang).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8090, *, token: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, jpeg_quality: int = 80,
                 max_fps: float = 30.0, no_signal_after_ms: float = 1000.0) -> None:
        self.host, self.port = host, int(port)
        if not is_loopback(host) and not token:
            token = secrets.token_urlsafe(16)
        self.token = token
        self.certfile, self.keyfile = certfile, keyfile
        self.jpeg_quality, self.min_interval_s = int(jpeg_quality), 1.0 / max(float(max_fps), 1e-3)
        self.no_signal_after_s = float(no_signal_after_ms) / 1000.0
        self._cond = threading.Condition()
        self._frame_id = 0
        self._image: np.ndarray | None = None
        self._jpeg: bytes | None = None
        self._jpeg_id = -1
        self._t_frame: float | None = None  # monotonic time of the newest update()
        self._status: dict[str, Any] = {}
        self._placeholder: bytes | None = None
        self.status_requests = 0  # /status.json answered (a page is polling)
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The index page's URL, including the token when one is required."""
        scheme = "https" if self.certfile else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?token={self.token}" if self.token else ""
        return f"{scheme}://{host}:{self.port}/{query}"

    @property
    def url_redacted(self) -> str:
        """:attr:`url` with the token hidden, for logs."""
        return self.url.split("?token=")[0] + ("?token=..." if self.token else "")

    def update(self, image: bytes | np.ndarray) -> None:
        """Replace the newest frame: JPEG bytes, or an HxWx3 uint8 BGR array (encoded lazily)."""
        with self._cond:
            self._frame_id += 1
            self._t_frame = time.monotonic()
            if isinstance(image, (bytes, bytearray, memoryview)):
                self._jpeg, self._jpeg_id, self._image = bytes(image), self._frame_id, None
            else:
                self._image = image
            self._cond.notify_all()

    def set_status(self, status: dict[str, Any]) -> None:
        """The consumer's view: ``state``, ``fps``, ``latency_ms``, ``mask_age_ms``,
        ``frames_shown``, ``model``, ``backend``... and ``t_last_frame`` (``time.monotonic()``
        of the newest real frame, None before the first), from which the age is computed
        when asked."""
        with self._cond:
            self._status = dict(status)
            if status.get("no_signal_after_ms"):
                self.no_signal_after_s = float(status["no_signal_after_ms"]) / 1000.0

    def status(self) -> dict[str, Any]:
        """What ``/status.json`` returns, computed now."""
        now = time.monotonic()
        with self._cond:
            s = dict(self._status)
            frames, t_frame = self._frame_id, self._t_frame
        if "state" not in s:  # no consumer feeding status: judge by the frames alone
            s.update(state=WAITING if frames == 0 else LIVE, frames_shown=frames, t_last_frame=t_frame)
        t_last = s.pop("t_last_frame", None)
        s["last_frame_age_ms"] = None if t_last is None else round((now - t_last) * 1000.0, 1)
        # The consumer's own judgement may be out of date when its loop hangs; the age is not.
        if s["state"] == LIVE and t_last is not None and now - t_last > self.no_signal_after_s:
            s["state"] = NO_SIGNAL
        s.setdefault("fps", None)
        s.setdefault("mask_age_ms", None)
        s.setdefault("frames_shown", frames)
        return s

    def start(self) -> "MjpegViewer":
        """Bind and serve in a daemon thread. Raises OSError when the port is taken."""
        server = ThreadingHTTPServer((self.host, self.port), _make_handler(self))
        server.daemon_threads = True  # a hung browser connection never blocks exit
        if self.certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(self.certfile, self.keyfile)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        elif not is_loopback(self.host):
            log.warning("viewer on %s without TLS: frames cross the network unencrypted", self.host)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="mjpeg-viewer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end every open stream; safe to call twice."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "MjpegViewer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler -------------------------------------------------------------

    def _authorised(self, query: str) -> bool:
        if not self.token:
            return True
        given = (parse_qs(query).get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _waiting_jpeg(self) -> bytes:
        """The "WAITING FOR VIDEO" card, streamed until the first frame (no broken image)."""
        if self._placeholder is None:
            self._placeholder = cv2.imencode(".jpg", draw_card(WAITING))[1].tobytes()
        return self._placeholder

    def _wait_jpeg(self, after_id: int, timeout_s: float) -> tuple[int, bytes | None]:
        """Block until a frame newer than ``after_id`` exists (or timeout); return it as JPEG."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._frame_id > after_id, timeout_s)
            if self._stopping or self._frame_id == 0 or self._frame_id == after_id:
                return after_id, None
            if self._jpeg_id != self._frame_id:  # encode once per frame, shared by all clients
                ok, buf = cv2.imencode(".jpg", self._image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                self._jpeg = buf.tobytes() if ok else None
                self._jpeg_id, self._image = self._frame_id, None
            return self._frame_id, self._jpeg


def _make_handler(viewer: MjpegViewer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "endostream-viewer"

        def log_message(self, fmt: str, *args: object) -> None:  # no per-request noise, no tokens
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            parts = urlsplit(self.path)
            if not viewer._authorised(parts.query):
                self._plain(403, "forbidden: token required (?token=...)\n")
                return
            if parts.path in ("/", "/index.html"):
                query = f"?token={viewer.token}" if viewer.token else ""
                self._send(200, "text/html; charset=utf-8", _INDEX.format(query=query).encode())
            elif parts.path == "/status.json":
                viewer.status_requests += 1
                self._send(200, "application/json", json.dumps(viewer.status()).encode())
            elif parts.path == "/frame.jpg":
                _, jpeg = viewer._wait_jpeg(0, timeout_s=5.0)
                if jpeg is None:
                    self._plain(503, "no frame yet\n")
                else:
                    self._send(200, "image/jpeg", jpeg)
            elif parts.path == "/stream.mjpg":
                self._stream()
            else:
                self._plain(404, "not found\n")

        def _plain(self, code: int, text: str) -> None:
            self._send(code, "text/plain; charset=utf-8", text.encode())

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _part(self, jpeg: bytes) -> None:
            head = (f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
            self.wfile.write(head + jpeg + b"\r\n")
            self.wfile.flush()

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            last_id, next_t = 0, 0.0
            try:
                if viewer._frame_id == 0:
                    self._part(viewer._waiting_jpeg())
                while True:
                    last_id, jpeg = viewer._wait_jpeg(last_id, timeout_s=1.0)
                    if viewer._stopping:
                        return
                    if jpeg is None:
                        continue
                    self._part(jpeg)
                    # Rate cap per client: sleeping here only delays this client, which then
                    # takes the newest frame; nothing queues.
                    next_t = max(next_t + viewer.min_interval_s, time.monotonic())
                    time.sleep(max(0.0, next_t - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
                return  # the browser went away

    return Handler
