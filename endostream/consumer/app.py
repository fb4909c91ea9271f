"""Consumer: transport -> decode -> segment -> overlay -> sinks.

The stages are small classes with typed inputs and outputs, wired in one place
(:class:`Consumer`), in the style of a Holoscan app:

    Receiver (transport; decodes, stamps receive/decode)
      -> Inference (modality -> model; segmenter stamps)      live: worker thread, newest frame
      -> OverlayStage (newest mask + age, "AI paused")        every received frame
      -> SinkStage (video, masks, viewer...; stamps overlay/sink)
      -> Telemetry (fps, latency, drops, Dice) + Records (per-frame CSV / callback)
      -> SignalTracker (waiting / live / no_signal / ended; cards and viewer status)

live      The display path (receive -> overlay -> sinks) waits for a frame's own mask up to
          ``overlay.wait_ms`` (one deadline for all streams of a pass), then draws every frame
          the receiver delivers with the newest mask available and its age; the model runs in
          a worker thread on the newest frame only. A mask older than
          ``overlay.stale_ms`` (capture-time difference to the shown frame) is hidden and
          "AI paused" is shown, while the video keeps flowing.
lossless  One thread: each frame is segmented, drawn, written by the sinks, journalled in
          ``frames.csv`` and only then acknowledged. The receiver's state file and the journal
          live in ``out``, so a killed and restarted consumer neither loses nor duplicates.

Signal state: while no frames arrive the display path keeps going and sends full-frame cards
("NO SIGNAL - last frame N s ago" on the dimmed last image, "WAITING FOR VIDEO" before the first
frame) to the viewer and window, and NO SIGNAL cards to the live overlay video; the viewer's
status bar and ``/status.json`` get the state, fps, lag and mask age. See
:mod:`endostream.consumer.signal`.

Stages live in ``consumer.worker`` (models, live worker), ``consumer.stages`` (overlay, sinks,
controls), ``consumer.telemetry`` (HUD counters, summary, per-frame records) and
``consumer.signal`` (signal state and its cards).

Start-up fails fast, before the model loads: the transport endpoint and every viewer port are
bound first, and one that is taken is a one-line error naming the override that changes it.

Run-time controls: a JSON file (``control_file``, default ``<out>/control.json``) polled a few
times a second, e.g. ``{"show_mask": false}`` or ``{"opacity": 0.7}``. See docs/CONSUMER.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from endostream.consumer.worker import (Inference, InferenceWorker, MaskResult, ModalitySpec,
                                           ModelRouter, modality_spec)
from endostream.consumer.deadline import MaskDeadline
from endostream.consumer.durable import DurableAcks
from endostream.consumer.persistence import StreamFilters
from endostream.consumer.stages import Controls, OverlayStage, Shown, SinkStage
from endostream.consumer.ports import StartupError, check_viewer_ports, endpoint_in_use, viewer_specs
from endostream.consumer.signal import SignalCards, SignalTracker
from endostream.consumer.telemetry import (RecordCallback, Records, StreamInfo, Telemetry, dice,
                                           percentiles, read_journal)
from endostream.consumer.overlay import HudInfo
from endostream.consumer.streams import StreamTable
from endostream.protocol.limits import MAX_STREAMS
from endostream.protocol.ratelog import RateLimitedLog
from endostream.types import Frame

log = logging.getLogger(__name__)
# How long the live display waits for the next chunk of a backlog (see _newest_frames).
BACKLOG_WAIT_MS = 20

__all__ = ["Consumer", "ConsumerOptions", "Controls", "MaskResult", "ModalitySpec", "OverlayStage",
           "Records", "Shown", "SinkStage", "Telemetry", "build", "dice", "read_journal", "run"]


@dataclass
class ConsumerOptions:
    # From configs/overlay (the one place they are defined): live display waits up to wait_ms for a
    # frame's own mask, by wait_policy (fixed | predicted: consumer/deadline.py)
    wait_ms: float
    wait_policy: str
    max_model_load: float | None = None  # several rooms: no wait once the model's call exceeds this share of the interval
    mode: str = "live"  # live | lossless
    max_frames: int | None = None  # live: frames shown; lossless: frames processed
    idle_timeout_s: float = 30.0  # exit when no message arrived this long
    min_streams: int = 1  # end-of-stream ends the run once this many streams have ended
    stale_ms: float = 500.0
    note: str = ""  # extra HUD text
    no_signal_after_ms: float = 1000.0  # a live stream without frames this long is "no signal"
    max_streams: int = MAX_STREAMS  # live: stream ids kept at once (consumer.streams)


class Consumer:
    """The pipeline, wired once. ``run()`` returns the summary dict."""

    def __init__(self, receiver: Any, router: ModelRouter, overlay: OverlayStage, sinks: SinkStage,
                 records: Records, options: ConsumerOptions, *, infer_delay_ms: float = 0.0,
                 journal: dict[tuple[int, int], int] | None = None, filters: StreamFilters | None = None) -> None:
        self.rx, self.router, self.overlay, self.sinks = receiver, router, overlay, sinks
        self.records, self.opt = records, options
        self.tel = Telemetry()
        self.deadline = MaskDeadline(options.wait_ms, options.wait_policy, options.max_model_load)  # live: the own-mask wait
        self.inference = Inference(router, delay_ms=infer_delay_ms,
                                   record=lambda row: records.write("inference", row), filters=filters,
                                   on_call=self.deadline.record)
        self.journal = journal or {}
        self.duplicates_skipped = 0
        self.superseded = 0  # live: delivered by the receiver, then replaced by a newer frame
        self.errors = 0
        self.exit_reason = ""
        self.stop_requested = False
        self._ends_seen: set[tuple[int, int]] = set()
        self._row: dict[str, Any] | None = None
        self.acks = DurableAcks(receiver, sinks.sinks, lambda row: records.write("shown", row)) \
            if options.mode == "lossless" else None
        self._error_log = RateLimitedLog(log)
        self.signal = SignalTracker(options.no_signal_after_ms)
        self.table = StreamTable(options.max_streams, options.no_signal_after_ms / 1000.0)
        main = router.infos()[0] if router.infos() else {}
        self.cards = SignalCards(self.signal, sinks.sinks, self.tel, {
            "model": Path(str(main.get("weights") or "")).stem or None, "backend": main.get("backend"),
            "steps": main.get("steps"), "trained": main.get("trained"),
            # a single-pass model says what it lacks (inference/single_pass.py)
            **({"absent": main["absent"]} if main.get("absent") else {})}, live=options.mode == "live")
        if options.mode == "live":
            self.cards.is_room = self.table.is_room  # no NO SIGNAL card for a stray stream id
        infos = router.infos()
        self.default_trained = bool(infos[0].get("trained", False)) if infos else True
        self.model_note = str(main.get("hud_note") or "")
        self._t_start = time.monotonic()
        self.cards.live_status = lambda: {"rooms": self.inference.rooms_status()}  # /status.json

    # ---- shared display path: overlay -> sinks -> telemetry -> records
    def _show(self, frame: Frame, epoch: int, result: MaskResult | None, st: StreamInfo) -> None:
        sid = frame.stream_id
        trained = result.trained if result is not None else self.default_trained
        note = " | ".join(n for n in ("" if trained else "UNTRAINED WEIGHTS", self.model_note, self.opt.note) if n)
        hud = HudInfo(fps=self.tel.fps(sid), latency_ms=(time.monotonic_ns() - frame.t_capture_ns) / 1e6,
                      dropped=max(0, self.tel.sent.get((sid, epoch), 0) - self.tel.first.get((sid, epoch), 0)
                                  - self.inference.processed.get((sid, epoch), 0) - 1),
                      dice=self.tel.dice_mean, note=note,
                      stream_id=sid if len(self.tel.streams) > 1 else None)
        shown = self.overlay.draw(frame, result, hud, st.first_capture_ns)
        self.sinks.write(frame, shown)
        lat = self.tel.on_shown(frame, shown)
        self.cards.on_shown(frame, epoch, lat, shown.mask_age_ms)
        d = None
        if frame.gt_mask is not None:
            d = dice(shown.prediction.mask if shown.prediction is not None else None, frame.gt_mask)
            self.tel.add_dice(d)
        self._record_shown({
            "stream_id": sid, "epoch": epoch, "seq": frame.seq, "t_capture_ns": frame.t_capture_ns,
            **frame.stamps_ns, "latency_ms": round(lat, 3), "mask_seq": shown.mask_seq,
            "mask_age_ms": None if shown.mask_age_ms is None else round(shown.mask_age_ms, 1),
            "paused": int(shown.paused), "dice": None if d is None else round(d, 4)})

    def _record_shown(self, row: dict[str, Any]) -> None:
        if self.opt.mode == "lossless":
            self._row = row  # journalled once the sinks made the frame durable (DurableAcks)
        else:
            self.records.write("shown", row)

    def _idle(self, last_activity: float) -> bool:
        if time.monotonic() - last_activity > self.opt.idle_timeout_s:
            self.exit_reason = f"idle for {self.opt.idle_timeout_s:g} s"
            return True
        return False

    def _all_ended(self) -> bool:
        streams = self.tel.streams
        if len(streams) >= self.opt.min_streams and all(s.ended for s in streams.values()):
            self.exit_reason = "end of stream"
            return True
        return False

    # ---- live
    def run_live(self) -> None:
        worker = InferenceWorker(self.inference)
        last_msgs, last_activity = self.rx.stats.messages, time.monotonic()
        try:
            while not self.stop_requested:
                self.overlay.controls.poll()
                msgs = self._admitted(self._newest_frames(), worker)
                busy = worker.inflight()  # before our frames: the call they queue behind
                worker.submit_many([(m.frame, m.epoch) for m in msgs])  # one model call for all streams
                for m in msgs:
                    self.deadline.note_frame(m.stream_id, m.frame.t_capture_ns)
                # One deadline for all of them: the streams' masks come from one batched call, so
                # waiting per stream in turn would multiply the video's delay by the stream count.
                pass_ns = time.monotonic_ns()
                wait = self.deadline.plan(pass_ns, len(msgs), busy, [m.stream_id for m in msgs])
                # Each room's frame is shown as soon as its own mask is ready (or at the deadline),
                # never held behind another room's wait.
                # waiting for the call in flight is done once a frame comes out of in_completion_order
                own_until = wait.deadline_ns if wait.inflight_call is None else 0
                for msg in worker.in_completion_order(msgs, wait):
                    self._live_frame(worker, msg, own_until, pass_ns)
                if self.rx.stats.messages != last_msgs:
                    last_msgs, last_activity = self.rx.stats.messages, time.monotonic()
                self._live_ends(worker)
                self._forget(self.table.expire(time.monotonic()), worker)
                self.cards.tick()
                if self.opt.max_frames is not None and self.tel.shown >= self.opt.max_frames:
                    self.exit_reason = f"max_frames={self.opt.max_frames}"
                    break
                if self._all_ended() or self._idle(last_activity):
                    break
        finally:
            worker.stop()

    def _newest_frames(self) -> list[Any]:
        """The newest frame per stream. After a stall (SIGSTOP, a slow sink) the socket's
        io thread is still pulling a backlog out of the kernel's TCP buffers, a few messages
        at a time (rcvhwm): keep draining while more arrives, so the backlog is skipped, not
        played back in slow motion. A drain that filled the queue means more is behind it and
        a loaded CPU may take ms to run the io thread: wait up to BACKLOG_WAIT_MS, else 1 ms."""
        hwm, before = max(1, self.rx.sock.rcvhwm), self.rx.stats.messages
        newest = {m.stream_id: m for m in self.rx.recv_newest(50)}
        for _ in range(1000) if newest else ():
            full, before = self.rx.stats.messages - before >= hwm, self.rx.stats.messages
            more = self.rx.recv_newest(BACKLOG_WAIT_MS if full else 1)
            if not more:
                break
            for m in more:
                self.superseded += m.stream_id in newest
                newest[m.stream_id] = m
        return list(newest.values())

    def _admitted(self, msgs: list[Any], worker: InferenceWorker) -> list[Any]:
        """The frames of streams the table admits (stream ids are bounded: consumer.streams)."""
        now = time.monotonic()
        ok = [m for m in msgs if self.table.admit(m.stream_id, now)]
        ok = [m for m in ok if m.stream_id in self.table]  # not evicted by a later id of this batch
        if len(ok) < len(msgs):
            self._error_log("streams_full", f"{len(msgs) - len(ok)} frame(s) of new stream ids "
                            f"refused: {self.table.max_streams} streams are sending "
                            "(transport.max_streams)")
        self._forget(self.table.expire(now), worker)
        return ok

    def _forget(self, stream_ids: list[int], worker: InferenceWorker) -> None:
        """Drop every trace of evicted streams: telemetry, signal state, cards, model memory."""
        for sid in stream_ids:
            self.tel.forget(sid)
            self.signal.streams.pop(sid, None)
            self.cards.shown.pop(sid, None)
            self.deadline.forget(sid)
            worker.reset(sid)
            self._ends_seen = {k for k in self._ends_seen if k[0] != sid}

    def _live_frame(self, worker: InferenceWorker, msg: Any, deadline_ns: int, pass_ns: int) -> None:
        frame, epoch = msg.frame, msg.epoch
        try:
            st, _ = self.tel.on_frame(frame, epoch)
            # The frame was submitted with the other streams' frames (run_live): wait
            # until deadline_ns (overlay.wait_ms) for this frame's own mask, else the newest one.
            result = worker.wait_for(frame.stream_id, frame.seq, epoch, deadline_ns, since_ns=pass_ns)
            frame.stamps_ns["wait"] = time.monotonic_ns()  # the wait is its own stage in the bench
            if result is not None and result.epoch != epoch:
                result = None  # a mask from before the producer restarted
            self._show(frame, epoch, result, st)
        except Exception as exc:  # noqa: BLE001 - one bad frame never stops the video
            self._error(frame, exc)

    def _live_ends(self, worker: InferenceWorker) -> None:
        """The live receiver reports end-of-stream and source-lost in its stats (``ended``,
        ``lost``: a source-lost notice and no frame since), not as messages."""
        for sid, rs in list(self.rx.stats.streams.items()):
            if sid not in self.table:
                continue  # refused or evicted: no state, no card
            if getattr(rs, "lost", False):
                self.signal.on_lost(sid, time.monotonic())
            if not rs.ended or rs.epoch is None or (sid, rs.epoch) in self._ends_seen:
                continue
            self._ends_seen.add((sid, rs.epoch))
            self.tel.on_end(sid, rs.epoch, rs.last_seq or 0)
            worker.reset(sid)
            self.signal.on_end(sid, time.monotonic(), rs.last_seq)

    # ---- lossless
    def run_lossless(self) -> None:
        from endostream.protocol.wire import EndOfStream

        last_activity = time.monotonic()
        last_msgs = self.rx.stats.messages
        while not self.stop_requested:
            self.overlay.controls.poll()
            msg = self.rx.recv(100)
            if self.rx.stats.messages != last_msgs:
                last_msgs, last_activity = self.rx.stats.messages, time.monotonic()
            self.cards.tick()
            if _is_source_lost(msg):  # not a seq of its own: nothing to ack
                self.signal.on_lost(msg.stream_id, time.monotonic())
                continue
            if msg is None:
                if self._all_ended() or self._idle(last_activity):
                    break
                continue
            if isinstance(msg, EndOfStream):
                self.tel.on_end(msg.stream_id, msg.epoch, msg.seq)
                self.inference.reset(msg.stream_id)
                self.acks.add(msg, None)
                self.acks.sync()  # this stream's last frames must not wait for another stream
                self.signal.on_end(msg.stream_id, time.monotonic(), msg.seq)
                if self._all_ended():
                    break
                continue
            if self.acks.stopped is None:
                self._lossless_frame(msg)
            else:  # nothing is written once acknowledgement stopped (DurableAcks)
                self.tel.on_frame(msg.frame, msg.epoch)
                self.acks.add(msg, None)
            if self.opt.max_frames is not None and self.inference.total_processed >= self.opt.max_frames:
                self.exit_reason = f"max_frames={self.opt.max_frames}"
                break

    def _lossless_frame(self, msg: Any) -> None:
        frame, epoch = msg.frame, msg.epoch
        st, _ = self.tel.on_frame(frame, epoch)
        if frame.seq <= self.journal.get((frame.stream_id, epoch), -1):
            # Written by a previous run that was killed before its ack: ack, never rewrite.
            self.duplicates_skipped += 1
            self.acks.add(msg, None)
            return
        self._row, why = None, ""
        try:
            result = self.inference.run(frame, epoch)
            if result is not None:
                frame.stamps_ns["infer_start"] = result.infer_start_ns
                frame.stamps_ns.update(result.prediction.stages_ns)
            self._show(frame, epoch, result, st)
        except Exception as exc:  # noqa: BLE001
            self._error(frame, exc)
            why = f"stream {frame.stream_id} seq {frame.seq} could not be drawn: {type(exc).__name__}: {exc}"
        self.acks.add(msg, self._row, ok=not why, why=why)

    def _error(self, frame: Frame, exc: Exception) -> None:
        self.errors += 1
        self._error_log("frame_error", f"stream {frame.stream_id} seq {frame.seq} not shown: "
                        f"{type(exc).__name__}: {exc}", logging.ERROR)

    # ---- all
    def run(self) -> dict[str, Any]:
        try:
            if self.opt.mode == "live":
                self.run_live()
            else:
                self.run_lossless()
        finally:
            if self.stop_requested and not self.exit_reason:
                self.exit_reason = "stopped by signal"
            self.cards.final()
            self.router.close()  # a model in its own process stops with the run
            self.sinks.close()
            if self.acks is not None:
                self.acks.commit()  # closed sinks hold every frame they accepted
            self.records.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        tel, inf = self.tel, self.inference
        infos = self.router.infos()
        main = infos[0] if infos else {}
        sent, processed = tel.frames_sent, inf.total_processed
        span = (tel.t_last - tel.t_first) if tel.t_first else 0.0
        rs = self.rx.stats
        return {
            "mode": self.opt.mode,
            "frames_sent": sent,
            "frames_received": (rs.total("delivered") - self.superseded if self.opt.mode == "live"
                                else rs.total("received")),
            "frames_shown": tel.shown,
            "frames_processed": processed,
            # frames an earlier (killed) instance finished are not dropped
            "frames_dropped": max(0, sent - processed - self.duplicates_skipped),
            "frames_paused": tel.paused,
            "malformed_messages": rs.malformed,
            "rejected": dict(getattr(rs, "rejected", {})),  # malformed, by reason (docs/PROTOCOL.md)
            "stale_discarded": getattr(rs, "stale_discarded", 0),  # replayed/older/resent seqs
            "duplicates_skipped": self.duplicates_skipped + getattr(rs, "duplicates", 0),
            "errors": self.errors + inf.errors,
            "latency_ms": percentiles(tel.latency_ms),
            "inference_ms": percentiles(inf.infer_ms),
            "mask_age_ms": percentiles(tel.mask_age_ms),
            "same_frame": {**self.deadline.as_dict(), **inf.same_frame.as_dict()},  # frames shown with their own mask
            "inference_batch": inf.batch_stats(),  # frames per model call
            **inf.rooms_report(),  # live: per room mask rate / age / missed deadlines, fairness, timeline
            "fps": round((tel.shown - 1) / span, 2) if span > 0 else None,
            "dice_mean": None if tel.dice_mean is None else round(tel.dice_mean, 4),
            "dice_frames": tel.dice_n,
            "weights_sha256": main.get("weights_sha256"),
            "backend": main.get("backend"),
            "steps": main.get("steps"),
            "trained": main.get("trained"),
            "models": infos,
            "hud_note": " | ".join(n for n in ("" if self.default_trained else "UNTRAINED WEIGHTS",
                                              self.model_note, self.opt.note) if n),
            "streams": {str(sid): {"epoch_restarts": s.restarts, "ended": s.ended,
                                   "last_seq": s.last_seq, "gaps": list(s.gaps)}
                        for sid, s in tel.streams.items()},
            "sink_errors": self.sinks.errors(),
            "streams_held": len(self.tel.streams), "streams_evicted": self.table.evicted,
            "frames_refused_streams_full": self.table.refused,
            **(self.acks.summary() if self.acks is not None else {}),
            "signal": self.cards.summary(),
            "elapsed_s": round(time.monotonic() - self._t_start, 2),
            "exit_reason": self.exit_reason,
        }


# ============================================================================ from config


def _prepare_out(out: Path) -> str | None:
    """Create the output folder; the reason when it is not writable (None when it is)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"output folder {out} is not writable: {exc.strerror or exc}"
    return None


