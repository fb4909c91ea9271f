"""Sinks: where overlays and masks go. Every sink has ``write(frame, overlay_bgr, prediction)``
and ``close()``; a sink that fails raises :class:`SinkError` and :class:`GuardedSink` keeps
the live overlay running without it.

- :class:`VideoSink`   H.264 MP4 (PyAV, libx264 ultrafast/zerolatency), fragmented so a crash
                       or SIGKILL still leaves a playable file up to the last fragment;
- :class:`MaskSink`    one PNG per frame, ``s{stream}_e{epoch:016x}_{seq:08d}.png``, written atomically;
- :class:`~endostream.consumer.republish_sink.ZmqRepublishSink` the overlay as JPEG over ZeroMQ PUB, in wire protocol v1;
- :class:`WindowSink`  ``cv2.imshow`` when OpenCV has a GUI (``opencv-python-headless`` has none);
- :class:`ViewerSink`  the browser viewer (:mod:`endostream.consumer.viewer`).

Sink configs (``configs/sink/*.yaml``) each hold one named ``_target_`` entry; build the chosen
ones with :func:`make_sinks`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from endostream.types import Frame, Prediction

log = logging.getLogger(__name__)


class SinkError(RuntimeError):
    """A sink cannot write (disk full, unwritable folder, closed socket...); one-line message."""


@runtime_checkable
class Sink(Protocol):
    """Anything that takes shown frames. ``overlay_bgr``: HxWx3 uint8 BGR."""

    def write(self, frame: Frame, overlay_bgr: np.ndarray, prediction: Prediction | None) -> None: ...

    def close(self) -> None: ...


def _os_reason(exc: BaseException) -> str:
    """The OS / FFmpeg reason in one line ("No space left on device")."""
    reason = getattr(exc, "strerror", None) or str(exc)
    lines = str(reason).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# --------------------------------------------------------------------------- video


class VideoSink:
    """Overlay video as H.264 in fragmented MP4, durable frame by frame.

    Fragmented MP4 (``empty_moov+default_base_moof``) writes the index up front and then
    self-contained fragments, so a killed process leaves a file that plays up to its last
    complete fragment. With ``fragment="frame"`` (default) every frame is its own fragment
    (+0.7 % size measured on a 640x512 clip): the muxer writes a frame's fragment when the
    next frame arrives, and ``durable_count`` says how many frames are in fragments already
    handed to the OS (all of them after ``close``). The lossless consumer acknowledges a frame
    only when it is durable, so a SIGKILL never loses an acknowledged frame.
    ``fragment="keyframe"``: one fragment per keyframe interval (what a crash may lose).

    With ``index=True`` a sidecar ``<path>.idx`` lists ``stream_id seq t_capture_ns`` per frame,
    written before the frame is muxed; ``resume=True`` reads the sidecars of earlier files of
    the same name family (``overlay.mp4``, ``overlay.1.mp4``...), counts the frames their MP4s
    really hold, and skips writing those frames again (a frame the killed consumer had made
    durable but not yet acknowledged), so the files together hold every frame exactly once.

    Odd frame sizes are padded to even (yuv420p needs it); frames of another size than the
    first are resized to it.

    Args:
        path: output ``.mp4``; its folder is created.
        fps: nominal frame rate written in the file (frames are timed by count, not clock).
        crf: x264 quality, 0 (lossless) .. 51; 23 is x264's default.
        keyframe_interval: frames between keyframes.
        threads: x264 threads; 0 lets x264 choose.
        fragment: ``frame`` or ``keyframe``.
        index: write the ``.idx`` sidecar.
        resume: skip frames the earlier files of this name family already hold.
    """

    def __init__(self, path: str, *, fps: float = 25.0, crf: int = 23, keyframe_interval: int = 25,
                 preset: str = "ultrafast", threads: int = 0, fragment: str = "frame",
                 index: bool = True, resume: bool = False) -> None:
        if fragment not in ("frame", "keyframe"):
            raise SinkError(f"video sink: fragment={fragment!r}; expected frame or keyframe")
        self.path, self.fps, self.crf = str(path), float(fps), int(crf)
        self.keyframe_interval, self.preset, self.threads = int(keyframe_interval), preset, int(threads)
        self.fragment, self.index = fragment, bool(index)
        self.frames_written = 0  # write() calls that were written or skipped as already recorded
        self.frames_skipped = 0
        self._encoded = 0  # frames handed to the encoder (= pts)
        self._muxed = 0  # packets muxed: one per frame, in order (x264 zerolatency: no B-frames)
        self._keyframe_floor = 0  # index of the last keyframe packet muxed
        self._waiting: deque[int] = deque()  # pts of write() calls not yet durable (-1: skipped)
        self._durable = 0
        self._container = None
        self._stream = None
        self._idx = None
        self._closed = False
        self._synced = 0  # every frame before this one is in a finished file
        self._size: tuple[int, int] | None = None  # (width, height) as written, even
        self._recorded = recorded_frames(self.path) if resume else set()

    @property
    def frames_accepted(self) -> int:
        """``write`` calls that returned normally (the count :attr:`durable_count` reaches)."""
        return self.frames_written

    @property
    def durable_count(self) -> int:
        """How many ``write`` calls so far are durable: in a fragment handed to the OS (a
        process kill cannot lose them) or skipped as already recorded."""
        if self._container is None:
            floor = self._encoded  # closed or synced: everything is flushed
        elif self.fragment == "frame":
            floor = max(self._muxed - 1, self._synced)  # every earlier frame's fragment is written
        else:
            floor = max(self._keyframe_floor, self._synced)
        while self._waiting and self._waiting[0] < floor:  # -1 (skipped) is always below
            self._waiting.popleft()
            self._durable += 1
        return self._durable

    def _open(self, width: int, height: int) -> None:
        import av

        flags = "empty_moov+default_base_moof+" + (
            "frag_every_frame" if self.fragment == "frame" else "frag_keyframe")
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(self.path, "w", format="mp4", options={
                "movflags": flags,
                "flush_packets": "1",  # push each fragment to the OS at once, not at buffer-full
            })
            stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = width + width % 2, height + height % 2
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = self.threads
            stream.codec_context.options = {
                "preset": self.preset, "tune": "zerolatency", "crf": str(self.crf),
                "g": str(self.keyframe_interval), "keyint_min": str(self.keyframe_interval),
                "sc_threshold": "0",  # keyframes on schedule only, so fragments have a fixed length
            }
            if self.index:
                self._idx = open(self.path + ".idx", "w", buffering=1)  # line-buffered
        except (OSError, av.FFmpegError) as exc:
            self._container = None
            raise SinkError(f"video sink: cannot create {self.path}: {_os_reason(exc)}") from None
        self._stream = stream
        self._size = (stream.width, stream.height)

    def write(self, frame: Frame, overlay_bgr: np.ndarray, prediction: Prediction | None) -> None:
        """Encode one overlay (HxWx3 uint8 BGR) as the next video frame."""
        import av

        if (frame.stream_id, frame.seq, frame.t_capture_ns) in self._recorded:
            self._waiting.append(-1)  # an earlier file holds it durably
            self.frames_written += 1
            self.frames_skipped += 1
            return
        h, w = overlay_bgr.shape[:2]
        if self._closed:
            raise SinkError(f"video sink: {self.path} is closed")
        if self._container is None:
            self._open(w, h)
        tw, th = self._size
        img = overlay_bgr
        if (w + w % 2, h + h % 2) != (tw, th):
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        elif (w, h) != (tw, th):
            img = cv2.copyMakeBorder(img, 0, th - h, 0, tw - w, cv2.BORDER_REPLICATE)
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
        vf.pts = self._encoded - self._synced  # each file's timeline starts at 0
        try:
            if self._idx is not None:  # before muxing: the index may list more, never fewer
                self._idx.write(f"{frame.stream_id} {frame.seq} {frame.t_capture_ns}\n")
            for packet in self._stream.encode(vf):
                if packet.is_keyframe:
                    self._keyframe_floor = self._muxed
                self._container.mux(packet)
                self._muxed += 1
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"video sink: cannot write {self.path}: {_os_reason(exc)}") from None
        self._waiting.append(self._encoded)
        self._encoded += 1
        self.frames_written += 1

    def sync(self) -> None:
        """Make every frame written so far durable now: the muxer writes a frame's fragment
        only when the next frame comes, so a stream that ended while the others are idle would
        wait for ever. Finishes this file; the next frame starts the next file of the name
        family (``overlay.1.mp4``...), which ``recorded_frames`` and players read in order."""
        if self._container is None or self.durable_count >= self.frames_accepted:
            return
        self._finish()
        self._synced = self._encoded
        self._stream, self._size = None, None
        self.path = str(next_free_path(Path(self.path)))

    def close(self) -> None:
        """Flush the encoder and finish the file; safe to call twice."""
        self._closed = True
        self._finish()

    def _finish(self) -> None:
        import av

        if self._idx is not None:
            self._idx.close()
            self._idx = None
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            for packet in self._stream.encode():
                container.mux(packet)
            container.close()
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"video sink: cannot finish {self.path}: {_os_reason(exc)}") from None


def next_free_path(path: Path) -> Path:
    """``overlay.mp4`` -> ``overlay.1.mp4``... the first name of the family not taken (a
    resumed run or a new file after :meth:`VideoSink.sync` never overwrites a frame)."""
    i = 1
    while path.exists():
        path = path.with_name(f"{path.stem.split('.')[0]}.{i}{path.suffix}")
        i += 1
    return path


def recorded_frames(path: str) -> set[tuple[int, int, int]]:
    """(stream_id, seq, t_capture_ns) of every frame the earlier files of ``path``'s name
    family (``overlay.mp4``, ``overlay.1.mp4``...; not ``path`` itself) really hold: the first
    N lines of each ``.idx``, N = the video packets its MP4 holds in complete fragments."""
    import av

    p = Path(path)
    stem = p.name.split(".")[0]
    out: set[tuple[int, int, int]] = set()
    for mp4 in sorted(p.parent.glob(f"{stem}*{p.suffix}")):
        idx = Path(str(mp4) + ".idx")
        if mp4 == p or not idx.is_file() or mp4.name.split(".")[0] != stem:
            continue
        size = mp4.stat().st_size
        try:  # a packet counts only when all its bytes are in the file (no torn fragment)
            with av.open(str(mp4)) as c:
                n = sum(1 for pk in c.demux(video=0)
                        if pk.size and pk.pos is not None and pk.pos + pk.size <= size)
        except (OSError, av.FFmpegError):
            n = 0  # an empty or unreadable file holds nothing
        for line in idx.read_text().splitlines()[:n]:
            sid, seq, t = (int(x) for x in line.split())
            out.add((sid, seq, t))
    return out


# --------------------------------------------------------------------------- masks


class MaskSink:
    """One PNG per frame in ``folder``, HxW uint8 {0, 255}: ``s{stream_id}_e{epoch:016x}_{seq:08d}.png``
    for a frame from the transport (its producer's epoch in the name, so a second producer
    with the same stream id, or a restarted one, never overwrites a mask already written),
    ``s{stream_id}_{seq:08d}.png`` for a frame without an epoch (batch, predict).

    Written to a temporary file in the same folder and renamed with ``os.replace``, so a reader
    never sees half a PNG: a frame's mask is durable when ``write`` returns (``durable_count``).
    Frames without a prediction are skipped (nothing is known for them).
    """

    def __init__(self, folder: str, *, compression: int = 1) -> None:
        self.folder = Path(folder)
        self.compression = int(compression)  # PNG level 1: masks compress well even at 1, fast
        self.frames_written = 0  # PNGs written
        self.durable_count = 0  # write() calls done: a PNG renamed into place, or nothing to write
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"mask sink: cannot create {self.folder}: {_os_reason(exc)}") from None

    @property
    def frames_accepted(self) -> int:
        return self.durable_count

    def path_for(self, stream_id: int, seq: int, epoch: int | None = None) -> Path:
        if epoch is None:
            return self.folder / f"s{stream_id}_{seq:08d}.png"
        return self.folder / f"s{stream_id}_e{epoch:016x}_{seq:08d}.png"

    def write(self, frame: Frame, overlay_bgr: np.ndarray, prediction: Prediction | None) -> None:
        if prediction is None:
            self.durable_count += 1
            return
        ok, buf = cv2.imencode(".png", prediction.mask.astype(np.uint8) * 255,
                               [cv2.IMWRITE_PNG_COMPRESSION, self.compression])
        if not ok:
            raise SinkError("mask sink: PNG encoding failed")
        target = self.path_for(frame.stream_id, frame.seq, frame.epoch)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=self.folder)
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.tobytes())
            os.replace(tmp, target)
        except OSError as exc:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise SinkError(f"mask sink: cannot write {target}: {_os_reason(exc)}") from None
        self.frames_written += 1
        self.durable_count += 1

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- local window


def gui_available() -> tuple[bool, str]:
    """Whether ``cv2.imshow`` can work here, and why not when it cannot."""
    info = cv2.getBuildInformation()
    gui_line = next((ln for ln in info.splitlines() if ln.strip().startswith("GUI:")), "")
    if not gui_line or gui_line.split(":", 1)[1].strip().upper() in ("", "NONE"):
        return False, "this OpenCV build has no GUI support (opencv-python-headless); use the browser viewer"
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display (DISPLAY unset); use the browser viewer"
    return True, ""


class WindowSink:
    """A local OpenCV window. Raises :class:`SinkError` at construction when there is no GUI."""

    def __init__(self, title: str = "endostream (research use only)") -> None:
        ok, why = gui_available()
        if not ok:
            raise SinkError(f"window sink: {why}")
        self.title = title
        self.frames_written = 0

    def write(self, frame: Frame, overlay_bgr: np.ndarray, prediction: Prediction | None) -> None:
        cv2.imshow(self.title, overlay_bgr)
        cv2.waitKey(1)  # lets the GUI thread paint; 1 ms is the smallest wait
        self.frames_written += 1

    def close(self) -> None:
        cv2.destroyWindow(self.title)


# --------------------------------------------------------------------------- browser viewer


class ViewerSink:
    """Feeds the MJPEG browser viewer; starts it on construction and logs its URL.

    Also takes the consumer's status (:meth:`set_status`: signal state, fps, lag, mask age,
    model) for the page's status bar and ``/status.json``, and the signal cards (NO SIGNAL,
    WAITING FOR VIDEO) while no frames arrive (``shows_cards``).
    """

    shows_cards = True  # the consumer sends it full-frame signal cards between frames

    def __init__(self, host: str = "127.0.0.1", port: int = 8090, *, token: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, jpeg_quality: int = 80,
                 max_fps: float = 30.0, max_connections: int | None = None,
                 idle_timeout_s: float | None = None, write_timeout_s: float | None = None,
                 allowed_hosts: Iterable[str] | None = None) -> None:
        from endostream.consumer.viewer import MjpegViewer

        # null in the config: the viewer's own default (defined once, in consumer/viewer.py)
        limits = {k: v for k, v in (("max_connections", max_connections), ("idle_timeout_s", idle_timeout_s),
                                    ("write_timeout_s", write_timeout_s)) if v is not None}
        try:
            self.viewer = MjpegViewer(host, port, token=token, certfile=certfile, keyfile=keyfile,
                                      jpeg_quality=jpeg_quality, max_fps=max_fps,
                                      allowed_hosts=list(allowed_hosts or ()), **limits)
            self.viewer.start()
        except OSError as exc:
            raise SinkError(f"viewer sink: cannot serve on {host}:{port}: {_os_reason(exc)}") from None
        log.info("browser viewer at %s", self.viewer.url_redacted)
        self.frames_written = 0

    def write(self, frame: Frame, overlay_bgr: np.ndarray, prediction: Prediction | None) -> None:
        self.viewer.update(overlay_bgr)
        self.frames_written += 1

    def set_status(self, status: dict[str, Any]) -> None:
        """The consumer's state for the page and ``/status.json`` (see MjpegViewer.set_status)."""
        self.viewer.set_status(status)

    def close(self) -> None:
        self.viewer.stop()


