"""Frame sources: video files and network streams, capture devices, image folders, sequence lists.

Every source is opened with :func:`open_source` and yields :class:`endostream.types.Frame`
objects (``image``: HxWx3 uint8 BGR, ``seq`` counting from 0, ``t_capture_ns`` and
``stamps_ns["grab"]`` from ``time.monotonic_ns()`` taken when the frame is grabbed).

What a URI may be:

- any file or URL FFmpeg reads, through PyAV: ``clip.mp4``, ``.mkv``, ``.avi``, ``rtsp://``,
  ``udp://``, ``srt://``, ``http://``, ``tcp://`` ... (network sources: docs/CAPTURE.md);
- a capture device through OpenCV: an integer index (``0`` or ``"0"``) or ``/dev/videoN``;
- a folder of images, read in natural order (``1.png, 2.png, 10.png``);
- a ClinicDB-style sequence list: a CSV with ``image`` and ``mask`` columns (paths relative to
  the CSV), optionally a ``sequence_id`` column; filter with ``sequences=[19, 23]`` or the
  suffix ``list.csv?sequence=19,23``. Its masks become ``Frame.gt_mask``.

Ground truth for videos (``gt_mask``, HxW uint8 {0, 255}): pass ``gt=`` a lossless mask video
(one gray frame per video frame, e.g. FFV1 in .mkv) or a folder of mask images in natural
order. Without ``gt=``, a sidecar next to the video is used when present:
``<stem>_masks.mkv`` or a ``<stem>_masks/`` folder (this is how the bundled demo clip carries
its ground truth). Masks are binarised with ``> 127``.

Every problem opening a source (missing file, zero-length, corrupt or truncated video, no
video stream, unknown codec, absurd frame size, absent device, connection refused, timeout)
raises :class:`SourceError` with a one-line message naming the cause, at :func:`open_source`
time where it can be known then.

A network URL is opened once (a server such as ``ffmpeg -listen 1`` serves one connection).
One without an end (no duration: a camera, RTSP, UDP, MPEG-TS over HTTP) is *live*: it is
read on its own thread (``capture.network.LiveFeed``), reconnected with back-off when it
drops, and its bursts are spread by a jitter buffer (``capture.jitter``).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from endostream.capture.errors import SourceError
from endostream.capture.jitter import JitterBuffer
from endostream.capture.network import LiveFeed, SourceStats, describe_error, ffmpeg_options, is_network
from endostream.types import Frame

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# 8K UHD is the largest thing an endoscopy tower plausibly sends; beyond it is a broken header
# or a hostile file, and decoding it would only exhaust memory.
DEFAULT_MAX_SIDE = 8192
DEFAULT_FOLDER_FPS = 25.0  # image folders carry no rate; 25 fps is the PAL endoscopy norm
# Jitter buffer bound for live network streams: spreads bursts of up to 5 frames at 25 fps;
# measured in docs/CAPTURE.md.
DEFAULT_JITTER_MS = 200.0


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``1.png, 2.png, 10.png`` numerically (case-insensitive)."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def binarise(mask: np.ndarray) -> np.ndarray:
    """Any HxW or HxWxC mask image -> HxW uint8 in {0, 255} (``> 127`` on the first channel)."""
    if mask.ndim == 3:
        mask = mask[..., 0]
    return np.where(mask > 127, np.uint8(255), np.uint8(0))


class FrameSource(Iterator[Frame]):
    """What :func:`open_source` returns: an iterator of frames with the source's ``stats``
    (drops, losses, reconnects), ``live`` (a device or a network stream without end),
    ``stream_id``, and ``on_lost`` (called with a reason while a live stream is lost; the
    producer chains its own notice to the consumer onto it)."""

    def __init__(self, *, stream_id: int, stats: SourceStats,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.stream_id, self.stats, self.on_lost = stream_id, stats, on_lost
        self.live = False
        self._frames: Iterator[Frame] = iter(())
        self._feed: LiveFeed | None = None  # a network stream's reader thread

    def _start(self, frames: Iterator[Frame], *, live: bool) -> FrameSource:
        self._frames, self.live = frames, live
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Stop reading (closes the file or network stream)."""
        self._frames.close()

    def reader_stopped(self, timeout_s: float) -> bool:
        """After ``close``: whether a network stream's reader thread has ended (waiting up to
        ``timeout_s``); a file or folder has none. A read blocked in FFmpeg ends only at its
        read timeout."""
        return self._feed is None or self._feed.join(timeout_s)