def _is_source_lost(msg: Any) -> bool:
    """A ``SourceLost`` report (wire protocol): the producer's camera or stream stopped."""
    return type(msg).__name__ == "SourceLost"


def _bind_receiver(tcfg: dict[str, Any]) -> Any:
    """Bind the transport; a taken or bad endpoint is a one-line :class:`StartupError`."""
    import zmq

    from endostream.protocol.factory import open_receiver, resolve_endpoint

    try:
        return open_receiver(tcfg)
    except zmq.ZMQError as exc:
        endpoint = resolve_endpoint(tcfg)
        if exc.errno == zmq.EADDRINUSE:
            raise endpoint_in_use(endpoint) from None
        raise StartupError(f"cannot bind transport endpoint {endpoint}: {exc}; change it with "
                           f"transport.endpoint=...") from None


def _check_viewers_started(sink_specs: dict[str, Any], sinks: SinkStage) -> None:
    started = {getattr(s, "name", "") for s in sinks.sinks}
    for name, spec in viewer_specs(sink_specs).items():
        if name not in started:  # make_sinks logged why (e.g. the port was taken meanwhile)
            raise StartupError(f"viewer {name} on {spec.get('host')}:{spec.get('port')} did not "
                               f"start (see the error above); change it with sink.{name}.port=...")