# --------------------------------------------------------------------------- guard and builder


class GuardedSink:
    """Wraps a sink so its failure never stops the pipeline.

    The first error is logged once (one line), counted, and the sink is disabled; later writes
    are counted in ``failures`` and skipped. ``error`` keeps the first message.
    """

    def __init__(self, sink: Sink, name: str | None = None) -> None:
        self.sink, self.name = sink, name or type(sink).__name__
        self.failures = 0
        self.disabled = False
        self.error: str | None = None

    def write(self, frame: Frame, overlay_bgr: np.ndarray, prediction: Prediction | None) -> None:
        if self.disabled:
            self.failures += 1
            return
        try:
            self.sink.write(frame, overlay_bgr, prediction)
        except Exception as exc:  # noqa: BLE001 - any sink bug must not freeze the overlay
            self._fail(exc)

    def close(self) -> None:
        try:
            self.sink.close()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def call(self, method: str) -> None:
        """Call the sink's ``method`` (e.g. ``sync``), guarded like ``write``."""
        if self.disabled:
            return
        try:
            getattr(self.sink, method)()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self.failures += 1
        if self.error is None:
            self.error = str(exc) if isinstance(exc, (SinkError, OSError)) else f"{type(exc).__name__}: {exc}"
            log.error("sink %s disabled: %s", self.name, self.error)
        self.disabled = True


def make_sinks(specs: Mapping[str, Mapping[str, Any]] | None) -> list[GuardedSink]:
    """Instantiate ``{name: {_target_: ..., kwargs...}}`` (the ``sink`` config group) guarded.

    A sink that cannot even be built (no GUI, port taken) is logged and left out, so a bad
    optional sink never stops the stream.
    """
    from hydra.utils import instantiate

    sinks = []
    for name, spec in (specs or {}).items():
        if spec is None or not spec.get("enabled", True):
            continue
        kwargs = {k: v for k, v in dict(spec).items() if k != "enabled"}
        try:
            sinks.append(GuardedSink(instantiate(kwargs), name=name))
        except Exception as exc:  # noqa: BLE001 - hydra wraps constructor errors
            cause = exc.__cause__ or exc
            log.error("sink %s not started: %s", name, str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
    return sinks
