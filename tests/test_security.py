"""CURVE: keys and permissions, allow-list, unknown clients refused, traffic encrypted."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from omegaconf import OmegaConf

from endostream.protocol import security
from endostream.protocol.live import LiveReceiver, LiveSender
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.lossless_sender import LosslessSender
from endostream.types import Frame

PATTERN = bytes(range(256)) * 48  # 48x64x4... recognisable bytes, easy to find on the wire


@pytest.fixture()
def keys(tmp_path: Path):
    """server + 'tower' (allowed) + 'intruder' (not allowed) key pairs."""
    server_dir, tower_dir, bad_dir = tmp_path / "srv", tmp_path / "tower", tmp_path / "bad"
    security.create_keys(server_dir, "server")
    security.create_keys(tower_dir, "tower")
    security.create_keys(bad_dir, "intruder")
    (server_dir / "allowed").mkdir()
    (server_dir / "allowed" / "tower.key").write_text((tower_dir / "tower.key").read_text())
    for d in (tower_dir, bad_dir):  # clients get the server's public key only
        (d / "server.key").write_text((server_dir / "server.key").read_text())
    return (security.load_server_keys(server_dir),
            security.load_client_keys(tower_dir, "tower"),
            security.load_client_keys(bad_dir, "intruder"))


def _frame(seq: int) -> Frame:
    img = np.frombuffer(PATTERN[: 32 * 64 * 3], np.uint8).reshape(32, 64, 3).copy()
    return Frame(0, seq, time.monotonic_ns(), img)


def test_key_files_and_permissions(tmp_path):
    pub, sec = security.create_keys(tmp_path, "tower")
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert "secret" not in pub.read_text().replace("Secret", "")  # public file: no secret key
    with pytest.raises(FileExistsError):
        security.create_keys(tmp_path, "tower")
    os.chmod(sec, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        security.load_secret(sec)
    os.chmod(sec, 0o600)
    public, secret = security.load_secret(sec)
    assert len(public) == 40 and len(secret) == 40
    rows = security.list_keys(tmp_path)
    assert rows == [("tower.key", security.key_id(public), True)]


def test_keys_command(tmp_path, capsys):
    cfg = OmegaConf.create({"action": "create", "name": "server", "dir": str(tmp_path), "path": None})
    assert security.run_keys(cfg) == 0
    security.create_keys(tmp_path / "client", "tower")
    cfg.action, cfg.path = "allow", str(tmp_path / "client" / "tower.key")
    assert security.run_keys(cfg) == 0
    assert (tmp_path / "allowed" / "tower.key").exists()
    cfg.path = str(tmp_path / "client" / "tower.key_secret")
    with pytest.raises(ValueError, match="secret"):
        security.run_keys(cfg)
    cfg.action = "list"
    security.run_keys(cfg)
    out = capsys.readouterr().out
    assert "allowed/tower.key" in out and "server.key  (+secret)" in out
    assert "secret-key" not in out


def _receive_some(rx: LiveReceiver, tx: LiveSender, seconds: float) -> list[int]:
    got, seq, deadline = [], 0, time.monotonic() + seconds
    while time.monotonic() < deadline and len(got) < 3:
        tx.send(_frame(seq))
        seq += 1
        got += [m.seq for m in rx.recv_newest(20)]
    return got


def test_allowed_client_gets_through_unknown_client_does_not(keys, caplog):
    server, tower, intruder = keys
    with LiveReceiver("tcp://127.0.0.1:*", security=server) as rx:
        with LiveSender(rx.endpoint, security=intruder) as bad:
            assert _receive_some(rx, bad, 1.5) == []
        assert rx.stats.messages == 0  # 0 frames accepted from the unknown client
        with LiveSender(rx.endpoint, security=tower) as good:
            assert len(_receive_some(rx, good, 5.0)) >= 1
    assert any("refused unknown CURVE client key_id=" + security.key_id(intruder.public) in r.message
               for r in caplog.records)
    assert not any(intruder.secret.decode() in r.message for r in caplog.records)


def test_plain_client_cannot_talk_to_a_curve_server(keys):
    server, _, _ = keys
    with LiveReceiver("tcp://127.0.0.1:*", security=server) as rx, LiveSender(rx.endpoint) as tx:
        assert _receive_some(rx, tx, 1.0) == []
        assert rx.stats.messages == 0


def test_lossless_with_curve(keys):
    server, tower, _ = keys
    with LosslessReceiver("tcp://127.0.0.1:*", security=server) as rx:
        done: list = []

        def produce():
            with LosslessSender(rx.endpoint, security=tower, window=4) as tx:
                for i in range(10):
                    tx.send(_frame(i), timeout_s=10)
                done.append(tx.end_stream(0, timeout_s=10))

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        seqs = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not done:
            m = rx.recv(50)
            if m is not None:
                rx.ack_message(m)
                seqs.append(m.seq)
        t.join(5)
    assert done == [True] and seqs == list(range(11))  # 10 frames + end-of-stream


class _Tap:
    """A TCP relay that records every byte the producer sends to the consumer."""

    def __init__(self, target_port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target_port
        self.seen = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket, record: bool) -> None:
        try:
            while data := a.recv(65536):
                if record:
                    self.seen += data
                b.sendall(data)
        except OSError:
            pass

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, False), daemon=True).start()


@pytest.mark.parametrize("secure", [False, True])
def test_traffic_is_encrypted(keys, secure):
    server, tower, _ = keys
    with LiveReceiver("tcp://127.0.0.1:*", security=server if secure else None) as rx:
        tap = _Tap(int(rx.endpoint.rsplit(":", 1)[1]))
        with LiveSender(f"tcp://127.0.0.1:{tap.port}", security=tower if secure else None) as tx:
            assert _receive_some(rx, tx, 5.0)
        tap.listener.close()
    probe = PATTERN[:512]
    assert (probe in tap.seen) is (not secure)
