"""Wire protocol v1: pure encode/decode of messages <-> ZeroMQ multipart parts. No sockets.

A message is 2 parts (3 when a ground-truth mask rides along):
  part 0: a fixed 128-byte little-endian header (layout in ``HEADER`` and docs/PROTOCOL.md)
  part 1: the payload (raw pixels or a JPEG file; empty for every other kind)
  part 2: only when ``flags & FLAG_MASK``: HxW uint8 ground-truth mask, raw
A fixed binary struct (not JSON) because it is cheap to parse, has no optional or unknown
fields to argue about, and every byte can be validated. Nothing is ever unpickled.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np

from endostream.types import Frame

MAGIC = b"ES"
VERSION = 1

# kind, pixel format, codec and modality codes (u8). 0 is never valid for kind/pixfmt/codec,
# so an all-zero header is rejected.
KINDS = {"frame": 1, "end_of_stream": 2, "heartbeat": 3, "ack": 4, "source_lost": 5}
PIXFMTS = {"bgr8": (1, 3), "rgb8": (2, 3), "gray8": (3, 1)}  # name -> (code, channels)
CODECS = {"raw": 1, "jpeg": 2}
MODALITIES = {"other": 0, "colonoscopy": 1, "laparoscopy": 2}
# Stage ids for the per-stage timestamps carried in the header (Frame.stamps_ns keys).
STAGES = {"grab": 1, "encode": 2, "send": 3, "receive": 4, "decode": 5,
          "preprocess": 6, "infer": 7, "overlay": 8, "sink": 9}
FLAG_MASK = 1  # a third part carries the HxW uint8 ground-truth mask
MAX_STAMPS = 8

_KIND_NAMES = {v: k for k, v in KINDS.items()}
_PIXFMT_NAMES = {v[0]: k for k, v in PIXFMTS.items()}
_CODEC_NAMES = {v: k for k, v in CODECS.items()}
_MODALITY_NAMES = {v: k for k, v in MODALITIES.items()}
_STAGE_NAMES = {v: k for k, v in STAGES.items()}

# magic, version, kind, stream_id, epoch, seq, window_start, t_capture_ns, width, height,
# channels, pixfmt, codec, modality, n_stamps, flags, payload_len, then 8 x (stage u8, ns u64).
HEADER = struct.Struct("<2sBBIQQQQHHHBBBBHI" + "BQ" * MAX_STAMPS)
HEADER_SIZE = HEADER.size  # 128
_STAMPS_OFFSET = 56
_STAMP = struct.Struct("<BQ")
_U64_AT = struct.Struct("<Q")
_SEND = STAGES["send"]
# Control messages (no size, format, codec, stamps or payload): the first 40 bytes
# (magic .. t_capture_ns) vary, the other 88 are zero.
_CONTROL_HEAD = struct.Struct("<2sBBIQQQQ")
_CONTROL_TAIL = bytes(HEADER_SIZE - _CONTROL_HEAD.size)
_U64 = (1 << 64) - 1
_U32 = (1 << 32) - 1


class WireError(ValueError):
    """A message that does not follow wire protocol v1. The text is one line; ``reason`` is a
    short stable key (e.g. ``jpeg_decode``) that receivers count and rate-limit logs by."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """Decoded header fields. Times are monotonic ns; ``seq`` counts frames per stream."""

    kind: str
    stream_id: int
    epoch: int
    seq: int
    window_start: int = 0  # lossless: lowest seq the sender still holds (all below were acked)
    t_capture_ns: int = 0
    width: int = 0
    height: int = 0
    channels: int = 0
    pixfmt: str | None = None
    codec: str | None = None
    modality: str = "other"
    flags: int = 0
    payload_len: int = 0
    stamps_ns: tuple[tuple[str, int], ...] = ()


@dataclass
class FrameMessage:
    """A decoded frame. ``frame.image`` is HxWx3 uint8 BGR and may be a read-only view of the
    received buffer (zero copy): copy it before drawing on it in place."""

    frame: Frame
    epoch: int
    codec: str
    window_start: int = 0

    @property
    def stream_id(self) -> int:
        return self.frame.stream_id

    @property
    def seq(self) -> int:
        return self.frame.seq


@dataclass(frozen=True)
class EndOfStream:
    """No frame of this stream and epoch follows ``seq - 1``; ``seq`` is one past the last."""

    stream_id: int
    epoch: int
    seq: int
    window_start: int = 0


@dataclass(frozen=True)
class SourceLost:
    """The producer's source (camera, network stream) stopped delivering; the stream is not
    over: frames may follow in the same epoch, from ``seq`` on (``seq`` = last frame's seq + 1;
    it is not consumed). ``t_ns``: monotonic time the producer noticed the loss."""

    stream_id: int
    epoch: int
    seq: int
    t_ns: int = 0


@dataclass(frozen=True)
class Heartbeat:
    stream_id: int
    epoch: int
    t_ns: int


@dataclass(frozen=True)
class Ack:
    """Cumulative: every message of (stream_id, epoch) up to and including ``seq`` is done."""

    stream_id: int
    epoch: int
    seq: int


Message = Union[FrameMessage, EndOfStream, SourceLost, Heartbeat, Ack]


# ----------------------------------------------------------------------------- header


def pack_header(h: Header) -> bytes:
    """Header -> 128 bytes. Raises WireError on out-of-range fields."""
    stamps = list(h.stamps_ns)
    if len(stamps) > MAX_STAMPS:
        raise WireError(f"too many stage timestamps: {len(stamps)} > {MAX_STAMPS}")
    flat: list[int] = []
    for name, ns in stamps:
        if name not in STAGES:
            raise WireError(f"unknown stage {name!r}; expected one of {sorted(STAGES)}")
        flat += [STAGES[name], int(ns) & _U64]
    flat += [0, 0] * (MAX_STAMPS - len(stamps))
    pix_code = PIXFMTS[h.pixfmt][0] if h.pixfmt else 0
    codec_code = CODECS[h.codec] if h.codec else 0
    try:
        return HEADER.pack(MAGIC, VERSION, KINDS[h.kind], h.stream_id, h.epoch, h.seq,
                           h.window_start, h.t_capture_ns & _U64, h.width, h.height,
                           h.channels, pix_code, codec_code, MODALITIES.get(h.modality, 0),
                           len(stamps), h.flags, h.payload_len, *flat)
    except struct.error as exc:
        raise WireError(f"header field out of range: {exc}") from None


def unpack_header(buf: bytes | memoryview) -> Header:
    """128 bytes -> Header, checking magic, version, every code and the stamp slots."""
    if len(buf) != HEADER_SIZE:
        raise WireError(f"header is {len(buf)} bytes, expected {HEADER_SIZE}", "header_size")
    f = HEADER.unpack(buf)
    (magic, version, kind, stream_id, epoch, seq, window_start, t_cap, width, height,
     channels, pix, codec, modality, n_stamps, flags, payload_len) = f[:17]
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r}, expected {MAGIC!r}", "magic")
    if version != VERSION:
        raise WireError(f"unsupported protocol version {version}, expected {VERSION}", "version")
    if kind not in _KIND_NAMES:
        raise WireError(f"unknown message kind {kind}, expected one of {sorted(_KIND_NAMES)}", "kind")
    if modality not in _MODALITY_NAMES:
        raise WireError(f"unknown modality code {modality}", "modality")
    if n_stamps > MAX_STAMPS:
        raise WireError(f"stamp count {n_stamps} > {MAX_STAMPS}", "stamp_count")
    if flags & ~FLAG_MASK:
        raise WireError(f"unknown flag bits 0x{flags:04x}", "flags")
    stamps = []
    for i in range(n_stamps):
        sid, ns = f[17 + 2 * i], f[18 + 2 * i]
        if sid not in _STAGE_NAMES:
            raise WireError(f"unknown stage id {sid}", "stage")
        stamps.append((_STAGE_NAMES[sid], ns))
    if pix and pix not in _PIXFMT_NAMES:
        raise WireError(f"unknown pixel format code {pix}", "pixfmt")
    if codec and codec not in _CODEC_NAMES:
        raise WireError(f"unknown codec code {codec}", "codec")
    if window_start > seq:
        raise WireError(f"window_start {window_start} > seq {seq}", "window_start")
    return Header(_KIND_NAMES[kind], stream_id, epoch, seq, window_start, t_cap, width, height,
                  channels, _PIXFMT_NAMES.get(pix), _CODEC_NAMES.get(codec),
                  _MODALITY_NAMES[modality], flags, payload_len, tuple(stamps))


def _add_stamp(out: bytearray, stage_id: int, ns: int | None) -> None:
    """Append one stage timestamp in place; a full stamp table is left as it is (stamps are
    diagnostics, never worth an error)."""
    n = out[49]
    if n < MAX_STAMPS:
        out[49] = n + 1
        _STAMP.pack_into(out, _STAMPS_OFFSET + n * _STAMP.size, stage_id,
                         time.monotonic_ns() if ns is None else ns)


def with_stamp(header: bytes, stage: str, ns: int | None = None) -> bytes:
    """Return ``header`` with one more stage timestamp (e.g. ``send`` taken at send time).
    A full stamp table is returned unchanged."""
    out = bytearray(header)
    _add_stamp(out, STAGES[stage], ns)
    return bytes(out)


def with_window_start(header: bytes, window_start: int) -> bytes:
    """Return ``header`` with a new ``window_start`` (a resend carries the current floor)."""
    out = bytearray(header)
    _U64_AT.pack_into(out, 24, window_start)
    return bytes(out)


def send_header(header: bytes, window_start: int | None = None, ns: int | None = None) -> bytearray:
    """``with_stamp(header, "send", ns)``, and ``with_window_start`` when ``window_start`` is
    given, in one buffer: what a sender puts on the wire as part 0 at send time."""
    out = bytearray(header)
    if window_start is not None:
        _U64_AT.pack_into(out, 24, window_start)
    _add_stamp(out, _SEND, ns)
    return out


# ----------------------------------------------------------------------------- encode


def new_epoch() -> int:
    """A random 63-bit id chosen once per producer start (63 bits: fits signed int64 peers)."""
    import secrets

    return secrets.randbits(63)


def encode_frame(frame: Frame, *, epoch: int = 0, codec: str = "raw", jpeg_quality: int = 90,
                 window_start: int | None = None, send_mask: bool = False) -> list:
    """Frame -> [header, payload(, mask)]. ``frame.image``: HxWx3 BGR or HxW gray, uint8.

    Raw payloads are a memoryview of a C-contiguous array, so ZeroMQ sends them without a
    copy; the caller must not modify the image until the send completed. Adds an ``encode``
    stamp to ``frame.stamps_ns``.
    """
    img = frame.image
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise WireError(f"image must be HxWx3 or HxW uint8, got {img.shape} {img.dtype}")
    pixfmt = "bgr8" if img.ndim == 3 and img.shape[2] == 3 else "gray8"
    h, w = img.shape[:2]
    if codec == "raw":
        payload = memoryview(np.ascontiguousarray(img)).cast("B")
    elif codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise WireError("JPEG encoding failed")
        payload = memoryview(buf).cast("B")
    else:
        raise WireError(f"unknown codec {codec!r}, expected one of {sorted(CODECS)}")
    parts: list = [None, payload]
    flags = 0
    if send_mask and frame.gt_mask is not None:
        mask = np.ascontiguousarray(frame.gt_mask, dtype=np.uint8).reshape(h, w)
        parts.append(memoryview(mask).cast("B"))
        flags |= FLAG_MASK
    frame.stamps_ns["encode"] = time.monotonic_ns()
    stamps = tuple((k, v) for k, v in frame.stamps_ns.items() if k in STAGES)[:MAX_STAMPS]
    parts[0] = pack_header(Header(
        "frame", frame.stream_id, epoch, frame.seq,
        frame.seq if window_start is None else window_start, frame.t_capture_ns, w, h,
        PIXFMTS[pixfmt][1], pixfmt, codec, frame.modality, flags, len(payload), stamps))
    return parts


def _control(kind: str, stream_id: int, epoch: int, seq: int, t_ns: int = 0,
             window_start: int | None = None) -> list:
    """Same bytes as ``pack_header(Header(kind, stream_id, epoch, seq, ws, t_ns))``, packed
    directly: an ack goes out for every frame."""
    ws = seq if window_start is None else window_start
    try:
        head = _CONTROL_HEAD.pack(MAGIC, VERSION, KINDS[kind], stream_id, epoch, seq, ws,
                                  t_ns & _U64)
    except struct.error as exc:
        raise WireError(f"header field out of range: {exc}") from None
    return [head + _CONTROL_TAIL, b""]


def encode_end_of_stream(stream_id: int, epoch: int, seq: int,
                         window_start: int | None = None) -> list:
    """End of a stream; ``seq`` = last frame's seq + 1 (so it is ordered and acked like one)."""
    return _control("end_of_stream", stream_id, epoch, seq, window_start=window_start)


