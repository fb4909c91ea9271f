"""The detection persistence filter on synthetic decision sequences."""

from __future__ import annotations

import pytest

from endostream.consumer.persistence import PersistenceFilter, StreamFilters


def run(f: PersistenceFilter, seq: str) -> str:
    return "".join("1" if f.update(c == "1") else "0" for c in seq)


def test_short_blips_never_show_and_a_lasting_polyp_shows_on_its_nth_frame() -> None:
    f = PersistenceFilter(n=3, m=5, hold=3)
    assert run(f, "0100000110000") == "0000000000000"  # blips of 1-2 frames: hidden
    f.reset()
    assert run(f, "0100100110000") == "0000000010000"  # but 3 detections within 5 frames confirm
    f.reset()
    assert run(f, "00111111") == "00001111"  # shown from the third frame of the polyp


def test_one_frame_dropout_does_not_need_reconfirmation_but_a_long_gap_does() -> None:
    f = PersistenceFilter(n=3, m=5, hold=3)
    assert run(f, "1111011") == "0011011"  # a dropout: the mask is hidden that frame only
    f.reset()
    assert run(f, "111" + "000" + "111") == "001" + "000" + "001"  # hold=3 misses: confirm again


def test_n_of_m_counts_non_consecutive_frames() -> None:
    f = PersistenceFilter(n=3, m=5, hold=3)
    assert run(f, "10101") == "00001"


def test_filter_never_shows_a_frame_without_a_detection() -> None:
    f = PersistenceFilter(n=1, m=1, hold=5)
    seq = "1100110001"
    assert run(f, seq) == seq  # n=1 of m=1 is the unfiltered model


def test_stream_filters_keep_streams_apart_and_validate() -> None:
    sf = StreamFilters(n=2, m=2, hold=1)
    assert [sf.update(0, True), sf.update(1, True), sf.update(0, True), sf.update(1, False)] == [False, False, True, False]
    off = StreamFilters(enabled=False)
    assert off.update(0, True) is True
    with pytest.raises(ValueError, match="n <= m"):
        StreamFilters(n=4, m=3)
