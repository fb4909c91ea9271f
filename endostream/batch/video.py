"""One video through the segmenter, every frame in order, into ``OUT/<name>/``.

Runs inside a worker (the main process, a pool process or a Ray actor). The folder is built
under a hidden temporary name and renamed into place only when complete, so ``OUT/<name>/``
is either absent, a finished result, or a failure record (``summary.json`` with the error);
never half a video. Everything the model sees is the same as the live path: the shared
Segmenter with its temporal memory and warm start, reset per video with a fixed stream id so
the (stream-seeded) noise, and therefore every mask, is the same whichever worker runs it.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from endostream.batch.inputs import VideoJob

STREAM_ID = 0  # fixed per video: the segmenter seeds its noise from the stream id
# mean_uncertainty: Prediction.mean_uncertainty, empty unless model.uncertainty_samples >= 2
CSV_COLUMNS = ("frame", "timestamp_s", "presence", "gated", "x0", "y0", "x1", "y1", "mask_area_px", "mean_uncertainty")
PROGRESS_EVERY_S = 0.5  # progress reports cross processes; a few per second is plenty


@dataclass
class VideoOptions:
    """What to write per video. ``mask_pngs``: one PNG per frame under ``masks/``;
    ``mask_video``: also ``masks.mkv`` (lossless FFV1 gray, readable as ground truth by
    sources.py); ``crf``: overlay H.264 quality; ``opacity``/``color``: overlay drawing."""

    mask_pngs: bool = True
    mask_video: bool = False
    crf: int = 23
    opacity: float = 0.4
    color: tuple[int, int, int] = (0, 220, 0)
    settings: dict[str, Any] = field(default_factory=dict)  # recorded; re-run skips only on a match


class MaskVideoWriter:
    """Binary masks as a lossless gray FFV1 ``.mkv`` (0/255), one video frame per input frame."""

    def __init__(self, path: Path, fps: float) -> None:
        import av
        from fractions import Fraction

        self._c = av.open(str(path), "w")
        self._s = self._c.add_stream("ffv1", rate=Fraction(fps).limit_denominator(1001))
        self._s.pix_fmt = "gray"
        self._n = 0

    def write(self, mask: np.ndarray) -> None:
        import av

        if self._n == 0:
            self._s.height, self._s.width = mask.shape
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(mask.astype(np.uint8) * 255), format="gray")
        vf.pts = self._n
        for pkt in self._s.encode(vf):
            self._c.mux(pkt)
        self._n += 1

    def close(self) -> None:
        if self._n:
            for pkt in self._s.encode():
                self._c.mux(pkt)
        self._c.close()


def _video_fps(path: str) -> float:
    import av

    with av.open(path) as c:
        rate = c.streams.video[0].average_rate or c.streams.video[0].guessed_rate
    return float(rate) if rate else 25.0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    from endostream.capture.sources import SourceError

    return msg if isinstance(exc, (SourceError, OSError)) and msg else f"{type(exc).__name__}: {msg}"


def publish(tmp: Path, final: Path) -> None:
    """Put the finished ``tmp`` folder at ``final``, replacing an older result (rename is atomic
    on one filesystem; the old folder is moved aside first and deleted after)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    from endostream.fileutil import atomic_write_json

    atomic_write_json(folder / "summary.json", summary)


class VideoStopped(BaseException):
    """The job was asked to stop mid-video (SIGINT/SIGTERM): the partial result is discarded
    and the video stays pending. A BaseException so no ``except Exception`` records it as a
    failed video."""


