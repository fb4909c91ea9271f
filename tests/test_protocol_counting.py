"""Counting follows docs/PROTOCOL.md: any first seq, counted from the first seq seen."""

from __future__ import annotations

import numpy as np

from endostream.consumer.telemetry import Telemetry
from endostream.types import Frame


def test_stream_starting_at_5000_is_100_sent_not_5100():
    tel = Telemetry()
    for seq in range(5000, 5100):
        tel.on_frame(Frame(0, seq, seq, np.zeros((2, 2, 3), np.uint8)), epoch=7)
    tel.on_end(0, 7, 5100)
    assert tel.frames_sent == 100


def test_gaps_after_the_first_seq_still_count():
    tel = Telemetry()
    for seq in (10, 11, 15):
        tel.on_frame(Frame(0, seq, seq, np.zeros((2, 2, 3), np.uint8)), epoch=1)
    assert tel.frames_sent == 6  # 10..15