def open_source(
    uri: str | int,
    *,
    pace: bool = False,
    loop: bool = False,
    stream_id: int = 0,
    modality: str = "colonoscopy",
    max_frames: int | None = None,
    gt: str | None = None,
    sequences: Sequence[int] | None = None,
    fps: float | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 5.0,
    options: dict[str, Any] | None = None,
    reconnect: bool | None = None,
    reconnect_max_backoff_s: float = 2.0,
    jitter_buffer_ms: float | None = None,
    on_lost: Callable[[str], None] | None = None,
) -> FrameSource:
    """Open ``uri`` and return an iterator of frames.

    Args:
        uri: file path, URL, device index / ``/dev/videoN``, image folder or sequence CSV.
        pace: replay files and folders at their native frame rate (sleeping until each frame's
            due time on the monotonic clock, so the schedule never drifts); live sources
            (devices, network streams) are paced by the sender and ignore this.
        loop: start again at the end (files and folders only); ``seq`` keeps counting.
        stream_id, modality: copied into every frame.
        max_frames: stop after this many frames (across loops); ``None`` = no limit.
        gt: ground-truth masks for a video: mask video or mask folder (see module doc).
        sequences: sequence ids to keep from a sequence CSV (``None`` = all).
        fps: frame rate for pacing folders and CSVs (default 25), or to override a video's.
        max_side: largest accepted width or height in pixels.
        open_timeout_s: network: give up opening (connecting, first data) after this long.
        read_timeout_s: network: a read that waits longer means the source is lost.
        options: FFmpeg demuxer and protocol options, e.g. ``{"rtsp_transport": "udp"}``;
            they override the network defaults (``capture.network.ffmpeg_options``).
        reconnect: live network streams: reopen with back-off (0.25 s doubling to
            ``reconnect_max_backoff_s``) when the stream drops or its data stops, instead of
            ending or failing; ``None`` = on for live network streams. Files never reconnect.
        jitter_buffer_ms: live network streams: release bursty frames at their presentation
            times, holding none longer than this; ``None`` = 200 ms, ``0`` = off. Files,
            folders and devices are never held.
        on_lost: called with a one-line reason when a live stream is lost, and again every
            second until it is back (called on the iterating thread).

    Live network frames are stamped (``t_capture_ns``, ``stamps_ns["grab"]``) when they
    are decoded, before the jitter buffer holds them, so its latency is measured too.

    Raises:
        SourceError: the source cannot be opened (raised here, not at the first ``next``).
    """
    source = FrameSource(stream_id=stream_id, stats=SourceStats(), on_lost=on_lost)
    common = dict(stream_id=stream_id, modality=modality, max_frames=max_frames)
    if isinstance(uri, int) or (isinstance(uri, str) and (uri.isdigit() or uri.startswith("/dev/video"))):
        reader = _DeviceReader(uri, max_side=max_side)
        return source._start(_stamp(reader, reader.frames(), pace=False, rate=None, loop=False,
                                    **common), live=True)
    uri = str(uri)
    path_part, _, query = uri.partition("?")
    if path_part.lower().endswith(".csv") and not is_network(uri):
        ids = list(sequences) if sequences is not None else _query_sequences(query)
        reader = _ListReader(_read_sequence_csv(Path(path_part), ids), max_side=max_side)
        rate = fps or DEFAULT_FOLDER_FPS
    elif os.path.isdir(uri):
        masks = _mask_paths(gt) if gt else None
        reader = _ListReader(_folder_items(Path(uri), masks), max_side=max_side)
        rate = fps or DEFAULT_FOLDER_FPS
    else:
        reader = _VideoReader(uri, gt=gt, max_side=max_side, timeout_s=open_timeout_s,
                              read_timeout_s=read_timeout_s, options=options, stats=source.stats)
        if reader.live:
            feed = source._feed = LiveFeed(reader.frames, uri=uri, reconnect=True if reconnect is None else bool(reconnect),
                                           max_backoff_s=reconnect_max_backoff_s, stats=source.stats)
            hold_ms = DEFAULT_JITTER_MS if jitter_buffer_ms is None else float(jitter_buffer_ms)
            return source._start(_live(feed, JitterBuffer(hold_ms / 1000), source, **common), live=True)
        rate = fps or reader.fps
    return source._start(_stamp(reader, None, pace=pace, rate=rate, loop=loop, **common), live=False)


