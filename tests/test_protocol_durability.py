"""Lossless durability with real processes: the consumer acknowledges a frame only when every
sink holds it durably, so after SIGKILLs and restarts the journal, the mask PNGs and the MP4
files together hold every frame exactly once (issue 15, item 6).

``ENDOSTREAM_KILLS`` sets how many times the consumer is killed (default 3).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import av

from conftest import CONSUME_FAST, cli, free_endpoint, make_clip, read_rows, summary, wait_for


def _mp4_frames(out: Path) -> list[tuple[int, int, int]]:
    """(stream, seq, t) of every frame the MP4 files really hold: the first N lines of each
    file's .idx sidecar, N = frames PyAV decodes from that file."""
    held: list[tuple[int, int, int]] = []
    for mp4 in sorted(out.glob("overlay*.mp4")):
        with av.open(str(mp4)) as c:
            n = sum(1 for _ in c.decode(video=0))
        lines = Path(str(mp4) + ".idx").read_text().splitlines()
        assert len(lines) >= n, f"{mp4.name}: {n} frames but {len(lines)} index lines"
        held += [tuple(int(x) for x in ln.split()) for ln in lines[:n]]
    return held


def test_lossless_consumer_killed_repeatedly_mp4_holds_every_frame_once(tmp_path, procs, clip_dir):
    kills = int(os.environ.get("ENDOSTREAM_KILLS", "3"))
    # Enough frames that every kill lands inside the stream (as in test_faults.py): on the AMX Xeon
    # 40 frames were through before the third kill, and the last consumer left on its idle timeout.
    n = max(120, 30 * kills)
    clip = make_clip(clip_dir / f"durable{n}.mp4", n)
    ep, out = free_endpoint(), tmp_path / "out"
    consume = cli("consume", "transport.mode=lossless", f"transport.endpoint={ep}", f"out={out}",
                  "idle_timeout_s=20", "sink=[video,masks]", *CONSUME_FAST)
    prod = procs(cli("produce", f"source.uri={clip}", "transport.mode=lossless",
                     f"transport.endpoint={ep}", "pace=fast",
                     "transport.lossless.drain_timeout_s=600"),  # restarts are slow on a loaded machine
                tmp_path / "produce.log")
    rng = random.Random(1)
    for k in range(kills):
        con = procs(consume, tmp_path / f"consume{k}.log")
        before = len(read_rows(out / "frames.csv"))
        wait_for(lambda: len(read_rows(out / "frames.csv")) >= before + 3 or con.p.poll() is not None,
                 90, f"progress before kill {k + 1}")
        time.sleep(rng.uniform(0.0, 0.15))  # land the kill anywhere in the frame's path
        con.p.send_signal(signal.SIGKILL)
        con.p.wait()
    last = procs(consume, tmp_path / "consume_last.log")
    assert prod.wait(600) == 0, prod.text()
    assert last.wait(120) == 0, last.text()

    seqs = [int(r["seq"]) for r in read_rows(out / "frames.csv")]
    assert sorted(seqs) == list(range(n)), f"journal: lost {sorted(set(range(n)) - set(seqs))}, " \
                                           f"duplicated {sorted({x for x in seqs if seqs.count(x) > 1})}"
    assert len(list((out / "masks").glob("s0_*.png"))) == n
    held = _mp4_frames(out)
    held_seqs = [s for _, s, _ in held]
    assert len(list(out.glob("overlay*.mp4"))) >= 2  # the killed runs' files and the last one
    assert sorted(held_seqs) == list(range(n)), \
        f"MP4 files: {len(held_seqs)} frames; lost {sorted(set(range(n)) - set(held_seqs))}, " \
        f"duplicated {sorted({x for x in held_seqs if held_seqs.count(x) > 1})}"
    assert summary(out)["exit_reason"] == "end of stream"
