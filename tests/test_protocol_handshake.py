"""CURVE handshake failures are logged on both sides (socket monitor events, key ids), and
a producer whose frames no consumer accepted says so (``never_accepted``)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from endostream.protocol import security
from endostream.protocol.live import LiveReceiver, LiveSender
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.lossless_sender import LosslessSender
from endostream.types import Frame


@pytest.fixture()
def keys(tmp_path: Path):
    srv, tower, bad = tmp_path / "srv", tmp_path / "tower", tmp_path / "bad"
    for d, name in ((srv, "server"), (tower, "tower"), (bad, "intruder")):
        security.create_keys(d, name)
    (srv / "allowed").mkdir()
    (srv / "allowed" / "tower.key").write_text((tower / "tower.key").read_text())
    for d in (tower, bad):
        (d / "server.key").write_text((srv / "server.key").read_text())
    return (security.load_server_keys(srv), security.load_client_keys(tower, "tower"),
            security.load_client_keys(bad, "intruder"))


def _run(mode: str, server, client, seconds: float, until_got: int = 0) -> tuple:
    """Stream for ``seconds`` (or, with ``until_got``, until that many arrived, at most 20 s:
    a loaded machine may take a while for the first handshake)."""
    R, S = (LiveReceiver, LiveSender) if mode == "live" else (LosslessReceiver, LosslessSender)
    got = 0
    with R("tcp://127.0.0.1:*", security=server) as rx:
        tx = S(rx.endpoint, security=client)
        seq, t_end = 0, time.monotonic() + (20.0 if until_got else seconds)
        while time.monotonic() < t_end and not (until_got and got >= until_got):
            f = Frame(0, seq, time.monotonic_ns(), np.zeros((8, 8, 3), np.uint8))
            if mode == "live":
                tx.send(f)
                seq += 1
                got += len(rx.recv_newest(10))
            else:
                if tx.outstanding < tx.window:
                    tx.send(f)
                    seq += 1
                tx.service(5)
                m = rx.recv(5)
                if m is not None:
                    got += 1
                    rx.ack_message(m)
                    tx.service(5)
        never = tx.never_accepted
        tx.close()
        return got, never, tx, rx


@pytest.mark.parametrize("mode", ["live", "lossless"])
def test_unknown_key_logged_on_both_sides_with_its_id(keys, mode, caplog):
    server, _, intruder = keys
    with caplog.at_level(logging.INFO):
        got, never, tx, rx = _run(mode, server, intruder, 1.5)
    assert got == 0 and never
    assert tx.handshakes_failed >= 1 and rx.handshakes_failed >= 1
    kid = security.key_id(intruder.public)
    lines = [r.getMessage() for r in caplog.records]
    server_side = [t for t in lines if t.startswith("CURVE handshake failed on")]
    client_side = [t for t in lines if t.startswith("CURVE handshake with")]
    assert server_side and kid in server_side[0]
    assert client_side and kid in client_side[0] and "not on the peer's allow-list" in client_side[0]
    assert any("none of them was received" in t for t in lines)  # said at the end
    assert not any(intruder.secret.decode() in t for t in lines)


@pytest.mark.parametrize("mode", ["live", "lossless"])
def test_plain_producer_against_curve_consumer(keys, mode, caplog):
    server, _, _ = keys
    with caplog.at_level(logging.INFO):
        got, never, tx, rx = _run(mode, server, None, 1.5)
    assert got == 0 and never and rx.stats.messages == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any("requires CURVE" in t for t in lines)  # the producer's side
    assert any(t.startswith("CURVE handshake failed on") for t in lines)  # the consumer's side
    # rate-limited: at most one line per failure kind and side in 1.5 s of reconnects
    assert sum("handshake" in t for t in lines) <= 6


@pytest.mark.parametrize("mode", ["live", "lossless"])
def test_allowed_producer_is_accepted(keys, mode):
    server, tower, _ = keys
    got, never, tx, rx = _run(mode, server, tower, 2.0, until_got=3)
    assert got > 0 and not never and tx.handshakes_ok >= 1 and tx.handshakes_failed == 0
