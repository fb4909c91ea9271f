"""Browser viewer: the newest overlay as MJPEG over HTTP(S), for headless machines.

``GET /`` the page (:mod:`endostream.consumer.viewer_page`): the video scaled to fit the window
and a status bar polled twice a second; ``GET /stream.mjpg`` the stream
(``multipart/x-mixed-replace``); ``GET /frame.jpg`` the newest frame once; ``GET /status.json``
the state for room monitoring: ``{"state": "waiting|live|no_signal|ended", "fps",
"last_frame_age_ms", "mask_age_ms", "frames_shown", ...}``.

A stalled feed never looks live: the consumer sends full-frame NO SIGNAL cards while no frames
arrive (:mod:`endostream.consumer.signal`); ``last_frame_age_ms`` is computed when asked, so a
consumer whose display loop hangs still reads ``no_signal``; and the page greys the image out and
says DISCONNECTED when ``/status.json`` stops answering. Before the first frame the stream
carries a "WAITING FOR VIDEO" card, never a broken image.

A browser tab (or a hostile page) cannot take it down: it is one asyncio event loop (aiohttp) in
its own thread, so connections cost a socket each and no thread; at most ``max_connections`` are
open (when full, the oldest connection that is between requests is closed to make room, and
when none is, a new one gets 503 at once); a connection that sends no complete
request within ``idle_timeout_s`` is closed; a stream whose client stops reading for
``write_timeout_s`` is closed. Per client the work is one socket write per frame: a frame is
JPEG-encoded once, in one worker thread, whoever watches. The consumer's :meth:`update` only
swaps a reference, so the transport's receive loop never waits for the viewer.

Security: binds 127.0.0.1 by default. Requests must name an allowed ``Host`` (loopback names,
the bind address, and ``allowed_hosts``; on a wildcard bind also this machine's names and
addresses), so a web page cannot reach the viewer through DNS rebinding. Bound to any non-loopback
address it requires a token (``?token=...``, compared in constant time; one is generated when
none is given) and serves HTTPS when given ``certfile``/``keyfile``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import psutil
from aiohttp import web

from endostream.consumer.signal import LIVE, NO_SIGNAL, WAITING, draw_card
from endostream.consumer.viewer_page import INDEX
from endostream.protocol.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

# A browser tab holds one stream and one or two polling connections: 64 serves a room of
# viewers while bounding the descriptors a flood can take (the consumer's limit is often 1024).
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_IDLE_TIMEOUT_S = 10.0   # no complete request this long: the connection is closed
DEFAULT_WRITE_TIMEOUT_S = 10.0  # a client that reads nothing this long loses its stream
_FIRST_FRAME_WAIT_S = 5.0       # /frame.jpg before the first frame: wait this long, then 503
_STOP_TIMEOUT_S = 5.0

_BOUNDARY = "endostreamframe"
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 29\r\nRetry-After: 5\r\nConnection: close\r\n\r\n"
            b"viewer: too many connections\n")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def allowed_host_names(bind_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` names the viewer answers: loopback names, the bind address, ``extra``, and
    on a wildcard bind (0.0.0.0, ::) this machine's host names and interface addresses."""
    names = {*_LOOPBACK_NAMES, bind_host, *extra}
    if _is_wildcard(bind_host):
        names.update({socket.gethostname(), socket.getfqdn()})
        for addrs in psutil.net_if_addrs().values():
            names.update(a.address.split("%")[0] for a in addrs
                         if a.family in (socket.AF_INET, socket.AF_INET6))
    return frozenset(n.lower().strip("[]") for n in names if n)


def _host_name(header: str | None) -> str | None:
    """``Host`` header -> lower-case name without port or brackets; None when malformed."""
    if not header:
        return None
    try:
        return urlsplit("//" + header).hostname
    except ValueError:
        return None


class _PeerErrors(logging.Filter):
    """aiohttp logs a malformed request (bad header, missing Host...) with a traceback at
    ERROR: anyone who can connect could fill the log. One line without the traceback, at most
    one per interval overall, counting the rest."""

    def __init__(self) -> None:
        super().__init__()
        self._ratelog = RateLimitedLog(log)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        reason = f"{type(exc).__name__}: {exc}" if exc else record.getMessage()
        self._ratelog("viewer-bad-request", f"viewer: bad request refused ({reason})")
        return False


