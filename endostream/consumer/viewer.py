"""Browser viewer: the newest overlay as MJPEG over HTTP(S), for headless machines.

``GET /`` an index page showing the stream; ``GET /stream.mjpg`` the stream
(``multipart/x-mixed-replace``); ``GET /frame.jpg`` the newest frame once.

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
import logging
import secrets
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np

log = logging.getLogger(__name__)

_BOUNDARY = "endostreamframe"
_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>endostream viewer</title>
<style>body{{margin:0;background:#111;color:#ccc;font:14px sans-serif;text-align:center}}
img{{max-width:100vw;max-height:94vh}}</style></head>
<body><div>endostream - research use only</div>
<img id="stream" src="/stream.mjpg{query}" alt="live overlay"></body></html>
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
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8090, *, token: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, jpeg_quality: int = 80,
                 max_fps: float = 30.0) -> None:
        self.host, self.port = host, int(port)
        if not is_loopback(host) and not token:
            token = secrets.token_urlsafe(16)
        self.token = token
        self.certfile, self.keyfile = certfile, keyfile
        self.jpeg_quality, self.min_interval_s = int(jpeg_quality), 1.0 / max(float(max_fps), 1e-3)
        self._cond = threading.Condition()
        self._frame_id = 0
        self._image: np.ndarray | None = None
        self._jpeg: bytes | None = None
        self._jpeg_id = -1
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
            if isinstance(image, (bytes, bytearray, memoryview)):
                self._jpeg, self._jpeg_id, self._image = bytes(image), self._frame_id, None
            else:
                self._image = image
            self._cond.notify_all()

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

    def _wait_jpeg(self, after_id: int, timeout_s: float) -> tuple[int, bytes | None]:
        """Block until a frame newer than ``after_id`` exists (or timeout); return it as JPEG."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._frame_id > after_id, timeout_s)
            if self._stopping or self._frame_id == 0:
                return after_id, None
            if self._jpeg_id != self._frame_id:  # encode once per frame, shared by all clients
                ok, buf = cv2.imencode(".jpg", self._image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                self._jpeg = buf.tobytes() if ok else None
                self._jpeg_id, self._image = self._frame_id, None
            return self._frame_id, self._jpeg


def _make_handler(viewer: MjpegViewer) -> type[BaseHTTPRequestHandler]:
    import time

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

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            last_id, next_t = 0, 0.0
            try:
                while True:
                    last_id, jpeg = viewer._wait_jpeg(last_id, timeout_s=1.0)
                    if viewer._stopping:
                        return
                    if jpeg is None:
                        continue
                    head = (f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
                    self.wfile.write(head + jpeg + b"\r\n")
                    self.wfile.flush()
                    # Rate cap per client: sleeping here only delays this client, which then
                    # takes the newest frame; nothing queues.
                    next_t = max(next_t + viewer.min_interval_s, time.monotonic())
                    time.sleep(max(0.0, next_t - time.monotonic()))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
                return  # the browser went away

    return Handler
