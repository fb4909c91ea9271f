"""Conformance vectors (docs/conformance/vectors.json): byte-exact messages with the expected
outcome, replayed against the pure decoder and against real receivers over loopback sockets.
A third-party implementer checks a client or a consumer with the JSON file alone.

Regenerate the file (only when the protocol changes on purpose):
    .venv/bin/python tests/test_protocol_conformance.py --write
"""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from endostream.protocol import wire

VECTORS = Path(__file__).resolve().parent.parent / "docs" / "conformance" / "vectors.json"
HDR = struct.Struct("<2sBBIQQQQHHHBBBBHI" + "BQ" * 8)
KIND_NAMES = {1: "frame", 2: "end_of_stream", 3: "heartbeat", 4: "ack", 5: "source_lost"}


# ----------------------------------------------------------------------------- building


def _hdr(kind=1, stream_id=0, epoch=1, seq=0, ws=None, t=1000, w=0, h=0, c=0, pix=0, codec=0,
         modality=0, stamps=(), flags=0, payload_len=0, n_stamps=None) -> bytes:
    flat = []
    for sid, ns in stamps:
        flat += [sid, ns]
    flat += [0, 0] * (8 - len(stamps))
    return HDR.pack(b"ES", 1, kind, stream_id, epoch, seq, seq if ws is None else ws, t, w, h, c,
                    pix, codec, modality, len(stamps) if n_stamps is None else n_stamps, flags,
                    payload_len, *flat)


def _frame(stream_id: int, seq: int = 0, *, w=4, h=2, c=3, pix=1, codec=1, payload=None,
           mask=None, epoch=None, **kw) -> list[bytes]:
    if payload is None:
        payload = bytes(range(w * h * c)) if codec == 1 else b""
    parts = [_hdr(1, stream_id, epoch if epoch is not None else 100 + stream_id, seq, w=w, h=h,
                  c=c, pix=pix, codec=codec, payload_len=len(payload),
                  flags=1 if mask is not None else 0, stamps=((1, 900),), **kw), payload]
    if mask is not None:
        parts.append(mask)
    return parts


def _control(kind: int, stream_id: int, seq: int = 0, **kw) -> list[bytes]:
    return [_hdr(kind, stream_id, 100 + stream_id, seq, **kw), b""]


def _jpeg(w=8, h=8) -> bytes:
    img = (np.arange(w * h, dtype=np.uint8).reshape(h, w) * 3)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


def _patch(b: bytes, off: int, fmt: str, v) -> bytes:
    out = bytearray(b)
    struct.pack_into(fmt, out, off, v)
    return bytes(out)


