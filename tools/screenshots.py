"""Screenshots of what a person in the room sees, made from the real pipeline.

    .venv/bin/python tools/screenshots.py --out out/screenshots            # PNGs
    .venv/bin/python tools/screenshots.py --out docs/img --jpeg            # small JPEGs for the docs

Starts a consumer with the browser viewer and a producer looping the demo clip (two processes
on loopback), and photographs the viewer page in headless Chromium:

    viewer-waiting    the consumer is up, no video yet ("WAITING FOR VIDEO")
    viewer-live       the demo clip live, status bar above the fitted video
    overlay-frame     one overlay frame as drawn (outline + light fill, label, HUD corners)
    viewer-no-signal  the producer killed: the dimmed last frame with "NO SIGNAL - last frame N s ago"

Needs Chromium (``apt-get install chromium``). Each shot is a function in ``SHOTS`` order; add
one by writing a ``shot_<name>(ctx)`` and listing it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "assets/demo/clinicdb_demo.mp4"
MASK_MAX_AGE_MS = 300  # overlay-frame: a mask this fresh is drawn (not "AI paused")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    sys.exit("screenshots: Chromium not found (apt-get install -y chromium)")


def browser_shot(url: str, path: Path, *, size: tuple[int, int], profile: Path,
                 budget_ms: int = 3000) -> Path:
    """The page at ``url`` rendered by headless Chromium into ``path`` (PNG)."""
    subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars",
                    f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                    f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url],
                   capture_output=True, timeout=180, check=False)
    if not path.is_file():
        sys.exit(f"screenshots: Chromium wrote no {path}")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "endostream.cli", *args]


@dataclass
class Context:
    """What the shots share: the running processes, the viewer, where to write."""

    out: Path
    work: Path
    size: tuple[int, int]
    jpeg: bool
    port: int = field(default_factory=_free_port)
    endpoint: str = field(default_factory=lambda: f"tcp://127.0.0.1:{_free_port()}")
    consumer: subprocess.Popen | None = None
    producer: subprocess.Popen | None = None
    written: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def status(self) -> dict:
        return json.loads(urllib.request.urlopen(self.url + "status.json", timeout=5).read())

    def wait(self, what: str, cond: Callable[[dict], bool], timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                s = self.status()
                if cond(s):
                    return s
            except OSError:
                pass
            if self.consumer is not None and self.consumer.poll() is not None:
                sys.exit(f"screenshots: the consumer exited ({self.work / 'consume.log'})")
            time.sleep(0.2)
        sys.exit(f"screenshots: timed out waiting for {what}")

    def shoot(self, name: str) -> Path:
        png = browser_shot(self.url, self.work / f"{name}.png", size=self.size,
                           profile=self.work / "chromium")
        if not self.jpeg:
            target = self.out / f"{name}.png"
            shutil.copyfile(png, target)
        else:  # docs images: JPEG, small enough to commit (< ~150 KB)
            import cv2

            target = self.out / f"{name}.jpg"
            cv2.imwrite(str(target), cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 82])
        self.written.append(target)
        print(f"wrote {target} ({target.stat().st_size // 1024} KB)")
        return target


def start_consumer(ctx: Context) -> None:
    log = open(ctx.work / "consume.log", "w")
    ctx.consumer = subprocess.Popen(
        _cli("consume", "sink=[viewer]", f"sink.viewer.port={ctx.port}",
             f"transport.endpoint={ctx.endpoint}", f"out={ctx.work / 'consume'}",
             "idle_timeout_s=300", "log_level=INFO"),
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    ctx.wait("the viewer", lambda s: True, 180)


def shot_viewer_waiting(ctx: Context) -> None:
    ctx.wait("the waiting state", lambda s: s["state"] == "waiting", 30)
    ctx.shoot("viewer-waiting")


def shot_viewer_live(ctx: Context) -> None:
    log = open(ctx.work / "produce.log", "w")
    ctx.producer = subprocess.Popen(
        _cli("produce", f"source.uri={CLIP}", f"transport.endpoint={ctx.endpoint}", "loop=true",
             "pace=native"), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    # far enough into the clip that the model has masks and the fps figure has settled
    ctx.wait("live video", lambda s: s["state"] == "live" and s["frames_shown"] > 60, 180)
    ctx.shoot("viewer-live")


def shot_overlay_frame(ctx: Context) -> None:
    """One overlay frame as the consumer drew it (the viewer's /frame.jpg, not the page): taken
    once the HUD shows a live mask (not "AI paused"), so the outline, label and corners show."""
    deadline = time.monotonic() + 120
    while True:  # a machine too busy for fresh masks skips this shot, not the later ones
        s = ctx.status()
        if s["state"] == "live" and s.get("mask_age_ms") is not None and s["mask_age_ms"] < MASK_MAX_AGE_MS:
            break
        if time.monotonic() > deadline:
            print(f"screenshots: overlay-frame skipped: no mask younger than {MASK_MAX_AGE_MS} ms in 120 s "
                  f"(last: {s.get('mask_age_ms')} ms; a busy machine?)", file=sys.stderr)
            return
        time.sleep(0.1)
    jpeg = urllib.request.urlopen(ctx.url + "frame.jpg", timeout=10).read()
    target = ctx.out / ("overlay-frame.jpg" if ctx.jpeg else "overlay-frame.png")
    if ctx.jpeg:
        target.write_bytes(jpeg)
    else:
        import cv2
        import numpy as np

        cv2.imwrite(str(target), cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    ctx.written.append(target)
    print(f"wrote {target} ({target.stat().st_size // 1024} KB)")


def shot_viewer_no_signal(ctx: Context) -> None:
    assert ctx.producer is not None, "shot_viewer_live starts the producer"
    ctx.producer.send_signal(signal.SIGKILL)  # a cable pulled: no end-of-stream
    ctx.producer.wait()
    ctx.wait("no signal", lambda s: s["state"] == "no_signal" and s["last_frame_age_ms"] > 3000, 60)
    ctx.shoot("viewer-no-signal")


SHOTS: list[Callable[[Context], None]] = [shot_viewer_waiting, shot_viewer_live, shot_overlay_frame,
                                          shot_viewer_no_signal]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/screenshots"), help="folder for the images")
    ap.add_argument("--size", default="1100x700", help="browser window, WIDTHxHEIGHT")
    ap.add_argument("--jpeg", action="store_true", help="JPEG (small, for docs/img) instead of PNG")
    ap.add_argument("--only", nargs="*", help="shot names to take (default: all)")
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"endostream-shots-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=args.out, work=work, size=(width, height), jpeg=args.jpeg)
    try:
        start_consumer(ctx)
        for shot in SHOTS:
            name = shot.__name__.removeprefix("shot_").replace("_", "-")
            if args.only and name not in args.only and shot is not shot_viewer_live:
                continue  # viewer-live also starts the producer the later shots need
            shot(ctx)
    finally:
        for proc in (ctx.producer, ctx.consumer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
