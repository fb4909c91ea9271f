"""The re-publish sink honours transport.security and the loopback default, and its stream
follows docs/PROTOCOL.md ("Re-publish stream"): JPEG overlay, raw mask part, end-of-stream."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from endostream.consumer.republish_sink import ZmqRepublishSink
from endostream.consumer.sinks import SinkError
from endostream.protocol import security, wire
from endostream.protocol.wire import EndOfStream, FrameMessage, SourceLost
from endostream.types import Frame, Prediction


def _frame(seq: int, stream_id: int = 1) -> tuple[Frame, np.ndarray]:
    img = np.full((48, 64, 3), 90, np.uint8)
    return Frame(stream_id, seq, time.monotonic_ns(), img), img.copy()


def _pred() -> Prediction:
    mask = np.zeros((48, 64), bool)
    mask[10:20, 5:30] = True
    return Prediction(prob=mask.astype(np.float32), mask=mask, presence=1.0, box=None)


@pytest.fixture()
def keydir(tmp_path: Path) -> dict:
    """A consumer key folder (server + allow-list holding 'viewer') and a viewer folder."""
    srv, viewer, bad = tmp_path / "srv", tmp_path / "viewer", tmp_path / "bad"
    security.create_keys(srv, "server")
    security.create_keys(viewer, "viewer")
    security.create_keys(bad, "intruder")
    (srv / "allowed").mkdir()
    (srv / "allowed" / "viewer.key").write_text((viewer / "viewer.key").read_text())
    for d in (viewer, bad):
        (d / "server.key").write_text((srv / "server.key").read_text())
    return {"sec": {"enabled": True, "keys_dir": str(srv), "server_key": "server", "allow_dir": None},
            "viewer": security.load_client_keys(viewer, "viewer"),
            "intruder": security.load_client_keys(bad, "intruder")}


def _subscriber(endpoint: str, keys: security.ClientKeys | None = None) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    if keys is not None:
        security.secure_client(sub, keys)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.linger = 0
    sub.connect(endpoint)
    return sub


def _pump(sink: ZmqRepublishSink, subs: list[zmq.Socket], seconds: float, start: int = 0,
          until: int = 1) -> list[list]:
    """Publish for at least ``seconds`` and until the last subscriber decoded ``until``
    messages (at most 20 s: a loaded machine is slow to connect); what each one decoded."""
    got: list[list] = [[] for _ in subs]
    seq, t_min, t_max = start, time.monotonic() + seconds, time.monotonic() + 20
    while time.monotonic() < t_max and (time.monotonic() < t_min or len(got[-1]) < until):
        sink.write(*_frame(seq), _pred())
        seq += 1
        for i, s in enumerate(subs):
            while s.poll(5):
                got[i].append(wire.decode_message(s.recv_multipart()))
    return got


def test_republish_format_mask_part_and_end_of_stream():
    sink = ZmqRepublishSink("tcp://127.0.0.1:*")
    sub = _subscriber(sink.endpoint)
    try:
        got = []
        for seq in range(200):  # PUB/SUB join delay: publish until a few arrive
            sink.write(*_frame(seq), _pred() if seq % 2 else None)
            while sub.poll(5):
                got.append(wire.decode_message(sub.recv_multipart()))
            if len(got) >= 4:
                break
        sink.source_lost(1)
        sink.close()  # forwards end-of-stream
        while sub.poll(500):
            got.append(wire.decode_message(sub.recv_multipart()))
    finally:
        sub.close()
    frames = [m for m in got if isinstance(m, FrameMessage)]
    assert len(frames) >= 4 and all(m.codec == "jpeg" and m.frame.stream_id == 1 for m in frames)
    with_mask = [m for m in frames if m.frame.seq % 2]
    assert with_mask and all(m.frame.gt_mask is not None for m in with_mask)
    assert int(with_mask[0].frame.gt_mask[15, 10]) == 255 and int(with_mask[0].frame.gt_mask[40, 60]) == 0
    assert all(m.frame.gt_mask is None for m in frames if m.frame.seq % 2 == 0)
    assert len({m.epoch for m in frames}) == 1
    last = frames[-1].frame.seq
    assert isinstance(got[-2], SourceLost) and got[-2].seq == last + 1
    assert isinstance(got[-1], EndOfStream) and got[-1].seq == last + 1
    assert got[-1].epoch == frames[0].epoch


def test_republish_new_epoch_when_the_source_restarts():
    sink = ZmqRepublishSink("tcp://127.0.0.1:*")
    sub = _subscriber(sink.endpoint)
    try:
        got = _pump(sink, [sub], 0.2)[0]
        assert got, "subscriber never received a frame"
        epoch0 = got[-1].epoch
        sink.write(*_frame(0), None)  # the producer restarted: seq back to 0
        sub.poll(1000)
        again = wire.decode_message(sub.recv_multipart())
    finally:
        sub.close()
        sink.close()
    assert again.seq == 0 and again.epoch != epoch0


def test_republish_refuses_non_loopback_and_missing_keys(tmp_path):
    with pytest.raises(SinkError, match="loopback"):
        ZmqRepublishSink("tcp://0.0.0.0:*")
    with pytest.raises(SinkError, match="security keys"):
        ZmqRepublishSink("tcp://127.0.0.1:*", security={"enabled": True, "keys_dir": str(tmp_path)})


def test_republish_with_security_plain_subscriber_gets_nothing(keydir, caplog):
    sink = ZmqRepublishSink("tcp://127.0.0.1:*", security=keydir["sec"])
    plain = _subscriber(sink.endpoint)
    intruder = _subscriber(sink.endpoint, keydir["intruder"])
    viewer = _subscriber(sink.endpoint, keydir["viewer"])
    try:
        got_plain, got_intruder, got_viewer = _pump(sink, [plain, intruder, viewer], 2.5, until=3)
    finally:
        for s in (plain, intruder, viewer):
            s.close()
        sink.close()
    assert got_plain == [] and got_intruder == []
    assert len(got_viewer) >= 3 and isinstance(got_viewer[0], FrameMessage)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "CURVE handshake failed" in text  # the sink's side logs the refused subscribers
    assert security.key_id(keydir["intruder"].public) in text


def test_republish_config_passes_the_transport_security():
    from endostream.cli import compose

    cfg = compose("consume", ["sink=[republish]", "transport.security.enabled=true",
                              "transport.security.keys_dir=/nowhere"])
    spec = cfg.sink.republish
    assert spec.security.enabled is True and spec.security.keys_dir == "/nowhere"
    assert spec.allow_remote is False