def encode_source_lost(stream_id: int, epoch: int, seq: int, t_ns: int | None = None,
                       window_start: int | None = None) -> list:
    """The source stopped (not end-of-stream); ``seq`` = last frame's seq + 1, not consumed:
    the next frame may carry it."""
    t = time.monotonic_ns() if t_ns is None else t_ns
    return _control("source_lost", stream_id, epoch, seq, t, window_start=window_start)


def encode_heartbeat(stream_id: int, epoch: int) -> list:
    """seq and window_start are 0 (receivers ignore them); t_capture_ns = send time."""
    return _control("heartbeat", stream_id, epoch, 0, time.monotonic_ns())


def encode_ack(stream_id: int, epoch: int, seq: int) -> list:
    return _control("ack", stream_id, epoch, seq)


# ----------------------------------------------------------------------------- decode


def _jpeg_size(buf: memoryview) -> tuple[int, int, int]:
    """(width, height, components) from a JPEG's SOF marker, read before decoding so a tiny
    file that declares a huge image cannot make us allocate it."""
    b = bytes(buf[:65536]) if len(buf) > 65536 else bytes(buf)
    if b[:2] != b"\xff\xd8":
        raise WireError("invalid JPEG: no SOI marker", "jpeg_invalid")
    i = 2
    while i + 4 <= len(b):
        if b[i] != 0xFF:
            raise WireError(f"invalid JPEG: bad marker at byte {i}", "jpeg_invalid")
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        seg_len = int.from_bytes(b[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 10 > len(b):
                break
            height = int.from_bytes(b[i + 5:i + 7], "big")
            width = int.from_bytes(b[i + 7:i + 9], "big")
            return width, height, b[i + 9]
        if seg_len < 2:
            raise WireError("invalid JPEG: bad segment length", "jpeg_invalid")
        i += 2 + seg_len
    raise WireError("invalid JPEG: no frame header (SOF) found", "jpeg_invalid")


def check_parts(parts: list, *, max_width: int = 8192, max_height: int = 8192) -> Header:
    """Validate part count, header and payload size without decoding pixels. Cheap: the
    live receiver runs it on every message and decodes only the newest frame."""
    if len(parts) not in (2, 3):
        raise WireError(f"message has {len(parts)} parts, expected 2 (header, payload) or 3", "part_count")
    h = unpack_header(_buf(parts[0]))
    payload_len = len(_buf(parts[1]))
    if payload_len != h.payload_len:
        raise WireError(f"payload is {payload_len} bytes, header says {h.payload_len}", "payload_len")
    has_mask = bool(h.flags & FLAG_MASK)
    if has_mask != (len(parts) == 3):
        raise WireError(f"{len(parts)} parts but mask flag is {int(has_mask)}", "mask_flag")
    if h.kind != "frame":
        if payload_len or has_mask or h.width or h.height or h.channels or h.pixfmt or h.codec:
            raise WireError(f"{h.kind} message must carry no payload, size, format or codec", "control_payload")
        return h
    if h.pixfmt is None or h.codec is None:
        raise WireError("frame message without pixel format or codec", "frame_format")
    if not (0 < h.width <= max_width and 0 < h.height <= max_height):
        raise WireError(f"frame size {h.width}x{h.height} outside 1x1..{max_width}x{max_height}", "frame_size")
    if h.channels != PIXFMTS[h.pixfmt][1]:
        raise WireError(f"{h.channels} channels do not match pixel format {h.pixfmt}", "channels")
    if h.codec == "raw" and payload_len != h.width * h.height * h.channels:
        raise WireError(f"raw payload is {payload_len} bytes, expected "
                        f"{h.width}x{h.height}x{h.channels} = {h.width * h.height * h.channels}", "raw_size")
    if has_mask and len(_buf(parts[2])) != h.width * h.height:
        raise WireError(f"mask is {len(_buf(parts[2]))} bytes, expected {h.width * h.height}", "mask_size")
    return h


def check_jpeg(h: Header, parts: list) -> None:
    """A JPEG payload's SOI/SOF markers and declared size match the header (no decoding).
    Cheap; it does not prove the JPEG decodes, ``decode_frame`` does."""
    w, hh, comps = _jpeg_size(_buf(parts[1]))
    if (w, hh, comps) != (h.width, h.height, h.channels):
        raise WireError(f"JPEG is {w}x{hh}x{comps}, header says "
                        f"{h.width}x{h.height}x{h.channels}", "jpeg_size")


def decode_message(parts: list, *, max_width: int = 8192, max_height: int = 8192,
                   received_ns: int | None = None) -> Message:
    """Parts (bytes, memoryview or zmq.Frame) -> FrameMessage | EndOfStream | SourceLost |
    Heartbeat | Ack.
    Raises WireError (a ValueError) with a one-line reason on anything malformed.
    ``received_ns`` (monotonic) becomes the frame's ``receive`` stamp."""
    msg = _decode_control(parts)
    if msg is not None:
        return msg
    h = check_parts(parts, max_width=max_width, max_height=max_height)
    if h.kind == "end_of_stream":
        return EndOfStream(h.stream_id, h.epoch, h.seq, h.window_start)
    if h.kind == "source_lost":
        return SourceLost(h.stream_id, h.epoch, h.seq, h.t_capture_ns)
    if h.kind == "heartbeat":
        return Heartbeat(h.stream_id, h.epoch, h.t_capture_ns)
    if h.kind == "ack":
        return Ack(h.stream_id, h.epoch, h.seq)
    return decode_frame(h, parts, received_ns)


_CONTROL_KINDS = frozenset(KINDS[k] for k in ("end_of_stream", "heartbeat", "ack", "source_lost"))


def _decode_control(parts: list) -> Message | None:
    """A control message in the form every sender writes (2 parts, empty payload, every
    header byte after ``t_capture_ns`` zero), decoded without the general path: a lossless
    producer reads an ack per frame. It accepts exactly what ``check_parts`` accepts in
    that form; anything else (an error included) returns None and takes the general path,
    which gives the canonical result or WireError."""
    try:
        if len(parts) != 2:
            return None
        hdr = _buf(parts[0])
        if len(hdr) != HEADER_SIZE or hdr[_CONTROL_HEAD.size:] != _CONTROL_TAIL:
            return None
        magic, version, kind, sid, epoch, seq, ws, t = _CONTROL_HEAD.unpack_from(hdr)
        if magic != MAGIC or version != VERSION or kind not in _CONTROL_KINDS or ws > seq:
            return None
        if len(_buf(parts[1])):
            return None
    except WireError:
        return None
    if kind == KINDS["ack"]:
        return Ack(sid, epoch, seq)
    if kind == KINDS["heartbeat"]:
        return Heartbeat(sid, epoch, t)
    if kind == KINDS["end_of_stream"]:
        return EndOfStream(sid, epoch, seq, ws)
    return SourceLost(sid, epoch, seq, t)


def decode_frame(h: Header, parts: list, received_ns: int | None = None) -> FrameMessage:
    """Pixels of a frame whose parts already passed ``check_parts`` (which returned ``h``)."""
    payload = _buf(parts[1])
    if h.codec == "raw":
        img = np.frombuffer(payload, np.uint8).reshape(h.height, h.width, h.channels)
    else:
        check_jpeg(h, parts)
        flag = cv2.IMREAD_GRAYSCALE if h.channels == 1 else cv2.IMREAD_COLOR
        img = cv2.imdecode(np.frombuffer(payload, np.uint8), flag)
        if img is None or img.shape[:2] != (h.height, h.width):
            raise WireError("invalid JPEG: decoding failed or size differs from header", "jpeg_decode")
    if h.pixfmt == "rgb8":
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif h.pixfmt == "gray8":
        img = cv2.cvtColor(img.reshape(h.height, h.width), cv2.COLOR_GRAY2BGR)
    mask = None
    if h.flags & FLAG_MASK:
        mask = np.frombuffer(_buf(parts[2]), np.uint8).reshape(h.height, h.width)
    stamps = dict(h.stamps_ns)
    if received_ns is not None:
        stamps["receive"] = received_ns
    stamps["decode"] = time.monotonic_ns()
    frame = Frame(stream_id=h.stream_id, seq=h.seq, t_capture_ns=h.t_capture_ns, image=img,
                  modality=h.modality, stamps_ns=stamps, gt_mask=mask, epoch=h.epoch)
    return FrameMessage(frame=frame, epoch=h.epoch, codec=h.codec, window_start=h.window_start)


def _buf(part) -> memoryview:
    """bytes / memoryview / zmq.Frame -> a flat byte memoryview, without copying."""
    if isinstance(part, (bytes, bytearray, memoryview)):
        mv = memoryview(part)
    elif hasattr(part, "buffer"):  # zmq.Frame from recv_multipart(copy=False)
        mv = part.buffer
    else:
        raise WireError(f"message part of type {type(part).__name__}, expected bytes", "part_type")
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")
