"""Producer: source -> wire -> transport. `endostream produce ...` runs ``run(cfg)``.

Live mode never blocks (a frame the socket refuses is dropped and counted); lossless mode
waits while its window of unacknowledged frames is full, and at the end waits until the
consumer acknowledged everything, end-of-stream included.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

from endostream.protocol.transport import LiveSender, LosslessSender, open_sender
from endostream.types import Frame

log = logging.getLogger(__name__)


def run_producer(frames: Iterable[Frame], sender: LiveSender | LosslessSender, *,
                 pace_fps: float | None = None, drain_timeout_s: float = 60.0,
                 eos_wait_s: float = 5.0) -> dict:
    """Send every frame, then end each stream. Returns counts and rates.

    ``pace_fps``: sleep to this rate (for sources that are not paced themselves); frames
    are due at t0 + i / fps, so a late frame does not shift all later ones.
    ``drain_timeout_s``: lossless: how long one frame or the final acknowledgement may wait
    for the consumer before TimeoutError.
    ``eos_wait_s``: live: how long end-of-stream is retried while the send queue is full (a
    slow consumer of large frames); then it is given up with a warning.
    """
    lossless = isinstance(sender, LosslessSender)
    streams: set[int] = set()
    t0 = time.monotonic()
    n = 0
    for n, frame in enumerate(frames, start=1):
        if pace_fps:
            delay = t0 + (n - 1) / pace_fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        streams.add(frame.stream_id)
        if lossless:
            sender.send(frame, timeout_s=drain_timeout_s)
        else:
            sender.send(frame)
    for sid in sorted(streams):
        if lossless:
            if not sender.end_stream(sid, timeout_s=drain_timeout_s):
                raise TimeoutError(f"consumer did not acknowledge stream {sid} within "
                                   f"{drain_timeout_s:.0f} s ({sender.outstanding} outstanding)")
        elif not sender.end_stream(sid, wait_s=eos_wait_s):
            log.warning("stream %d: end-of-stream refused by the full send queue for %.1f s; "
                        "the consumer will stop on its idle timeout", sid, eos_wait_s)
    seconds = time.monotonic() - t0
    st = sender.stats
    return {"frames": n, "frames_sent": n if lossless else st.sent,
            "frames_refused": st.refused, "frames_resent": st.resent,
            "seconds": round(seconds, 3), "fps": round(n / seconds, 2) if seconds > 0 else 0.0,
            "epoch": sender.epoch}


def _source_kwargs(cfg) -> dict:
    """The source group's open_source() kwargs, with the command's top-level overrides."""
    from omegaconf import OmegaConf

    kw = OmegaConf.to_container(cfg.source, resolve=True)
    if kw.get("uri") in (None, "???", ""):
        raise ValueError("no source: pass source.uri=<file, URL, device or folder>")
    if cfg.get("pace") is not None:
        if cfg.pace not in ("native", "fast"):
            raise ValueError(f"pace={cfg.pace!r}; expected native or fast")
        kw["pace"] = cfg.pace == "native"
    for key in ("loop", "stream_id", "modality", "max_frames"):
        if cfg.get(key) is not None:
            kw[key] = cfg[key]
    return kw


def run(cfg) -> int:
    """`endostream produce source.uri=... transport.mode=live|lossless codec=raw|jpeg ...`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from omegaconf import OmegaConf

    OmegaConf.set_readonly(cfg, False)
    from endostream.capture.sources import open_source

    frames = open_source(**_source_kwargs(cfg))  # a missing/corrupt file fails here, one line
    with open_sender(cfg.transport, codec=cfg.codec, jpeg_quality=int(cfg.jpeg_quality),
                     send_mask=bool(cfg.send_gt)) as sender:
        summary = run_producer(frames, sender,
                               drain_timeout_s=float(cfg.transport.lossless.drain_timeout_s))
    summary["mode"] = cfg.transport.mode
    print(json.dumps(summary))
    return 0