def build(cfg: Any, *, on_record: RecordCallback | None = None) -> tuple[Consumer, Path, str | None]:
    """Build the consumer from the ``consume`` config. Returns (consumer, out, out_error)."""
    from omegaconf import OmegaConf

    from endostream.cli import config_dir
    from endostream.consumer.sinks import make_sinks, next_free_path
    from endostream.protocol.factory import setting

    mode = str(cfg.transport.mode)
    out = Path(str(cfg.out))
    out_error = _prepare_out(out)
    tcfg = OmegaConf.to_container(cfg.transport, resolve=True)
    resume = False
    if mode == "lossless":
        if out_error:
            raise OSError(f"lossless mode needs its output folder for the resume state: {out_error}")
        if not tcfg["lossless"].get("state_file"):
            tcfg["lossless"]["state_file"] = str(out / "lossless_state.json")
        resume = Path(tcfg["lossless"]["state_file"]).is_file()
    elif out_error:
        log.error("%s; continuing without records and summary file", out_error)

    # Everything that can collide with another process is bound before the model loads (tens
    # of seconds on a loaded machine): a taken endpoint or port fails at once, in one line.
    receiver = _bind_receiver(tcfg)
    sink_cfg = OmegaConf.select(cfg, "sink")  # absent with sink=[]: no sinks
    sink_specs = (OmegaConf.to_container(sink_cfg, resolve=True) or {}) if sink_cfg is not None else {}
    if resume:  # never overwrite the video of the run we resume
        for spec in sink_specs.values():
            if isinstance(spec, dict) and spec.get("path") and Path(spec["path"]).exists():
                spec["path"] = str(next_free_path(Path(spec["path"])))
                if str(spec.get("_target_", "")).endswith("VideoSink"):
                    spec["resume"] = True  # skip frames the killed run's files already hold
    sinks: SinkStage | None = None
    try:
        check_viewer_ports(sink_specs)
        sinks = SinkStage(make_sinks(sink_specs))
        _check_viewers_started(sink_specs, sinks)
        router = ModelRouter(modality_spec(cfg.modality),
                             dict(OmegaConf.to_container(cfg.model, resolve=True) or {}), config_dir())
        seg, _ = router.get(cfg.modality.name)  # load now, not on the first frame
    except BaseException:
        receiver.close()
        if sinks is not None:
            sinks.close()
        raise
    steps = max(int(getattr(seg, "steps", 1)), int(getattr(seg, "warm_steps", 1)))

    control = cfg.get("control_file") or (None if out_error else str(out / "control.json"))
    overlay = OverlayStage.from_config(cfg.overlay, control)  # switches, staleness, no-model note
    records = Records(None if (out_error or not cfg.records) and mode == "live" else out,
                      append=resume, steps=steps, callback=on_record)
    journal = read_journal(out / "frames.csv") if resume else {}
    opts = ConsumerOptions(mode=mode, max_frames=cfg.max_frames,
                           idle_timeout_s=float(cfg.idle_timeout_s), min_streams=int(cfg.min_streams),
                           stale_ms=float(cfg.overlay.stale_ms), note=str(cfg.get("note") or ""),
                           wait_ms=float(cfg.overlay.get("wait_ms") or 0),
                           wait_policy=str(cfg.overlay.wait_policy),
                           max_model_load=(None if cfg.overlay.get("max_model_load") is None
                                           else float(cfg.overlay.max_model_load)),
                           no_signal_after_ms=float(cfg.get("no_signal_after_ms") or 1000.0),
                           max_streams=int(setting(tcfg, "max_streams", MAX_STREAMS)))
    consumer = Consumer(receiver, router, overlay, sinks, records, opts,
                        infer_delay_ms=float(cfg.infer_delay_ms), journal=journal,
                        filters=StreamFilters(**dict(cfg.overlay.get("persistence") or {"enabled": False})))
    log.info("consumer %s on %s, output %s%s", mode, receiver.endpoint, out,
             " (resuming)" if resume else "")
    return consumer, out, out_error


