"""Frames for a benchmark: any source ``open_source`` reads (the bundled clip, a video, a
folder), looped to the requested count, or generated frames of a chosen size and rate.

Generated frames look like endoscopy to the pipeline (a bright disc on black, so the
field-of-view crop does real work, with moving texture, so JPEG sizes are realistic) and
cost nothing to read, which isolates transport and model costs from video decoding.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from endostream.types import Frame

SYNTHETIC = "synthetic"


def synthetic_frames(*, width: int, height: int, fps: float, count: int, pace: bool = True,
                     stream_id: int = 0, modality: str = "colonoscopy") -> Iterator[Frame]:
    """``count`` HxWx3 uint8 BGR frames, stamped at grab like ``open_source``'s, paced to
    ``fps`` on a fixed schedule (due times from the start: a late frame does not drift)."""
    import cv2

    rng = np.random.default_rng(stream_id)
    base = rng.integers(40, 200, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    base = cv2.resize(base, (width + 64, height + 64), interpolation=cv2.INTER_CUBIC)
    disc = np.zeros((height, width), np.uint8)
    cv2.circle(disc, (width // 2, height // 2), int(min(width, height) * 0.47), 255, -1)
    period_ns = int(1e9 / fps)
    t0 = time.monotonic_ns()
    for seq in range(count):
        dx, dy = seq % 64, (seq * 3) % 64  # a slow pan: every frame differs
        img = cv2.bitwise_and(base[dy:dy + height, dx:dx + width], base[dy:dy + height, dx:dx + width],
                              mask=disc)
        if pace:
            delay = t0 + seq * period_ns - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
        t = time.monotonic_ns()
        yield Frame(stream_id=stream_id, seq=seq, t_capture_ns=t, image=img, modality=modality,
                    stamps_ns={"grab": t})


def open_frames(source: dict[str, Any], synthetic: dict[str, Any], *, count: int, pace: bool,
                stream_id: int) -> Iterator[Frame]:
    """``source``: the ``configs/source`` block (``uri: synthetic`` for generated frames);
    files loop until ``count`` frames were produced."""
    modality = str(source.get("modality") or "colonoscopy")
    if str(source.get("uri")) == SYNTHETIC:
        return synthetic_frames(width=int(synthetic["width"]), height=int(synthetic["height"]),
                                fps=float(synthetic["fps"]), count=count, pace=pace,
                                stream_id=stream_id, modality=modality)
    from endostream.capture.sources import open_source

    kw = {k: v for k, v in source.items() if k not in ("pace", "loop", "max_frames", "stream_id")}
    return open_source(**kw, pace=pace, loop=True, max_frames=count, stream_id=stream_id)


def describe(source: dict[str, Any], synthetic: dict[str, Any]) -> dict[str, Any]:
    """What the report records about the source."""
    if str(source.get("uri")) == SYNTHETIC:
        return {"uri": SYNTHETIC, **{k: synthetic[k] for k in ("width", "height", "fps")}}
    out: dict[str, Any] = {"uri": str(source.get("uri")), "fps_override": source.get("fps")}
    try:
        import av

        with av.open(str(source["uri"])) as c:
            s = c.streams.video[0]
            out.update(width=s.codec_context.width, height=s.codec_context.height,
                       fps=float(s.average_rate or 0), codec=s.codec_context.name)
    except Exception:  # noqa: BLE001 - a folder or a device has no container to describe
        pass
    return out
