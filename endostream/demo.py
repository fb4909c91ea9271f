"""`endostream demo` (behind `make demo`): the bundled clip through producer and consumer as two
processes on loopback, live mode, shipped weights; writes ``<out>/overlay.mp4`` and
``<out>/summary.json`` and prints a short summary.

The consumer runs in this process (it binds first, with the model loaded, so the clip is not
replayed into an empty socket); the producer is ``python -m endostream.cli produce`` in a child
process, paced at the clip's native rate, sending the clip's ground-truth masks for Dice.

SIGINT/SIGTERM: the producer is told to stop (it sends end-of-stream), the consumer stops after
its current frame, ``summary.json`` says what ran (``stopped_by``: the signal), one
line says so and where the files are; exit 130/143.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from omegaconf import OmegaConf

from endostream.consumer import app as consumer_mod
from endostream.interrupt import StopRequest

log = logging.getLogger(__name__)

_STOPPED_PRODUCER_WAIT_S = 3.0  # after a stop: then the producer is killed


def producer_command(cfg: Any, endpoint: str) -> list[str]:
    """The child's command line: the demo's source and transport blocks as Hydra overrides."""
    src = OmegaConf.to_container(cfg.source, resolve=True)
    args = [sys.executable, "-m", "endostream.cli", "produce",
            f"source.uri={src['uri']}", f"transport.mode={cfg.transport.mode}",
            f"transport.endpoint={endpoint}", f"pace={'native' if src['pace'] else 'fast'}",
            f"source.modality={src['modality']}", f"stream_id={src['stream_id']}", "send_gt=true",
            f"codec={cfg.codec}"]
    if cfg.max_frames is not None:
        args.append(f"max_frames={int(cfg.max_frames)}")
    return args


def _producer_summary(stdout: str) -> dict[str, Any]:
    """The producer prints one JSON line at the end; {} when it did not (it crashed)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return {}


def _watch(proc: subprocess.Popen, consumer: consumer_mod.Consumer, grace_s: float) -> None:
    """Stop the consumer ``grace_s`` after the producer exited, in case its end-of-stream
    was lost (live PUB/SUB may drop it): the demo always finishes on its own."""
    proc.wait()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if consumer.exit_reason:
            return
        time.sleep(0.1)
    consumer.stop_requested = True


def run(cfg: Any) -> int:
    logging.basicConfig(level=str(cfg.get("log_level", "WARNING")).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    running: dict[str, Any] = {}  # the consumer and the producer, once they exist

    def on_stop(_name: str) -> None:
        if "consumer" in running:
            running["consumer"].stop_requested = True
        if "producer" in running and running["producer"].poll() is None:
            running["producer"].send_signal(signal.SIGINT)  # it sends end-of-stream and exits

    with StopRequest(on_stop) as stop:
        return _run(cfg, stop, running)


def _run(cfg: Any, stop: StopRequest, running: dict[str, Any]) -> int:
    t0 = time.monotonic()
    ccfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    ccfg.max_frames = None  # the producer's limit; the consumer runs to end-of-stream
    consumer, out, out_error = consumer_mod.build(ccfg)
    if out_error:
        consumer.rx.close()
        raise OSError(out_error)
    if stop.requested:  # while the model loaded: nothing ran
        consumer.rx.close()
        print(f"demo: stopped by {stop.requested} before the clip started; nothing written", flush=True)
        return stop.exit_code
    running["consumer"] = consumer
    endpoint = consumer.rx.endpoint
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    with open(out / "producer.log", "w") as err:
        # Its own session: a terminal's Ctrl-C reaches the demo, which stops the producer once.
        proc = subprocess.Popen(producer_command(cfg, endpoint), stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env, start_new_session=True)
        running["producer"] = proc
        watcher_out: list[str] = []
        reader = threading.Thread(target=lambda: watcher_out.append(proc.stdout.read()), daemon=True)
        reader.start()
        threading.Thread(target=_watch, args=(proc, consumer, float(cfg.end_grace_s)),
                         daemon=True).start()
        try:
            summary = consumer.run()
        finally:
            consumer.rx.close()
            try:  # once stopped, the producer's end-of-stream has nobody to wait for
                proc.wait(timeout=_STOPPED_PRODUCER_WAIT_S if stop.requested else float(cfg.producer_timeout_s))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
    prod = _producer_summary(watcher_out[0] if watcher_out else "")
    summary = demo_summary(summary, prod, cfg, wall_s=time.monotonic() - t0)
    if stop.requested:
        summary["stopped_by"] = stop.requested
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if stop.requested:
        print(f"demo: stopped by {stop.requested} after {summary['frames_shown']} frames shown; "
              f"wrote {out / 'overlay.mp4'} and {out / 'summary.json'}", flush=True)
        return stop.exit_code
    if proc.returncode != 0:
        print(f"endostream demo: producer exited with {proc.returncode} (see {out / 'producer.log'})",
              file=sys.stderr)
    print(consumer_mod.format_summary(summary))
    print(f"wrote {out / 'overlay.mp4'} and {out / 'summary.json'}")
    return 0 if proc.returncode == 0 and summary["frames_shown"] > 0 else 1


def demo_summary(consumer_summary: dict[str, Any], producer: dict[str, Any], cfg: Any, *,
                 wall_s: float) -> dict[str, Any]:
    """The consumer's summary with the producer's own count as ``frames_sent`` (frames its
    socket accepted), so ``frames_dropped`` = sent but never processed by the model."""
    s = dict(consumer_summary)
    s["frames_sent_seen_by_consumer"] = s["frames_sent"]
    if producer:
        s["frames_sent"] = int(producer.get("frames_sent", s["frames_sent"]))
        s["frames_produced"] = int(producer.get("frames", s["frames_sent"]))
        s["frames_refused_by_producer_socket"] = int(producer.get("frames_refused", 0))
    s["frames_dropped"] = max(0, s["frames_sent"] - s["frames_processed"])
    s["clip"] = str(cfg.source.uri)
    s["wall_s"] = round(wall_s, 2)
    return s