class BatchWorker:
    """Loads the model once; ``run(job)`` processes one whole video and returns its summary."""

    def __init__(self, model_cfg: dict[str, Any], options: VideoOptions, out_root: str,
                 executor: str = "local") -> None:
        from endostream.inference.segmenter import load_segmenter

        self.seg = load_segmenter(**model_cfg)
        self.threads = int(model_cfg.get("threads", 1))
        self.opts, self.out_root, self.executor = options, Path(out_root), executor
        self.actor_id: str | None = None  # set by the Ray wrapper

    def run(self, job: VideoJob | dict[str, Any], progress: Callable[[int], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Process ``job``; never raises for a bad video (the summary says ``failed`` and why).
        ``should_stop`` is asked before every frame: when it says so the partial folder is
        removed and the result says ``interrupted`` (nothing is published; the video stays
        pending for the next run)."""
        job = VideoJob(**job) if isinstance(job, dict) else job
        stopped = {"status": "interrupted", "name": job.name, "input": job.input, "frames": 0}
        if should_stop is not None and should_stop():
            return stopped
        tmp = self.out_root / f".{job.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        base = {"name": job.name, "input": job.input, "gt": job.gt, "fingerprint": job.fingerprint,
                **self._model_info(), "worker": self._worker_info()}
        counter = _Progress(progress)
        t0 = time.perf_counter()
        try:
            stats = self._segment_video(job, tmp, counter, should_stop)
            summary = {"status": "done", **base, **stats, "errors": []}
        except VideoStopped:
            shutil.rmtree(tmp, ignore_errors=True)
            return {**stopped, "frames": counter.total}
        except Exception as exc:  # noqa: BLE001 - a bad video must not stop the job
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            summary = {"status": "failed", **base, "frames": counter.total, "errors": [_one_line(exc)]}
        finally:
            counter.flush()
        summary["elapsed_s"] = round(time.perf_counter() - t0, 3)
        write_summary(tmp, summary)
        publish(tmp, self.out_root / job.name)
        return summary

    def _model_info(self) -> dict[str, Any]:
        info = self.seg.info
        return {"kind": info.get("kind", "diffusion"), "weights_sha256": info.get("weights_sha256"),
                "backend": info.get("backend"),
                "steps": info.get("steps"), "warm_start": info.get("warm_start"),
                "trained": info.get("trained"), "threads": self.threads, "settings": self.opts.settings}

    def _worker_info(self) -> dict[str, Any]:
        return {"executor": self.executor, "host": socket.gethostname(), "pid": os.getpid(),
                "actor_id": self.actor_id}

    def _segment_video(self, job: VideoJob, folder: Path, counter: _Progress,
                       should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
        from endostream.consumer.overlay import HudInfo, draw_overlay
        from endostream.consumer.sinks import MaskSink, VideoSink
        from endostream.capture.sources import open_source

        frames = open_source(job.input, gt=job.gt)  # raises SourceError for an unreadable file
        fps = _video_fps(job.input)
        opts = self.opts
        info = self.seg.info  # a single-pass model's note says what it lacks (no presence gate, ...)
        hud = HudInfo(note=" | ".join(n for n in ("" if info.get("trained", True) else "UNTRAINED WEIGHTS",
                                                   info.get("hud_note", "")) if n))
        video = VideoSink(str(folder / "overlay.mp4"), fps=fps, crf=opts.crf)
        masks = MaskSink(str(folder / "masks")) if opts.mask_pngs else None
        mask_video = MaskVideoWriter(folder / "masks.mkv", fps) if opts.mask_video else None
        metrics = None  # imported on the first ground-truth frame: scipy's import costs seconds
        present = 0
        self.seg.reset(STREAM_ID)
        t0 = time.perf_counter()
        with open(folder / "detections.csv", "w", newline="") as fh:
            rows = csv.writer(fh)
            rows.writerow(CSV_COLUMNS)
            try:
                for frame in frames:
                    if should_stop is not None and should_stop():
                        raise VideoStopped(job.name)
                    pred = self.seg.segment(frame.image, STREAM_ID)
                    overlay = draw_overlay(frame.image, pred, hud=hud, opacity=opts.opacity, color=opts.color)
                    video.write(frame, overlay, pred)
                    if masks is not None:
                        masks.write(frame, overlay, pred)
                    if mask_video is not None:
                        mask_video.write(pred.mask)
                    if frame.gt_mask is not None:
                        if metrics is None:
                            from endostream.training.metrics import VideoMetrics

                            metrics = VideoMetrics()
                        metrics.add(job.name, pred.prob, frame.gt_mask)
                    present += not pred.gated
                    box = pred.box or ("", "", "", "")
                    unc = pred.mean_uncertainty  # once: it averages over the frame
                    rows.writerow([frame.seq, f"{frame.seq / fps:.4f}", f"{pred.presence:.6f}", int(pred.gated),
                                   *box, pred.area_px,
                                   "" if unc is None else f"{unc:.5f}"])
                    counter.add(1)
            finally:
                video.close()
                if mask_video is not None:
                    mask_video.close()
        wall = time.perf_counter() - t0
        n = counter.total
        out: dict[str, Any] = {
            "frames": n, "video_fps": round(fps, 3), "duration_s": round(n / fps, 3),
            "fps_achieved": round(n / wall, 2) if wall > 0 else None,
            "realtime_factor": round(n / wall / fps, 3) if wall > 0 else None,
            "polyp_present_frames": present, "polyp_present_s": round(present / fps, 3),
            "outputs": ["overlay.mp4", "detections.csv", "summary.json"]
                       + (["masks/"] if masks is not None else []) + (["masks.mkv"] if mask_video else []),
        }
        if metrics is not None and metrics.frames:
            out["metrics"] = {k: v for k, v in metrics.summary().items() if k != "sequences"}
        return out


class _Progress:
    """Counts frames and forwards them to ``report`` at most every PROGRESS_EVERY_S seconds."""

    def __init__(self, report: Callable[[int], None] | None) -> None:
        self.report, self.total, self._unsent, self._last = report, 0, 0, time.monotonic()

    def add(self, n: int) -> None:
        self.total += n
        self._unsent += n
        if self.report is not None and time.monotonic() - self._last >= PROGRESS_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.report is not None and self._unsent:
            self.report(self._unsent)
        self._unsent, self._last = 0, time.monotonic()


