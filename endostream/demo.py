"""`endostream demo` (behind `make demo`): the bundled clip through producer and consumer as two
processes on loopback, live mode, shipped weights; writes ``<out>/overlay.mp4`` and
``<out>/summary.json`` and prints a short summary.

The consumer runs in this process (it binds first, with the model loaded, so the clip is not
replayed into an empty socket); the producer is ``python -m endostream.cli produce`` in a child
process, paced at the clip's native rate, sending the clip's ground-truth masks for Dice.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

from omegaconf import OmegaConf

from endostream.consumer import app as consumer_mod

log = logging.getLogger(__name__)


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
    t0 = time.monotonic()
    ccfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    ccfg.max_frames = None  # the producer's limit; the consumer runs to end-of-stream
    consumer, out, out_error = consumer_mod.build(ccfg)
    if out_error:
        consumer.rx.close()
        raise OSError(out_error)
    endpoint = consumer.rx.endpoint
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    with open(out / "producer.log", "w") as err:
        proc = subprocess.Popen(producer_command(cfg, endpoint), stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env)
        watcher_out: list[str] = []
        reader = threading.Thread(target=lambda: watcher_out.append(proc.stdout.read()), daemon=True)
        reader.start()
        threading.Thread(target=_watch, args=(proc, consumer, float(cfg.end_grace_s)),
                         daemon=True).start()
        try:
            summary = consumer.run()
        finally:
            consumer.rx.close()
            try:
                proc.wait(timeout=float(cfg.producer_timeout_s))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(5)
    prod = _producer_summary(watcher_out[0] if watcher_out else "")
    if proc.returncode != 0:
        print(f"endostream demo: producer exited with {proc.returncode} (see {out / 'producer.log'})",
              file=sys.stderr)
    summary = demo_summary(summary, prod, cfg, wall_s=time.monotonic() - t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
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
