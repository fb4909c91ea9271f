"""The client printed in docs/PROTOCOL.md (struct + pyzmq, no endostream imports), run as is
against the real receiver, then garbage from the same kind of client."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import zmq

from endostream.protocol.live import LiveReceiver

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def _doc_client(endpoint: str) -> str:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert "import endostream" not in code and "from endostream" not in code
    return code.replace("tcp://127.0.0.1:5555", endpoint).replace("1 / 30", "1 / 200")


def test_documented_client_streams_to_the_consumer_which_survives_garbage():
    with LiveReceiver("tcp://127.0.0.1:*") as rx:
        proc = subprocess.Popen([sys.executable, "-c", _doc_client(rx.endpoint)])
        got = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (0 in rx.stats.streams and rx.stats.streams[0].ended):
            got += rx.recv_newest(50)
        assert proc.wait(10) == 0
        assert rx.stats.malformed == 0 and rx.stats.streams[0].ended
        assert len(got) > 10 and [m.seq for m in got] == sorted({m.seq for m in got})
        assert got[-1].frame.image.shape == (480, 640, 3) and got[-1].frame.modality == "colonoscopy"
        assert "grab" in got[-1].frame.stamps_ns

        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.connect(rx.endpoint)
        for i in range(300):  # the same client, misbehaving
            rx.recv_newest(1)
            pub.send_multipart([b"ES\x01\x01" + bytes(i % 130), b"\x00" * i])
        deadline = time.monotonic() + 5
        while rx.stats.malformed < 100 and time.monotonic() < deadline:
            rx.recv_newest(20)
        pub.close(0)
        ctx.term()
        assert rx.stats.malformed >= 100
        proc = subprocess.Popen([sys.executable, "-c", _doc_client(rx.endpoint)])
        again = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(again) < 5:
            again += rx.recv_newest(50)
        proc.kill()
        proc.wait()
        assert len(again) >= 5 and rx.stats.streams[0].restarts >= 1