def _stamp(reader, first_pass, *, pace, rate, loop, stream_id, modality, max_frames) -> Iterator[Frame]:
    """Turn a reader's (image, gt_mask, pts) triples into stamped frames, paced and looped."""
    seq = 0
    period_ns = int(1e9 / rate) if pace and rate else 0
    t0_ns = 0
    while True:
        produced = 0
        for image, gt_mask, _ in (first_pass if first_pass is not None else reader.frames()):
            if max_frames is not None and seq >= max_frames:
                return
            if seq == 0:
                t0_ns = time.monotonic_ns()  # the schedule starts at the first decoded frame
            if period_ns:
                # Due time from the start, not from the previous frame: a late frame is not
                # followed by a short gap forever after (no drift), it just isn't slept for.
                delay_ns = t0_ns + seq * period_ns - time.monotonic_ns()
                if delay_ns > 0:
                    time.sleep(delay_ns / 1e9)
            t_ns = time.monotonic_ns()
            yield Frame(stream_id=stream_id, seq=seq, t_capture_ns=t_ns, image=image,
                        modality=modality, stamps_ns={"grab": t_ns}, gt_mask=gt_mask)
            seq += 1
            produced += 1
        first_pass = None
        if not loop or produced == 0 or getattr(reader, "live", False):
            return


def _live(feed: LiveFeed, jitter: JitterBuffer, source: FrameSource, *, stream_id, modality,
          max_frames) -> Iterator[Frame]:
    """Frames of a live network stream from its reader thread, released by the jitter
    buffer; reports losses through ``source.on_lost`` (once a second while lost)."""
    seq, lost_reason, last_report = 0, None, 0.0
    try:
        while max_frames is None or seq < max_frames:
            item = feed.get(0.25)
            if lost_reason is not None and source.on_lost and time.monotonic() - last_report >= 1.0:
                source.on_lost(lost_reason)  # repeated: a consumer that starts during the outage learns it too
                last_report = time.monotonic()
            if item is None:
                continue
            kind = item[0]
            if kind == "frame":
                _, image, gt_mask, pts_s, arrival_ns = item
                due_s = jitter.release_at(pts_s, arrival_ns / 1e9)
                delay_s = due_s - time.monotonic()
                if delay_s > 0:
                    time.sleep(delay_s)
                yield Frame(stream_id=stream_id, seq=seq, t_capture_ns=arrival_ns, image=image,
                            modality=modality, stamps_ns={"grab": arrival_ns}, gt_mask=gt_mask)
                seq += 1
            elif kind == "lost":
                lost_reason, last_report = item[1], time.monotonic()
                jitter.reset()  # the new connection's timestamps start elsewhere
                if source.on_lost is not None:
                    source.on_lost(lost_reason)
            elif kind == "back":
                lost_reason = None
            elif kind == "end":
                return
            elif kind == "error":
                raise item[1]
    finally:
        feed.close()


def _check_size(width: int, height: int, max_side: int, what: str) -> None:
    if width <= 0 or height <= 0 or width > max_side or height > max_side:
        raise SourceError(f"{what}: frame size {width}x{height} outside 1..{max_side} pixels per side")


# --------------------------------------------------------------------------- video (PyAV)


def _sidecar_gt(uri: str) -> str | None:
    """``clip_masks.mkv`` or ``clip_masks/`` beside ``clip.mp4``, when one exists."""
    p = Path(uri)
    for cand in (p.with_name(p.stem + "_masks.mkv"), p.with_name(p.stem + "_masks")):
        if cand.exists():
            return str(cand)
    return None


def read_masks(path: str, *, max_side: int = DEFAULT_MAX_SIDE) -> Iterator[np.ndarray]:
    """Ground-truth masks from a mask video or a folder of mask images, in order.

    Yields HxW uint8 arrays in {0, 255}. Raises :class:`SourceError` if ``path`` is unusable.
    """
    if os.path.isdir(path):
        for mp in _mask_paths(path):
            yield binarise(_imread(mp, gray=True))
        return
    reader = _VideoReader(path, gt=None, max_side=max_side, timeout_s=10.0, gray=True, sidecar=False)
    for image, _, _ in reader.frames():
        yield binarise(image)


