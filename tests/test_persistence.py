"""The detection persistence filter on synthetic decision sequences."""

from __future__ import annotations

import pytest

from conftest import need_data

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
    with pytest.raises(ValueError, match="min_presence"):
        StreamFilters(min_presence=1.5)


def test_min_presence_counts_a_doubtful_detection_as_none() -> None:
    """A mask with presence below min_presence is not shown and does not confirm the stream."""
    sf = StreamFilters(n=2, m=3, hold=2, min_presence=0.9)
    assert [sf.update(0, True, 0.95), sf.update(0, True, 0.6), sf.update(0, True, 0.6)] == [False, False, False]
    assert [sf.update(0, True, 0.95), sf.update(0, True, 0.95)] == [False, True]  # two confident ones in 3
    assert sf.update(0, True, 0.6) is False  # confirmed, but this frame's mask is doubtful: hidden
    assert sf.update(0, True, 0.97) is True  # one miss < hold: still confirmed
    with pytest.raises(ValueError, match="n <= m"):
        StreamFilters(n=4, m=3)


def test_live_inference_holds_back_an_unconfirmed_detection() -> None:
    """Wired into the consumer's inference stage with the shipped weights on a real polyp frame:
    the first n-1 detections of a stream are hidden (held back), the n-th is shown, and a new
    stream (or producer epoch) starts unconfirmed again."""
    import time
    from pathlib import Path

    import cv2
    from omegaconf import OmegaConf

    from endostream.cli import config_dir
    from endostream.consumer.worker import Inference, ModelRouter, modality_spec
    from endostream.types import Frame

    root = Path(__file__).resolve().parents[1]
    path = need_data("cvc-clinicdb/images/1.png")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    spec = modality_spec(OmegaConf.load(config_dir() / "modality" / "colonoscopy.yaml"))
    router = ModelRouter(spec, {"weights": str(root / "weights" / "polyp.pt"), "backend": "onnxruntime",
                                "threads": 1}, config_dir())
    inf = Inference(router, filters=StreamFilters(n=3, m=5, hold=2))
    results = [inf.run(Frame(stream_id=0, seq=i, t_capture_ns=time.monotonic_ns(), image=img), epoch=1)
               for i in range(4)]
    assert all(r is not None and r.prediction.presence > 0.5 for r in results)  # the model sees the polyp
    shown = [bool(r.prediction.mask.any()) for r in results]
    held = [r.prediction.held_back for r in results]
    assert shown == [False, False, True, True] and held == [True, True, False, False]
    assert results[0].prediction.box is None
    again = inf.run(Frame(stream_id=0, seq=0, t_capture_ns=time.monotonic_ns(), image=img), epoch=2)
    assert again is not None and again.prediction.held_back  # a restarted producer confirms again