_HTTP_LOG = logging.getLogger(__name__ + ".http")
_HTTP_LOG.addFilter(_PeerErrors())


class _Refuse(asyncio.Protocol):
    """Answers 503 and hangs up: no slot could be freed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSED)
        transport.close()


class MjpegViewer:
    """MJPEG-over-HTTP viewer served by an asyncio loop in a background thread.

    Args:
        host: bind address; anything but loopback requires a token.
        port: TCP port; 0 picks a free one (see :attr:`url`).
        token: access token for non-loopback use; generated when ``None`` and needed.
        certfile, keyfile: PEM files; when given the viewer serves HTTPS.
        jpeg_quality: 0..100 for frames given as arrays.
        max_fps: cap on frames sent per client per second (saves CPU for browsers).
        no_signal_after_ms: ``/status.json`` says ``no_signal`` when the newest frame is older
            than this, whatever the consumer last reported (its loop may hang).
        max_connections: open connections at most (see the module notes).
        idle_timeout_s: a connection without a complete request this long is closed.
        write_timeout_s: a stream whose client reads nothing this long is closed.
        allowed_hosts: more ``Host`` names to answer (a DNS name the room uses).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8090, *, token: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, jpeg_quality: int = 80,
                 max_fps: float = 30.0, no_signal_after_ms: float = 1000.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
                 allowed_hosts: Iterable[str] = ()) -> None:
        self.host, self.port = host, int(port)
        if not is_loopback(host) and not token:
            token = secrets.token_urlsafe(16)
        self.token = token
        self.certfile, self.keyfile = certfile, keyfile
        self.jpeg_quality, self.min_interval_s = int(jpeg_quality), 1.0 / max(float(max_fps), 1e-3)
        self.no_signal_after_s = float(no_signal_after_ms) / 1000.0
        if int(max_connections) < 1:
            raise ValueError(f"viewer max_connections must be >= 1, got {max_connections}")
        self.max_connections = int(max_connections)
        self.idle_timeout_s, self.write_timeout_s = float(idle_timeout_s), float(write_timeout_s)
        self.allowed_hosts = allowed_host_names(host, allowed_hosts)
        self._lock = threading.Lock()  # frame slot and status: held for a few assignments only
        self._frame_id = 0
        self._image: np.ndarray | None = None
        self._jpeg: bytes | None = None
        self._jpeg_id = -1
        self._t_frame: float | None = None  # monotonic time of the newest update()
        self._status: dict[str, Any] = {}
        self._placeholder: bytes | None = None
        self.status_requests = 0  # /status.json answered (a page is polling)
        self.refused = 0          # connections answered 503 (every slot streaming)
        self.evicted = 0          # idle connections closed to make room
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._frame_event: asyncio.Event | None = None
        self._encode_lock: asyncio.Lock | None = None
        self._encoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="viewer-jpeg")
        self._busy: set[object] = set()  # request handlers in the middle of a request
        self._unregistered = 0  # handlers made whose connection is not registered yet
        self._limit_log = RateLimitedLog(log)

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
        """Replace the newest frame: JPEG bytes, or an HxWx3 uint8 BGR array (encoded lazily).
        Never blocks on clients."""
        with self._lock:
            self._frame_id += 1
            self._t_frame = time.monotonic()
            if isinstance(image, (bytes, bytearray, memoryview)):
                self._jpeg, self._jpeg_id, self._image = bytes(image), self._frame_id, None
            else:
                self._image = image
        self._wake()

    def set_status(self, status: dict[str, Any]) -> None:
        """The consumer's view: ``state``, ``fps``, ``latency_ms``, ``mask_age_ms``,
        ``frames_shown``, ``model``, ``backend``... and ``t_last_frame`` (``time.monotonic()``
        of the newest real frame, None before the first), from which the age is computed
        when asked."""
        with self._lock:
            self._status = dict(status)
            if status.get("no_signal_after_ms"):
                self.no_signal_after_s = float(status["no_signal_after_ms"]) / 1000.0

    def status(self) -> dict[str, Any]:
        """What ``/status.json`` returns, computed now."""
        now = time.monotonic()
        with self._lock:
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

    @property
    def connections(self) -> int:
        """Connections open now."""
        server = self._runner.server if self._runner is not None else None
        return 0 if server is None else sum(1 for c in server.connections if c.transport is not None)

    def start(self) -> "MjpegViewer":
        """Bind and serve in a daemon thread. Raises OSError when the port is taken."""
        ssl_ctx = None
        if self.certfile:
            ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ssl_ctx.load_cert_chain(self.certfile, self.keyfile)
        elif not is_loopback(self.host):
            log.warning("viewer on %s without TLS: frames cross the network unencrypted", self.host)
        self._loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ssl_ctx, ready), name="mjpeg-viewer",
                                        daemon=True)
        self._thread.start()
        ready.result()
        return self

    def stop(self) -> None:
        """Stop serving and end every open stream; safe to call twice."""
        self._stopping = True
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_STOP_TIMEOUT_S + 2.0)
        self._thread = None
        self._encoder.shutdown(wait=False)

    def __enter__(self) -> "MjpegViewer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the event loop's thread ---------------------------------------------------------

    def _run(self, ssl_ctx: ssl.SSLContext | None, ready: concurrent.futures.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._loop_error)
        try:
            loop.run_until_complete(self._serve(ssl_ctx))
        except BaseException as exc:  # noqa: BLE001 - the port is taken, a bad certificate...
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """An error the loop caught (an accept out of file descriptors under a connection flood,
        a client gone mid-write): one rate-limited line, never asyncio's default traceback."""
        exc = context.get("exception")
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        self._limit_log("viewer-loop-error", f"viewer: {context.get('message', 'event loop error')}{detail}")

    async def _serve(self, ssl_ctx: ssl.SSLContext | None) -> None:
        self._frame_event, self._encode_lock = asyncio.Event(), asyncio.Lock()
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/index.html", self._index)
        app.router.add_get("/status.json", self._status_json)
        app.router.add_get("/frame.jpg", self._frame_jpg)
        app.router.add_get("/stream.mjpg", self._stream)
        # access_log None: no per-request noise, and no tokens in the log
        self._runner = web.AppRunner(app, access_log=None, logger=_HTTP_LOG, keepalive_timeout=self.idle_timeout_s,
                                     shutdown_timeout=_STOP_TIMEOUT_S, handle_signals=False)
        await self._runner.setup()
        self._server = await asyncio.get_running_loop().create_server(
            self._accept, self.host, self.port, ssl=ssl_ctx, reuse_address=True,
            ssl_handshake_timeout=self.idle_timeout_s if ssl_ctx else None)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._frame_event is not None:
            self._frame_event.set()  # every stream sees _stopping and ends
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _accept(self) -> asyncio.BaseProtocol:
        """Protocol factory: a request handler, after making room under ``max_connections``."""
        assert self._runner is not None and self._runner.server is not None
        server = self._runner.server
        open_ = [c for c in server.connections if c.transport is not None]  # oldest first
        # asyncio accepts a burst of connections before any of them is registered: count the
        # handlers made since, or a flood would overshoot the limit by a whole burst.
        excess = len(open_) + self._unregistered + 1 - self.max_connections
        if excess > 0:
            idle = [c for c in open_ if c not in self._busy][:excess]
            for conn in idle:
                conn.force_close()
            self.evicted += len(idle)
            if len(idle) < excess:
                self.refused += 1
                self._limit_log("viewer-full", f"viewer: {self.max_connections} connections open or "
                                "opening, none between requests; refusing new ones (503)")
                return _Refuse()
            self._limit_log("viewer-limit", f"viewer: {self.max_connections} connections open; "
                            "closing idle ones to make room")
        self._unregistered += 1
        # runs just before the transport registers the handler (both are scheduled now, in order)
        asyncio.get_running_loop().call_soon(self._registered)
        return server()

    def _registered(self) -> None:
        self._unregistered -= 1

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_frame)
            except RuntimeError:  # the loop closed in between: nobody is waiting
                pass

    def _on_frame(self) -> None:
        event, self._frame_event = self._frame_event, asyncio.Event()
        if event is not None:
            event.set()

    # -- requests ------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if _host_name(request.headers.get("Host")) not in self.allowed_hosts:
            return _plain(403, "forbidden: Host not allowed (add it to the viewer's allowed_hosts)\n")
        if not self._authorised(request.query.get("token", "")):
            return _plain(403, "forbidden: token required (?token=...)\n")
        self._busy.add(request.protocol)
        try:
            return await handler(request)
        finally:
            self._busy.discard(request.protocol)

    def _authorised(self, given: str) -> bool:
        return not self.token or hmac.compare_digest(given.encode(), self.token.encode())

    async def _index(self, request: web.Request) -> web.StreamResponse:
        query = f"?token={self.token}" if self.token else ""
        return _response(200, "text/html; charset=utf-8", INDEX.format(query=query).encode())

    async def _status_json(self, request: web.Request) -> web.StreamResponse:
        self.status_requests += 1
        return _response(200, "application/json", json.dumps(self.status()).encode())

    async def _frame_jpg(self, request: web.Request) -> web.StreamResponse:
        _, jpeg = await self._next_jpeg(0, _FIRST_FRAME_WAIT_S)
        if jpeg is None:
            return _plain(503, "no frame yet\n")
        return _response(200, "image/jpeg", jpeg)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={_BOUNDARY}",
            "Cache-Control": "no-store"})
        loop = asyncio.get_running_loop()
        try:
            await resp.prepare(request)
            last_id, next_t = 0, 0.0
            if self._frame_id == 0:
                await self._write(resp, self._waiting_jpeg())
            while not self._stopping:
                last_id, jpeg = await self._next_jpeg(last_id, 1.0)
                if jpeg is None or self._stopping:
                    continue
                await self._write(resp, jpeg)
                # Rate cap per client: sleeping delays only this client, which then takes the
                # newest frame; nothing queues.
                next_t = max(next_t + self.min_interval_s, loop.time())
                await asyncio.sleep(max(0.0, next_t - loop.time()))
        except (ConnectionError, asyncio.TimeoutError, ssl.SSLError):
            # The browser went away, or stopped reading: drop the connection, no traceback.
            if request.transport is not None:
                request.transport.abort()
        return resp

    async def _write(self, resp: web.StreamResponse, jpeg: bytes) -> None:
        head = (f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
        await asyncio.wait_for(resp.write(head + jpeg + b"\r\n"), self.write_timeout_s)

    def _waiting_jpeg(self) -> bytes:
        """The "WAITING FOR VIDEO" card, streamed until the first frame (no broken image)."""
        if self._placeholder is None:
            self._placeholder = cv2.imencode(".jpg", draw_card(WAITING))[1].tobytes()
        return self._placeholder

    async def _next_jpeg(self, after_id: int, timeout_s: float) -> tuple[int, bytes | None]:
        """Wait until a frame newer than ``after_id`` exists (or timeout); return it as JPEG."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._stopping and self._frame_id <= after_id:
            event = self._frame_event
            assert event is not None
            try:
                await asyncio.wait_for(event.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return after_id, None
        if self._stopping or self._frame_id == 0:
            return after_id, None
        assert self._encode_lock is not None
        async with self._encode_lock:  # encode once per frame, shared by every client
            with self._lock:
                frame_id, image, jpeg, jpeg_id = self._frame_id, self._image, self._jpeg, self._jpeg_id
            if jpeg_id != frame_id and image is not None:
                jpeg = await loop.run_in_executor(self._encoder, _encode, image, self.jpeg_quality)
                with self._lock:
                    if self._frame_id == frame_id:  # no newer frame arrived meanwhile
                        self._jpeg, self._jpeg_id, self._image = jpeg, frame_id, None
        return frame_id, jpeg


def _encode(image: np.ndarray, quality: int) -> bytes | None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes() if ok else None


def _response(code: int, ctype: str, body: bytes) -> web.Response:
    return web.Response(status=code, body=body, headers={"Content-Type": ctype, "Cache-Control": "no-store"})


def _plain(code: int, text: str) -> web.Response:
    return _response(code, "text/plain; charset=utf-8", text.encode())