class _VideoReader:
    """Decodes the first video stream of anything FFmpeg opens, to BGR (or gray) arrays.

    The container opened (and probed) here serves the first ``frames()`` call: a network
    URL is opened exactly once per connection. Later calls (a loop, a reconnect) reopen.
    ``live``: a network stream without a known duration (camera, RTSP, UDP, MPEG-TS over
    HTTP): paced by its sender, never looped, read by ``LiveFeed``.
    """

    def __init__(self, uri: str, *, gt: str | None, max_side: int, timeout_s: float,
                 read_timeout_s: float | None = None, options: dict[str, Any] | None = None,
                 gray: bool = False, sidecar: bool = True, stats: SourceStats | None = None) -> None:
        self.uri, self.max_side, self.timeout_s, self.gray = uri, max_side, timeout_s, gray
        self.read_timeout_s = timeout_s if read_timeout_s is None else read_timeout_s
        self.network = is_network(uri)
        self.options = ffmpeg_options(uri, options)
        self.stats = stats or SourceStats()
        is_url = "://" in uri
        if not is_url:
            if not os.path.exists(uri):
                raise SourceError(f"source not found: {uri}")
            if os.path.getsize(uri) == 0:
                raise SourceError(f"source is an empty (zero-length) file: {uri}")
        container = self._open()
        try:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            name = ctx.name if ctx is not None else None
            if not name or name == "none":
                tag = getattr(stream, "codec_tag", "") or "?"
                raise SourceError(f"{uri}: unknown or unsupported video codec (tag {tag!r})")
            self.live = self.network and container.duration is None
            # A live stream probed briefly may not know its size yet: checked per frame then.
            if not (self.live and ctx.width == 0 and ctx.height == 0):
                _check_size(ctx.width, ctx.height, max_side, uri)
            rate = stream.average_rate or stream.base_rate or stream.guessed_rate
            self.fps = float(rate) if rate else DEFAULT_FOLDER_FPS
            self.width, self.height, self.codec = ctx.width, ctx.height, name
        except BaseException:
            container.close()
            raise
        self._container = container  # served to the first frames() call
        self.gt_path = gt if gt else (_sidecar_gt(uri) if sidecar and not is_url else None)
        if self.gt_path and not os.path.exists(self.gt_path):
            container.close()
            raise SourceError(f"ground truth not found: {self.gt_path}")

    def _open(self):
        import av  # imported lazily so folder and device sources work without PyAV

        try:
            container = av.open(self.uri, options=self.options,
                                timeout=(self.timeout_s, self.read_timeout_s))
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {self._what()} {self.uri}: "
                              f"{describe_error(exc, self.uri, self.timeout_s)}") from None
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            container.close()
            raise SourceError(f"{self.uri}: no video stream (streams: {', '.join(kinds)})")
        return container

    def _what(self) -> str:
        return "network stream" if self.network else "video"

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray | None, float | None]]:
        """``(image, gt_mask, pts_s)`` per decoded frame; ``pts_s`` in seconds or None."""
        import av

        container = self._container if self._container is not None else self._open()
        self._container = None
        stream = container.streams.video[0]
        # Files: frame + slice threads keep up with 1080p60. Live: slice threads only, since
        # frame threads hold back (threads - 1) frames: latency, and lost when the stream drops.
        stream.thread_type = "SLICE" if self.live else "AUTO"
        masks = read_masks(self.gt_path, max_side=self.max_side) if self.gt_path else None
        fmt = "gray" if self.gray else "bgr24"
        n = 0
        try:
            for packet in container.demux(stream):
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    if not self.network:
                        raise
                    self._corrupt_packet()  # a lost UDP packet: skip it, the stream goes on
                    continue
                for vf in decoded:
                    if vf.width != self.width or vf.height != self.height:
                        _check_size(vf.width, vf.height, self.max_side, self.uri)
                    image = vf.to_ndarray(format=fmt)
                    gt_mask = next(masks, None) if masks is not None else None
                    if masks is not None and gt_mask is None:
                        log.warning("%s: ground truth ends at frame %d; later frames have none", self.uri, n)
                        masks = None
                    n += 1
                    yield image, gt_mask, vf.time
        except av.FFmpegError as exc:
            if self.network:
                raise SourceError(f"{self.uri}: {describe_error(exc, self.uri, self.read_timeout_s)} "
                                  f"after {n} frames") from None
            raise SourceError(f"corrupt or truncated video {self.uri} at frame {n}: "
                              f"{describe_error(exc, self.uri, self.timeout_s)}") from None
        finally:
            container.close()
        if n == 0:
            raise SourceError(f"{self.uri}: no frame could be decoded (corrupt or truncated?)")

    def _corrupt_packet(self) -> None:
        self.stats.corrupt_packets += 1
        n = self.stats.corrupt_packets
        if n == 1 or n % 100 == 0:
            log.warning("%s: undecodable packet skipped (%d so far)", self.uri, n)


