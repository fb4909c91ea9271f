"""Wire protocol v1: round trips and strict rejections, no sockets."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from endostream.protocol import wire
from endostream.types import Frame
from endostream.protocol.wire import (HEADER_SIZE, Ack, EndOfStream, FrameMessage, Header, Heartbeat,
                             WireError, decode_message, encode_ack, encode_end_of_stream,
                             encode_frame, encode_heartbeat, pack_header, unpack_header)


def _frame(h=48, w=64, seq=7, c=3, stream_id=3) -> Frame:
    rng = np.random.default_rng(seq)
    shape = (h, w, c) if c == 3 else (h, w)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    return Frame(stream_id=stream_id, seq=seq, t_capture_ns=123456789, image=img,
                 modality="laparoscopy", stamps_ns={"grab": 111, "not_a_stage": 5})


def _bytes(parts) -> list[bytes]:
    return [bytes(p) for p in parts]


def test_header_is_128_bytes_little_endian():
    assert HEADER_SIZE == 128
    raw = pack_header(Header("ack", stream_id=1, epoch=2, seq=258))
    assert raw[:2] == b"ES" and raw[2] == 1 and raw[3] == wire.KINDS["ack"]
    assert struct.unpack_from("<Q", raw, 16)[0] == 258


def test_raw_round_trip_is_exact_and_zero_copy():
    f = _frame()
    parts = encode_frame(f, epoch=99)
    assert isinstance(parts[1], memoryview)  # zero-copy payload
    msg = decode_message(_bytes(parts), received_ns=5)
    assert isinstance(msg, FrameMessage)
    assert msg.epoch == 99 and msg.codec == "raw" and msg.seq == 7 and msg.stream_id == 3
    g = msg.frame
    np.testing.assert_array_equal(g.image, f.image)
    assert g.t_capture_ns == 123456789 and g.modality == "laparoscopy"
    assert g.stamps_ns["grab"] == 111 and "encode" in g.stamps_ns and "not_a_stage" not in g.stamps_ns
    assert g.stamps_ns["receive"] == 5 and "decode" in g.stamps_ns


def test_jpeg_round_trip_is_close():
    f = _frame(h=120, w=160)
    f.image[:] = cv2.GaussianBlur(f.image, (31, 31), 0)  # smooth: JPEG-friendly
    msg = decode_message(_bytes(encode_frame(f, codec="jpeg", jpeg_quality=95)))
    assert msg.codec == "jpeg" and msg.frame.image.shape == (120, 160, 3)
    assert np.abs(msg.frame.image.astype(int) - f.image).mean() < 4


def test_gray_and_mask_round_trip():
    f = _frame(c=1)
    f.gt_mask = (f.image > 128).astype(np.uint8) * 255
    parts = encode_frame(f, send_mask=True)
    assert len(parts) == 3
    msg = decode_message(_bytes(parts))
    assert msg.frame.image.shape == (48, 64, 3)  # consumers always get BGR
    np.testing.assert_array_equal(msg.frame.image[..., 0], f.image)
    np.testing.assert_array_equal(msg.frame.gt_mask, f.gt_mask)


def test_rgb8_from_an_independent_client_arrives_as_bgr():
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 255  # red in RGB order
    hdr = pack_header(Header("frame", 0, 1, 0, 0, 0, 5, 4, 3, "rgb8", "raw", "other",
                             payload_len=img.nbytes))
    msg = decode_message([hdr, img.tobytes()])
    assert (msg.frame.image[..., 2] == 255).all() and (msg.frame.image[..., 0] == 0).all()


def test_control_messages_round_trip():
    assert decode_message(encode_end_of_stream(4, 5, 10)) == EndOfStream(4, 5, 10, 10)
    assert decode_message(encode_ack(4, 5, 9)) == Ack(4, 5, 9)
    hb = decode_message(encode_heartbeat(4, 5))
    assert isinstance(hb, Heartbeat) and hb.stream_id == 4 and hb.t_ns > 0


def test_with_stamp_appends_a_stage():
    parts = encode_frame(_frame())
    hdr = wire.with_stamp(parts[0], "send", 42)
    assert dict(unpack_header(hdr).stamps_ns)["send"] == 42


def _good() -> list[bytes]:
    return _bytes(encode_frame(_frame()))


def _patch(raw: bytes, offset: int, fmt: str, value) -> bytes:
    b = bytearray(raw)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


@pytest.mark.parametrize("mutate, words", [
    (lambda p: p[:1], "parts"),
    (lambda p: p + [b"", b""], "parts"),
    (lambda p: [p[0][:100], p[1]], "header is 100 bytes"),
    (lambda p: [b"XX" + p[0][2:], p[1]], "magic"),
    (lambda p: [_patch(p[0], 2, "<B", 2), p[1]], "version"),
    (lambda p: [_patch(p[0], 3, "<B", 9), p[1]], "kind"),
    (lambda p: [_patch(p[0], 47, "<B", 7), p[1]], "codec"),
    (lambda p: [_patch(p[0], 46, "<B", 7), p[1]], "pixel format"),
    (lambda p: [p[0], p[1][:-1]], "payload is"),
    (lambda p: [_patch(_patch(p[0], 40, "<H", 9000), 52, "<I", len(p[1])), p[1]], "outside"),
    (lambda p: [_patch(p[0], 40, "<H", 65), p[1]], "raw payload"),
    (lambda p: [_patch(p[0], 44, "<H", 1), p[1]], "channels"),
    (lambda p: [_patch(p[0], 49, "<B", 9), p[1]], "stamp count"),
    (lambda p: [_patch(p[0], 50, "<H", 4), p[1]], "flag"),
    (lambda p: [_patch(p[0], 24, "<Q", 10**6), p[1]], "window_start"),
    (lambda p: [p[0], p[1], b"x"], "mask flag"),
    (lambda p: [p[0], 12345], "part of type"),
])
def test_rejects_malformed(mutate, words):
    with pytest.raises(WireError, match=words) as info:
        decode_message(mutate(_good()))
    assert "\n" not in str(info.value)


def test_dimension_limit_is_configurable():
    with pytest.raises(WireError, match="outside"):
        decode_message(_good(), max_width=32)


def test_control_message_with_payload_is_rejected():
    hdr, _ = encode_ack(1, 1, 1)
    with pytest.raises(WireError):
        decode_message([_patch(hdr, 52, "<I", 3), b"abc"])


def _jpeg_parts(h=32, w=32) -> list[bytes]:
    return _bytes(encode_frame(_frame(h=h, w=w), codec="jpeg"))


def test_rejects_bad_jpeg():
    hdr, payload = _jpeg_parts()
    garbage = b"\x00" * len(payload)
    with pytest.raises(WireError, match="JPEG"):
        decode_message([hdr, garbage])
    truncated = payload[: len(payload) // 3]
    with pytest.raises(WireError, match="JPEG"):
        decode_message([_patch(hdr, 52, "<I", len(truncated)), truncated])


def test_rejects_jpeg_whose_size_differs_from_header():
    hdr, payload = _jpeg_parts()
    lie = _patch(_patch(hdr, 40, "<H", 64), 42, "<H", 64)
    with pytest.raises(WireError, match="JPEG is 32x32"):
        decode_message([lie, payload])


def test_never_unpickles():
    import pickle

    with pytest.raises(WireError):
        decode_message([pickle.dumps({"a": 1}), b""])


def test_encode_rejects_bad_images_and_codecs():
    f = _frame()
    f.image = f.image.astype(np.float32)
    with pytest.raises(WireError):
        encode_frame(f)
    with pytest.raises(WireError, match="codec"):
        encode_frame(_frame(), codec="png")


# ----------------------------------------------------------------------------- raw fast path


def test_raw_payload_is_a_view_of_the_image_not_a_copy():
    f = _frame(h=480, w=640)
    parts = encode_frame(f)
    payload = np.frombuffer(parts[1], np.uint8)
    assert payload.nbytes == 480 * 640 * 3 and np.shares_memory(payload, f.image)
    msg = decode_message(parts)  # and decoding views the payload: nothing copied end to end
    assert np.shares_memory(msg.frame.image, f.image) and not msg.frame.image.flags.owndata
    assert np.array_equal(msg.frame.image, f.image)


def test_send_header_is_with_stamp_and_with_window_start_in_one_buffer():
    hdr = encode_frame(_frame())[0]
    for ws in (None, 3, 7):
        want = wire.with_stamp(hdr if ws is None else wire.with_window_start(hdr, ws), "send", 42)
        assert bytes(wire.send_header(hdr, ws, 42)) == want
    full = hdr
    for i in range(wire.MAX_STAMPS):
        full = wire.with_stamp(full, "infer", i)
    assert full[49] == wire.MAX_STAMPS
    assert bytes(wire.send_header(full, None, 42)) == full  # a full table is left as it is
    assert bytes(wire.send_header(full, 2, 42)) == wire.with_window_start(full, 2)
    assert unpack_header(wire.send_header(hdr)).stamps_ns[-1][0] == "send"


@pytest.mark.parametrize("kind, make", [
    ("ack", lambda: encode_ack(4, 2**63 - 1, 2**64 - 1)),
    ("end_of_stream", lambda: encode_end_of_stream(1, 5, 10, window_start=3)),
    ("source_lost", lambda: wire.encode_source_lost(2**32 - 1, 5, 10, t_ns=77, window_start=10)),
    ("heartbeat", lambda: encode_heartbeat(6, 9)),
])
def test_control_headers_are_the_bytes_pack_header_writes(kind, make):
    hdr, payload = make()
    h = unpack_header(hdr)
    assert h.kind == kind and payload == b""
    assert hdr == pack_header(Header(kind, h.stream_id, h.epoch, h.seq, h.window_start,
                                     h.t_capture_ns))


def test_control_header_field_out_of_range_is_a_wire_error():
    with pytest.raises(WireError, match="out of range"):
        encode_ack(2**32, 1, 1)


def _general(parts):
    """decode_message without the control fast path."""
    h = wire.check_parts(parts)
    return {"end_of_stream": lambda: EndOfStream(h.stream_id, h.epoch, h.seq, h.window_start),
            "source_lost": lambda: wire.SourceLost(h.stream_id, h.epoch, h.seq, h.t_capture_ns),
            "heartbeat": lambda: Heartbeat(h.stream_id, h.epoch, h.t_capture_ns),
            "ack": lambda: Ack(h.stream_id, h.epoch, h.seq)}.get(h.kind, lambda: "frame")()


@pytest.mark.parametrize("parts", [
    encode_ack(4, 5, 9),
    encode_end_of_stream(4, 5, 10, window_start=2),
    wire.encode_source_lost(4, 5, 10, t_ns=99),
    encode_heartbeat(4, 5),
    [_patch(encode_ack(4, 5, 9)[0], 48, "<B", 2), b""],  # a known modality: general path
    [_patch(encode_ack(4, 5, 9)[0], 24, "<Q", 10), b""],  # window_start > seq
    [_patch(encode_ack(4, 5, 9)[0], 52, "<I", 3), b"abc"],  # payload on a control message
    [_patch(encode_ack(4, 5, 9)[0], 3, "<B", 1), b""],  # a "frame" with an all-zero tail
    [_patch(encode_ack(4, 5, 9)[0], 3, "<B", 9), b""],  # unknown kind
    [b"XX" + encode_ack(4, 5, 9)[0][2:], b""],
    [_patch(encode_ack(4, 5, 9)[0], 2, "<B", 2), b""],
    [encode_ack(4, 5, 9)[0], b"", b""],
    [encode_ack(4, 5, 9)[0][:127], b""],
    [encode_ack(4, 5, 9)[0], 12345],
    [memoryview(encode_ack(4, 5, 9)[0]), memoryview(b"")],
])
def test_control_fast_path_agrees_with_the_general_path(parts):
    try:
        want = _general(parts)
    except WireError as exc:
        with pytest.raises(WireError) as info:
            decode_message(parts)
        assert info.value.reason == exc.reason
        return
    if want == "frame":
        with pytest.raises(WireError):
            decode_message(parts)
        return
    assert decode_message(parts) == want
