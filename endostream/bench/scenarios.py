"""Benchmark scenarios, each one run of the real parts, returning per-frame records.

transport  producer process(es) -> ZeroMQ -> receiver loop here; no model. Ends at ``decode``.
model      preprocess + model (Segmenter.segment) on frames held in memory, back to back.
pipeline   producer process(es) -> the real Consumer (endostream.consumer.app): receive, decode,
           segment, overlay, sinks. Ends at ``sink`` (the sink has written the frame).
           ``producers > 1`` is the "multi" scenario (N producers into one consumer).

Producers run as separate processes (spawned), as in deployment: they then neither share the
consumer's GIL nor its clock problems (``time.monotonic_ns`` is one system-wide clock).
They ignore a terminal's SIGINT: the bench decides, sets :data:`STOP`, and every running
scenario ends after its frame (producers send end-of-stream and report what they sent).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from endostream.interrupt import children_ignore_sigint

# Keys of the consumer's flat record rows that are stage stamps (everything else is metadata).
_NOT_STAMPS = {"stream_id", "epoch", "seq", "newest_seq", "t_capture_ns", "latency_ms", "mask_seq",
               "mask_age_ms", "paused", "dice", "presence", "gated", "batch"}


# Set from the bench's SIGINT/SIGTERM handler: the running scenario ends after its frame.
STOP = threading.Event()
_STOP_POLL_S = 0.1


def _when_stopped(done: threading.Event, *actions: Callable[[], None]) -> None:
    """Runs ``actions`` once if STOP is set before ``done``; from a thread, because a signal
    handler must not take the locks the main thread may hold."""
    def watch() -> None:
        while not done.is_set():
            if STOP.wait(_STOP_POLL_S):
                for action in actions:
                    action()
                return

    threading.Thread(target=watch, name="bench-stop", daemon=True).start()


@dataclass
class RunResult:
    """One scenario run. ``records``: the end-to-end path, one per frame that reached ``end``:
    {stream_id, seq, t_capture_ns, stamps_ns, extra}. ``model_records``: live pipeline only,
    the model branch (which runs beside the display path on the newest frame)."""

    scenario: str
    mode: str
    end: str
    records: list[dict[str, Any]]
    frames_sent: int
    frames_processed: int
    frames_shown: int | None = None
    model_records: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def free_endpoint() -> str:
    """A loopback TCP endpoint on a free port (parallel runs and tests must not collide)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _row_to_record(row: dict[str, Any]) -> dict[str, Any]:
    stamps = {k: int(v) for k, v in row.items() if k not in _NOT_STAMPS and v not in (None, "")}
    extra = {k: row[k] for k in ("mask_seq", "mask_age_ms", "paused", "presence", "batch") if k in row}
    if row.get("dice") not in (None, ""):  # the shown mask against streamed ground truth
        extra["dice"] = float(row["dice"])
    return {"stream_id": int(row["stream_id"]), "seq": int(row["seq"]),
            "t_capture_ns": int(row["t_capture_ns"]), "stamps_ns": stamps, "extra": extra}


# ----------------------------------------------------------------------------- producers


def _producer_main(args: dict[str, Any], results: Any) -> None:
    """Child process: open the source, connect, send ``count`` frames, report counts."""
    from endostream.bench.source import open_frames
    from endostream.capture.producer import run_producer
    from endostream.protocol.factory import open_sender

    try:
        frames = open_frames(args["source"], args["synthetic"], count=args["count"],
                             pace=args["pace"], stream_id=args["stream_id"])
        if args.get("duration_s"):  # soak: stream for a time instead of a count
            deadline = time.monotonic() + float(args["duration_s"])
            frames = itertools.takewhile(lambda _: time.monotonic() < deadline, frames)
        stop = args.get("stop")
        if stop is not None:  # the bench was interrupted: end the stream after this frame
            frames = itertools.takewhile(lambda _: not stop.is_set(), frames)
        with open_sender(args["transport"], codec=args["codec"], jpeg_quality=args["jpeg_quality"],
                         send_mask=bool(args.get("send_gt"))) as sender:
            time.sleep(args["connect_wait_s"])  # PUB/SUB: frames before the subscription are lost
            summary = run_producer(frames, sender, drain_timeout_s=args["drain_timeout_s"])
        results.put({"stream_id": args["stream_id"], **summary})
    except Exception as exc:  # noqa: BLE001 - report, the parent turns it into an error
        results.put({"stream_id": args["stream_id"], "error": f"{type(exc).__name__}: {exc}"})