# --------------------------------------------------------------------------- devices (OpenCV)


class _DeviceReader:
    """A V4L2 / capture-card device through OpenCV; ``live``: never paced or looped."""

    live = True

    def __init__(self, uri: str | int, *, max_side: int) -> None:
        import cv2

        self.uri = uri
        index: int | str = int(uri) if isinstance(uri, int) or str(uri).isdigit() else str(uri)
        if isinstance(index, str) and not os.path.exists(index):
            raise SourceError(f"capture device not found: {index}")
        self.cap = cv2.VideoCapture(index)
        if not self.cap.isOpened():
            raise SourceError(f"cannot open capture device {uri}")
        w, h = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        try:
            _check_size(w, h, max_side, f"device {uri}")
        except SourceError:
            self.cap.release()
            raise

    def frames(self) -> Iterator[tuple[np.ndarray, None, None]]:
        try:
            while True:
                ok, image = self.cap.read()
                if not ok:
                    log.warning("capture device %s stopped delivering frames", self.uri)
                    return
                yield image, None, None
        finally:
            self.cap.release()


# --------------------------------------------------------------------------- folders and lists


def _imread(path: str, *, gray: bool = False) -> np.ndarray:
    import cv2

    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"cannot read image {path} (missing, empty or not an image)")
    return image


def image_files(folder: Path) -> list[str]:
    """Image file paths in ``folder``, in natural order (1.png, 2.png, 10.png)."""
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS)]
    return [str(folder / n) for n in sorted(names, key=natural_key)]


def _mask_paths(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise SourceError(f"ground-truth mask folder not found: {folder}")
    return image_files(Path(folder))


def _folder_items(folder: Path, masks: list[str] | None) -> list[tuple[str, str | None]]:
    images = image_files(folder)
    if not images:
        raise SourceError(f"no images ({', '.join(IMAGE_EXTS)}) in folder {folder}")
    if masks is None:
        return [(p, None) for p in images]
    by_stem = {Path(m).stem: m for m in masks}
    return [(p, by_stem.get(Path(p).stem)) for p in images]


def _query_sequences(query: str) -> list[int] | None:
    if not query:
        return None
    values = parse_qs(query).get("sequence") or parse_qs(query).get("sequences")
    if not values:
        raise SourceError(f"unknown query {query!r}; expected ?sequence=ID[,ID...]")
    try:
        return [int(v) for part in values for v in part.split(",") if v]
    except ValueError:
        raise SourceError(f"bad sequence ids in {query!r}; expected integers") from None


def _read_sequence_csv(path: Path, ids: list[int] | None) -> list[tuple[str, str | None]]:
    if not path.is_file():
        raise SourceError(f"sequence list not found: {path}")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0]:
        raise SourceError(f"{path}: expected a CSV with columns image[,mask][,sequence_id]")
    if ids is not None:
        if "sequence_id" not in rows[0]:
            raise SourceError(f"{path}: no sequence_id column to filter sequences {ids} by")
        wanted = set(ids)
        rows = [r for r in rows if int(r["sequence_id"]) in wanted]
        if not rows:
            raise SourceError(f"{path}: no rows for sequence ids {sorted(wanted)}")
    base = path.parent
    return [(str(base / r["image"]), str(base / r["mask"]) if r.get("mask") else None) for r in rows]


class _ListReader:
    """Images (and optional masks) from a list of paths, read lazily one at a time."""

    live = False

    def __init__(self, items: list[tuple[str, str | None]], *, max_side: int) -> None:
        for image_path, mask_path in items[:1]:  # fail at open time on an unreadable first item
            img = _imread(image_path)
            _check_size(img.shape[1], img.shape[0], max_side, image_path)
        self.items, self.max_side = items, max_side

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray | None, None]]:
        for image_path, mask_path in self.items:
            image = _imread(image_path)
            _check_size(image.shape[1], image.shape[0], self.max_side, image_path)
            gt_mask = binarise(_imread(mask_path, gray=True)) if mask_path else None
            yield image, gt_mask, None