def format_summary(s: dict[str, Any]) -> str:
    lat = s.get("latency_ms") or {}
    lines = [
        f"frames: sent {s['frames_sent']}  shown {s['frames_shown']}  processed "
        f"{s['frames_processed']}  dropped {s['frames_dropped']}  malformed {s['malformed_messages']}",
        f"latency (capture -> written) ms: p50 {lat.get('p50')}  p95 {lat.get('p95')}  "
        f"p99 {lat.get('p99')}   fps {s['fps']}   Dice {s['dice_mean']}",
        f"model: {s['backend']} steps={s['steps']} trained={s['trained']} "
        f"sha256={str(s['weights_sha256'])[:12]}   exit: {s['exit_reason']}",
    ]
    if s.get("rejected") or s.get("stale_discarded"):
        lines.append(f"rejected by reason: {s.get('rejected') or {}}   stale discarded "
                     f"{s.get('stale_discarded', 0)}")
    if s.get("sink_errors"):
        lines.append(f"sink errors: {s['sink_errors']}")
    if s.get("acks_stopped"):
        lines.append(f"lossless: acknowledgement stopped ({s['acks_stopped']}); frames not written "
                     f"{s['frames_not_written']}, acknowledged {s['frames_acknowledged']}")
    return "\n".join(lines)


def run(cfg: Any, *, on_record: RecordCallback | None = None) -> int:
    """``endostream consume``: receive until end-of-stream from all producers, max_frames, an
    idle timeout or SIGTERM/SIGINT; write ``<out>/summary.json`` and print a short summary.
    Returns 0, or 1 when output could not be written (the overlay itself kept running)."""
    logging.basicConfig(level=str(cfg.get("log_level", "INFO")).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    consumer, out, out_error = build(cfg, on_record=on_record)

    def _stop(signum: int, _frame: Any) -> None:
        consumer.stop_requested = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        summary = consumer.run()
    finally:
        consumer.rx.close()
    print(format_summary(summary), flush=True)
    if not out_error:
        try:
            from endostream.fileutil import atomic_write_bytes

            atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
        except OSError as exc:
            out_error = f"cannot write {out / 'summary.json'}: {exc.strerror or exc}"
    if out_error:
        print(f"endostream consume: error: {out_error}", file=sys.stderr, flush=True)
    return 1 if out_error or summary["sink_errors"] or summary.get("acks_stopped") else 0