class Producers:
    """N producer processes (stream ids 0..N-1), started after the receiver has bound."""

    def __init__(self, n: int, base_args: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")  # no fork after onnxruntime/torch started threads
        self.results, self.stop, self._done = ctx.Queue(), ctx.Event(), threading.Event()
        self.procs = [ctx.Process(target=_producer_main, args=({**base_args, "stream_id": i, "stop": self.stop},
                                                               self.results), daemon=True) for i in range(n)]

    def start(self) -> None:
        with children_ignore_sigint():
            for p in self.procs:
                p.start()
        _when_stopped(self._done, self.stop.set)

    def join(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        out = []
        self._done.set()
        for _ in self.procs:
            try:
                out.append(self.results.get(timeout=timeout_s))
            except Exception:  # noqa: BLE001 - queue.Empty: a producer died silently
                break
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
        errors = [r["error"] for r in out if "error" in r]
        if errors or len(out) < len(self.procs):
            raise RuntimeError(f"producer failed: {errors or 'no report'}")
        return out


def _producer_args(cfg: Any, transport: dict[str, Any], count: int) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return {"source": OmegaConf.to_container(cfg.source, resolve=True),
            "synthetic": OmegaConf.to_container(cfg.synthetic, resolve=True),
            "count": count, "pace": cfg.pace == "native", "transport": transport,
            "codec": str(cfg.codec), "jpeg_quality": int(cfg.jpeg_quality), "send_gt": bool(cfg.get("send_gt")),
            "connect_wait_s": float(cfg.connect_wait_s),
            "drain_timeout_s": float(transport["lossless"]["drain_timeout_s"])}


def _transport_block(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    t = OmegaConf.to_container(cfg.transport, resolve=True)
    t["mode"] = str(cfg.mode)
    t["endpoint"] = t.get("endpoint") or free_endpoint()
    return t


# ----------------------------------------------------------------------------- scenarios


def run_transport(cfg: Any, progress: Callable[[int], None]) -> RunResult:
    """Producer(s) -> receiver, no model: what the wire and the sockets cost."""
    from endostream.protocol.factory import open_receiver
    from endostream.protocol.live import LiveReceiver
    from endostream.protocol.wire import EndOfStream

    tb = _transport_block(cfg)
    n, count = int(cfg.producers), int(cfg.frames)
    records: list[dict[str, Any]] = []
    ended: set[int] = set()
    with open_receiver(tb) as rx:
        prods = Producers(n, _producer_args(cfg, tb, count))
        prods.start()
        last = time.monotonic()
        while len(ended) < n and time.monotonic() - last < float(cfg.idle_timeout_s) and not STOP.is_set():
            if isinstance(rx, LiveReceiver):
                msgs = rx.recv_newest(50)
                ended |= {sid for sid, st in rx.stats.streams.items() if st.ended}
            else:
                m = rx.recv(50)
                msgs = [] if m is None else [m]
                if isinstance(m, EndOfStream):
                    ended.add(m.stream_id)
                    rx.ack_message(m)
                    msgs = []
            for m in msgs:
                f = m.frame
                records.append({"stream_id": f.stream_id, "seq": f.seq, "t_capture_ns": f.t_capture_ns,
                                "stamps_ns": dict(f.stamps_ns), "extra": {}})
                if not isinstance(rx, LiveReceiver):
                    rx.ack_message(m)
                progress(1)
            if msgs:
                last = time.monotonic()
        sent = sum(r["frames_sent"] for r in prods.join())
    return RunResult("transport", str(cfg.mode), "decode", records, sent, len(records))


def _model_kwargs(cfg: Any, modality: str) -> dict[str, Any]:
    """The consumer's kwargs for the modality's model, with the bench's non-null overrides."""
    from omegaconf import OmegaConf

    from endostream.cli import config_dir
    from endostream.consumer.worker import modality_spec, segmenter_kwargs

    spec = modality_spec(OmegaConf.load(config_dir() / "modality" / f"{modality}.yaml"))
    return segmenter_kwargs(config_dir(), spec, OmegaConf.to_container(cfg.model, resolve=True))


def run_model(cfg: Any, progress: Callable[[int], None]) -> RunResult:
    """Preprocess + model only, frames already decoded in memory, one after another."""
    from omegaconf import OmegaConf

    from endostream.bench.source import open_frames
    from endostream.inference.segmenter import load_segmenter

    src = OmegaConf.to_container(cfg.source, resolve=True)
    modality = str(src.get("modality") or "colonoscopy")
    seg = load_segmenter(**_model_kwargs(cfg, modality))
    # At most 64 distinct frames in memory (1080p x 300 would be 1.8 GB); they are cycled.
    images = [f.image for f in open_frames(src, OmegaConf.to_container(cfg.synthetic, resolve=True),
                                           count=min(64, int(cfg.frames)), pace=False, stream_id=0)]
    records = []
    for i in range(int(cfg.frames)):
        if STOP.is_set():
            break
        t0 = time.monotonic_ns()
        pred = seg.segment(images[i % len(images)], 0)
        records.append({"stream_id": 0, "seq": i, "t_capture_ns": t0,
                        "stamps_ns": {"infer_start": t0, **pred.stages_ns}, "extra": {}})
        progress(1)
    return RunResult("model", "offline", "postprocess", records, len(records), len(records),
                     info={**seg.info, "kind": seg.info.get("kind", "diffusion"), "model_file": seg.info.get("weights")})


def _consume_cfg(cfg: Any, tb: dict[str, Any], work: Path, modality: str) -> Any:
    """The ``consume`` config this run's consumer is built from: the bench's transport, model,
    sinks and slow-down, with outputs in a scratch folder (a fresh one: no lossless resume)."""
    from omegaconf import OmegaConf

    from endostream.cli import compose

    sinks = list(cfg.sinks) if not isinstance(cfg.sinks, str) else [cfg.sinks]
    c = compose("consume", [f"sink=[{','.join(sinks)}]", f"modality={modality}"])
    OmegaConf.set_struct(c, False)
    c.transport = OmegaConf.create(tb)
    c.out = str(work)
    c.records = False  # rows still reach our callback; no CSV writes inside the timed path
    c.min_streams = int(cfg.producers)
    c.idle_timeout_s = float(cfg.idle_timeout_s)
    c.infer_delay_ms = float(cfg.infer_delay_ms)
    c.log_level = "WARNING"
    for k, v in OmegaConf.to_container(cfg.model, resolve=True).items():
        c.model[k] = v
    if cfg.get("wait_ms") is not None:
        c.overlay.wait_ms = float(cfg.wait_ms)
    if cfg.get("wait_policy") is not None:
        c.overlay.wait_policy = str(cfg.wait_policy)
    if cfg.get("max_model_load") is not None:
        c.overlay.max_model_load = float(cfg.max_model_load) if float(cfg.max_model_load) > 0 else None
    for spec in c.sink.values():  # file sinks write into the scratch folder
        if isinstance(spec, dict) or OmegaConf.is_dict(spec):
            for key in ("path", "folder"):
                if spec.get(key):
                    spec[key] = str(work / Path(str(spec[key])).name)
    return c


def run_pipeline(cfg: Any, progress: Callable[[int], None]) -> RunResult:
    """Producer(s) -> the real consumer (transport, decode, model, overlay, sinks)."""
    from omegaconf import OmegaConf

    from endostream.consumer.app import build

    tb = _transport_block(cfg)
    src = OmegaConf.to_container(cfg.source, resolve=True)
    modality = str(src.get("modality") or "colonoscopy")
    Path(str(cfg.out)).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=str(cfg.out)))
    shown: list[dict[str, Any]] = []
    inferred: list[dict[str, Any]] = []

    def on_record(kind: str, row: dict[str, Any]) -> None:
        (shown if kind == "shown" else inferred).append(_row_to_record(row))
        if kind == "shown":
            progress(1)

    try:
        consumer, _, _ = build(_consume_cfg(cfg, tb, work, modality), on_record=on_record)
        prods = Producers(int(cfg.producers), _producer_args(cfg, tb, int(cfg.frames)))
        prods.start()
        running = threading.Event()
        _when_stopped(running, lambda: setattr(consumer, "stop_requested", True))
        try:
            summary = consumer.run()
        finally:
            running.set()
            consumer.rx.close()
        reports = prods.join()
        sent = sum(r["frames_sent"] for r in reports)
    finally:
        if not cfg.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    mode = str(cfg.mode)
    info = {k: summary.get(k) for k in ("weights_sha256", "backend", "steps", "trained")}
    first_model = (summary.get("models") or [{}])[0]
    info.update(kind=first_model.get("kind", "diffusion"), model_file=first_model.get("weights"))
    info.update(consumer_summary={k: summary.get(k) for k in
                                  ("frames_sent", "frames_received", "frames_shown", "frames_processed",
                                   "frames_dropped", "frames_paused", "errors", "exit_reason", "fps",
                                   "same_frame", "inference_batch", "hud_note",
                                   "rooms", "fairness", "missed_deadlines", "timeline")},
                sent_per_stream={int(r["stream_id"]): int(r["frames_sent"]) for r in reports})
    return RunResult("pipeline" if int(cfg.producers) == 1 else "multi", mode, "sink", shown, sent,
                     int(summary["frames_processed"]), frames_shown=int(summary["frames_shown"]),
                     model_records=inferred if mode == "live" else [], info=info)


SCENARIOS: dict[str, Callable[[Any, Callable[[int], None]], RunResult]] = {
    "transport": run_transport, "model": run_model, "pipeline": run_pipeline, "multi": run_pipeline}