def build() -> dict:
    """Every vector: parts (hex), what the pure decoder does, what a consumer does."""
    jpg = _jpeg()
    good = _frame(90)
    v: list[dict] = []

    def add(name, parts, decode, consumer=None, note="", **fields):
        d = {"name": name, "note": note, "parts": [p.hex() for p in parts], "decode": decode}
        if fields:
            d["fields"] = fields
        d["consumer"] = consumer or ("deliver" if decode != "reject" else f"reject:{fields.get('reason')}")
        v.append(d)

    # ---- valid
    add("frame raw bgr8 4x2", _frame(1), "frame", note="pixels 0..23 row-major BGR",
        stream_id=1, epoch=101, seq=0, width=4, height=2, pixel_0_0=[0, 1, 2], stamps={"grab": 900})
    add("frame raw rgb8 4x2 (arrives as BGR)", _frame(2, pix=2), "frame",
        stream_id=2, epoch=102, seq=0, width=4, height=2, pixel_0_0=[2, 1, 0])
    add("frame raw gray8 4x2 with mask part", _frame(3, c=1, pix=3, mask=bytes([0, 255] * 4)),
        "frame", stream_id=3, epoch=103, seq=0, width=4, height=2, pixel_0_0=[0, 0, 0],
        mask_row_0=[0, 255, 0, 255])
    add("frame jpeg gray8 8x8", _frame(4, w=8, h=8, c=1, pix=3, codec=2, payload=jpg), "frame",
        stream_id=4, epoch=104, seq=0, width=8, height=8)
    add("frame seq 5000 (any first seq)", _frame(5, 5000), "frame", stream_id=5, epoch=105, seq=5000)
    add("frame modality laparoscopy, 8 stamps", [_hdr(1, 6, 106, 0, w=4, h=2, c=3, pix=1, codec=1,
        modality=2, payload_len=24, stamps=tuple((i, 1000 + i) for i in range(1, 9))), bytes(24)],
        "frame", stream_id=6, modality="laparoscopy")
    add("end_of_stream", _control(2, 7, 10), "end_of_stream", stream_id=7, epoch=107, seq=10)
    add("end_of_stream with modality 1 (ignored)", _control(2, 8, 3, modality=1), "end_of_stream",
        stream_id=8, seq=3)
    add("source_lost", _control(5, 9, 4, t=777), "source_lost", stream_id=9, epoch=109, seq=4, t_ns=777)
    add("heartbeat (seq 0, window_start 0)", _control(3, 10, 0, t=555), "heartbeat",
        consumer="ignore (live); answered with a heartbeat (lossless)", stream_id=10, t_ns=555)
    add("ack (valid, but only consumer -> producer)", _control(4, 11, 9), "ack",
        consumer="reject:ack_to_consumer", stream_id=11, seq=9)

    # ---- invalid: one per reason
    h0, p0 = good
    add("one part", [h0], "reject", reason="part_count")
    add("four parts", [h0, p0, b"", b""], "reject", reason="part_count")
    add("header 127 bytes", [h0[:127], p0], "reject", reason="header_size")
    add("bad magic", [b"XX" + h0[2:], p0], "reject", reason="magic")
    add("version 2", [_patch(h0, 2, "<B", 2), p0], "reject", reason="version")
    add("kind 0", [_patch(h0, 3, "<B", 0), p0], "reject", reason="kind")
    add("kind 9", [_patch(h0, 3, "<B", 9), p0], "reject", reason="kind")
    add("modality 7", [_patch(h0, 48, "<B", 7), p0], "reject", reason="modality")
    add("n_stamps 9", [_patch(h0, 49, "<B", 9), p0], "reject", reason="stamp_count")
    add("unknown flag bit 2", [_patch(h0, 50, "<H", 4), p0], "reject", reason="flags")
    add("stage id 0 in a used stamp slot", [_patch(h0, 56, "<B", 0), p0], "reject", reason="stage")
    add("pixel format 7", [_patch(h0, 46, "<B", 7), p0], "reject", reason="pixfmt")
    add("codec 7", [_patch(h0, 47, "<B", 7), p0], "reject", reason="codec")
    add("window_start > seq", [_patch(h0, 24, "<Q", 1), p0], "reject", reason="window_start")
    add("payload shorter than payload_len", [h0, p0[:-1]], "reject", reason="payload_len")
    add("mask part without the mask flag", [h0, p0, bytes(8)], "reject", reason="mask_flag")
    add("end_of_stream with a payload", [_patch(_control(2, 90)[0], 52, "<I", 1), b"x"], "reject",
        reason="control_payload")
    add("end_of_stream with a width", [_patch(_control(2, 90)[0], 40, "<H", 4), b""], "reject",
        reason="control_payload")
    add("frame without codec", [_patch(h0, 47, "<B", 0), p0], "reject", reason="frame_format")
    add("frame width 0", [_patch(h0, 40, "<H", 0), p0], "reject", reason="frame_size")
    add("frame width 9000 (limit 8192)", _frame(90, w=9000, h=1, codec=2, payload=jpg), "reject",
        reason="frame_size")
    add("bgr8 with 1 channel", [_patch(h0, 44, "<H", 1), p0], "reject", reason="channels")
    add("raw payload not width*height*channels", _frame(90, payload=bytes(23)), "reject",
        reason="raw_size")
    add("mask part of the wrong size", _frame(90, mask=bytes(7)), "reject", reason="mask_size")
    add("jpeg codec, garbage bytes, seq 1000000", _frame(90, 1_000_000, w=8, h=8, c=1, pix=3, codec=2,
        payload=bytes(range(200)) * 2), "reject", reason="jpeg_invalid",
        note="the poison frame: nothing may change before it is rejected")
    add("jpeg declaring 16x16, header says 8x8", _frame(90, w=8, h=8, c=1, pix=3, codec=2,
        payload=_jpeg(16, 16)), "reject", reason="jpeg_size")
    add("jpeg cut after the scan header (valid markers, does not decode)",
        _frame(90, 1_000_000, w=8, h=8, c=1, pix=3, codec=2, payload=jpg[:jpg.index(b"\xff\xda") + 12]),
        "reject", reason="jpeg_decode")

    def msgs(*parts_list):
        return [[p.hex() for p in parts] for parts in parts_list]

    def f(sid, seq, ws=None, epoch=None):
        return _frame(sid, seq, epoch=epoch, ws=ws)

    poison = _frame(20, 1_000_000, w=8, h=8, c=1, pix=3, codec=2, payload=bytes(range(200)) * 2)
    sequences = [
        {"name": "poison: 3 frames, garbage JPEG at seq 1000000, 3 frames, end-of-stream",
         "messages": msgs(*[f(20, s) for s in range(3)], poison, *[f(20, s) for s in range(3, 6)],
                          _control(2, 20, 6)),
         "delivered": [0, 1, 2, 3, 4, 5, "end_of_stream 6"], "rejected": {"jpeg_invalid": 1},
         "stale_discarded": 0},
        {"name": "first seq 5000: counts start there", "messages": msgs(*[f(21, s) for s in (5000, 5001, 5002)]),
         "delivered": [5000, 5001, 5002], "rejected": {}, "stale_discarded": 0, "dropped": 0},
        {"name": "source lost, then the next frame carries the same seq",
         "messages": msgs(f(22, 0), f(22, 1), _control(5, 22, 2), f(22, 2), _control(2, 22, 3)),
         "delivered": [0, 1, "source_lost 2", 2, "end_of_stream 3"], "rejected": {}, "stale_discarded": 0},
        {"name": "ack sent to the consumer is rejected in both modes",
         "messages": msgs(f(23, 0), _control(4, 23, 0), f(23, 1)),
         "delivered": [0, 1], "rejected": {"ack_to_consumer": 1}, "stale_discarded": 0},
        {"name": "replayed frame (lossless: a resend) is discarded, never delivered twice",
         "messages": msgs(f(24, 0), f(24, 1), f(24, 1), f(24, 2)),
         "delivered": [0, 1, 2], "rejected": {}, "stale_discarded": 1},
    ]
    return {"protocol": "endostream wire protocol v1 (docs/PROTOCOL.md)",
            "how": "each vector: parts = the ZeroMQ message parts as hex; decode = what a decoder "
                   "returns (or 'reject' with fields.reason); consumer = what a consumer does with "
                   "it. Each sequence: messages sent in order, one at a time, on one connection, "
                   "to a live and to a lossless consumer; delivered = what both deliver.",
            "vectors": v, "sequences": sequences}


# ----------------------------------------------------------------------------- replay

DATA = json.loads(VECTORS.read_text()) if VECTORS.exists() else {"vectors": [], "sequences": []}


def _parts(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


def _comparable(d: dict) -> dict:
    """JPEG bytes depend on the libjpeg build: compare those vectors without their parts."""
    def strip(parts: list[str]) -> list[str] | str:
        return "jpeg" if len(parts[0]) == 256 and bytes.fromhex(parts[0])[47] == 2 else parts
    out = json.loads(json.dumps(d))
    for v in out["vectors"]:
        v["parts"] = strip(v["parts"])
    for s in out["sequences"]:
        s["messages"] = [strip(m) for m in s["messages"]]
    return out


def test_file_is_current():
    """The checked-in file matches what the builder makes (no silent drift either way)."""
    assert _comparable(DATA) == _comparable(build()), \
        "run: python tests/test_protocol_conformance.py --write"


@pytest.mark.parametrize("vec", DATA["vectors"], ids=lambda d: d["name"])
def test_decoder(vec):
    parts = _parts(vec["parts"])
    if vec["decode"] == "reject":
        with pytest.raises(wire.WireError) as info:
            wire.decode_message(parts)
        assert info.value.reason == vec["fields"]["reason"]
        return
    msg = wire.decode_message(parts)
    f = vec.get("fields", {})
    kind = {wire.FrameMessage: "frame", wire.EndOfStream: "end_of_stream", wire.Heartbeat: "heartbeat",
            wire.Ack: "ack", wire.SourceLost: "source_lost"}[type(msg)]
    assert kind == vec["decode"]
    for key, want in f.items():
        if key == "width":
            assert msg.frame.image.shape[1] == want
        elif key == "height":
            assert msg.frame.image.shape[0] == want
        elif key == "pixel_0_0":
            assert msg.frame.image[0, 0].tolist() == want
        elif key == "mask_row_0":
            assert msg.frame.gt_mask[0].tolist() == want
        elif key == "stamps":
            assert {k: msg.frame.stamps_ns[k] for k in want} == want
        elif key == "modality":
            assert msg.frame.modality == want
        else:
            assert getattr(msg, key) == want, key


def _replay(mode: str, messages: list[list[bytes]]) -> tuple[list, object]:
    """Send messages one at a time over one real connection; what the receiver delivered."""
    import zmq

    from endostream.protocol.live import LiveReceiver
    from endostream.protocol.lossless_receiver import LosslessReceiver

    rx = (LiveReceiver if mode == "live" else LosslessReceiver)("tcp://127.0.0.1:*")
    sock = zmq.Context.instance().socket(zmq.PUB if mode == "live" else zmq.DEALER)
    sock.linger = 0
    sock.connect(rx.endpoint)
    out: list = []

    def poll(ms: int) -> None:
        if mode == "live":
            out.extend(m.seq for m in rx.recv_newest(ms))
            out.extend(f"{type(e).__name__} {e.seq}" for e in rx.take_events())
        else:
            m = rx.recv(ms)
            while m is not None:
                out.append(m.seq if isinstance(m, wire.FrameMessage) else f"{type(m).__name__} {m.seq}")
                rx.ack_message(m)
                m = rx.recv(0)

    try:
        if mode == "live":  # PUB/SUB join delay: a heartbeat until the receiver hears one
            deadline = time.monotonic() + 5
            while rx.stats.messages == 0:
                assert time.monotonic() < deadline
                sock.send_multipart(_control(3, 999))
                poll(20)
        base = rx.stats.messages
        for i, parts in enumerate(messages, 1):
            sock.send_multipart(parts)
            deadline = time.monotonic() + 5
            while rx.stats.messages < base + i:
                assert time.monotonic() < deadline, "a message never arrived"
                poll(20)
        poll(50)
    finally:
        sock.close()
        rx.close()
    return out, rx.stats


def _name(d: str | int) -> str | int:
    return d if isinstance(d, int) else {"end_of_stream": "EndOfStream", "source_lost": "SourceLost"}[
        d.split()[0]] + " " + d.split()[1]


@pytest.mark.parametrize("mode", ["live", "lossless"])
@pytest.mark.parametrize("seq_case", DATA["sequences"], ids=lambda d: d["name"][:40])
def test_sequence(seq_case, mode):
    out, stats = _replay(mode, [_parts(m) for m in seq_case["messages"]])
    assert out == [_name(d) for d in seq_case["delivered"]]
    assert stats.rejected == seq_case["rejected"]
    assert stats.stale_discarded == seq_case["stale_discarded"]
    if "dropped" in seq_case:
        assert stats.total("dropped") == seq_case["dropped"]


@pytest.mark.parametrize("mode", ["live", "lossless"])
def test_consumer_outcome_of_every_vector(mode):
    """Each vector alone (its own stream and epoch) into a real receiver."""
    for vec in DATA["vectors"]:
        out, stats = _replay(mode, [_parts(vec["parts"])])
        want = vec["consumer"]
        if want.startswith("reject:"):
            assert out == [] and stats.rejected == {want.split(":", 1)[1]: 1}, vec["name"]
        elif want.startswith("ignore"):
            assert out == [] and stats.rejected == {}, vec["name"]
        else:
            assert len(out) == 1 and stats.rejected == {}, vec["name"]


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        VECTORS.parent.mkdir(parents=True, exist_ok=True)
        VECTORS.write_text(json.dumps(build(), indent=1) + "\n")
        print(f"wrote {VECTORS}")
