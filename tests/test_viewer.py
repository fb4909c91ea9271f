"""Browser viewer: HTTP behaviour over real sockets, and the page rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from endostream.consumer.viewer import MjpegViewer, is_loopback


def _status(viewer: MjpegViewer) -> dict:
    return json.loads(urllib.request.urlopen(viewer.url + "status.json", timeout=5).read())


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def _split_image() -> np.ndarray:
    """240x320 BGR: left half pure red, right half pure green."""
    img = np.zeros((240, 320, 3), np.uint8)
    img[:, :160] = (0, 0, 255)
    img[:, 160:] = (0, 255, 0)
    return img


def test_index_stream_and_snapshot():
    with MjpegViewer(port=0) as viewer:
        assert viewer.url.startswith("http://127.0.0.1:") and viewer.token is None
        page = urllib.request.urlopen(viewer.url, timeout=5).read().decode()
        assert 'src="/stream.mjpg"' in page and 'alt=""' in page  # no broken-image text
        # before the first frame the stream carries the WAITING card, /frame.jpg says so
        with urllib.request.urlopen(viewer.url + "stream.mjpg", timeout=5) as resp:
            resp.read(len(b"--endostreamframe\r\nContent-Type: image/jpeg\r\n"))
            length = int(resp.readline().split(b":")[1])
            resp.readline()
            card = cv2.imdecode(np.frombuffer(resp.read(length), np.uint8), cv2.IMREAD_COLOR)
        assert card is not None and card.shape[:2] == (360, 640)
        assert card[2, 320, 2] > 150 and card[2, 320, 0] < 80  # the card's amber border
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(viewer.url + "frame.jpg", timeout=10)
        assert err.value.code == 503
        viewer.update(_split_image())
        jpeg = urllib.request.urlopen(viewer.url + "frame.jpg", timeout=5).read()
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (240, 320, 3) and img[120, 40, 2] > 200
        with urllib.request.urlopen(viewer.url + "stream.mjpg", timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert resp.read(64).startswith(b"--endostreamframe\r\nContent-Type: image/jpeg")
        viewer.update(b"\xff\xd8already-jpeg\xff\xd9")  # bytes pass through unchanged
        assert urllib.request.urlopen(viewer.url + "frame.jpg", timeout=5).read() == b"\xff\xd8already-jpeg\xff\xd9"


def test_latest_frame_only_for_slow_clients():
    """Updates while nobody reads replace one slot; a reader gets the newest, no backlog."""
    with MjpegViewer(port=0) as viewer:
        for level in range(0, 250, 10):
            viewer.update(np.full((16, 16, 3), level, np.uint8))
        jpeg = urllib.request.urlopen(viewer.url + "frame.jpg", timeout=5).read()
        assert abs(int(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE).mean()) - 240) < 4
        assert viewer._image is None or viewer._frame_id == 25


def test_status_json_states_and_ages():
    """Standalone (no consumer status) the frames decide; with the consumer's status its
    state is served, but a 'live' whose newest frame is older than no_signal_after_ms reads
    no_signal (the consumer's loop may hang; the age is computed when asked)."""
    with MjpegViewer(port=0, no_signal_after_ms=300) as viewer:
        s = _status(viewer)
        assert s["state"] == "waiting" and s["frames_shown"] == 0 and s["last_frame_age_ms"] is None
        assert {"fps", "mask_age_ms"} <= s.keys()
        viewer.update(_split_image())
        assert _status(viewer)["state"] == "live"
        time.sleep(0.5)
        s = _status(viewer)
        assert s["state"] == "no_signal" and s["last_frame_age_ms"] >= 300
        viewer.set_status({"state": "live", "fps": 25.0, "mask_age_ms": 40.0, "frames_shown": 7,
                           "t_last_frame": time.monotonic(), "model": "polyp"})
        s = _status(viewer)
        assert (s["state"], s["fps"], s["mask_age_ms"], s["frames_shown"], s["model"]) == \
            ("live", 25.0, 40.0, 7, "polyp")
        assert 0 <= s["last_frame_age_ms"] < 300 and "t_last_frame" not in s
        time.sleep(0.5)  # the consumer said live, but no frame came since
        assert _status(viewer)["state"] == "no_signal"
        viewer.set_status({"state": "ended", "frames_shown": 7, "t_last_frame": time.monotonic() - 5})
        assert _status(viewer)["state"] == "ended"
        assert viewer.status_requests == 6


def test_non_loopback_requires_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    with MjpegViewer("0.0.0.0", port=0) as viewer:
        assert viewer.token and f"?token={viewer.token}" in viewer.url
        assert viewer.token not in viewer.url_redacted
        base = f"http://127.0.0.1:{viewer.port}/"
        for bad in ("", "?token=wrong"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + bad, timeout=5)
            assert err.value.code == 403
        page = urllib.request.urlopen(f"{base}?token={viewer.token}", timeout=5).read().decode()
        assert f"/stream.mjpg?token={viewer.token}" in page
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "status.json", timeout=5)
        assert err.value.code == 403
        assert json.loads(urllib.request.urlopen(f"{base}status.json?token={viewer.token}",
                                                 timeout=5).read())["state"] == "waiting"


def test_https_with_certificate(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl command not found to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with MjpegViewer("127.0.0.1", port=0, certfile=str(cert), keyfile=str(key), token="s3cret") as viewer:
        assert viewer.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        page = urllib.request.urlopen(viewer.url, context=ctx, timeout=5).read().decode()
        assert "stream.mjpg?token=s3cret" in page
        with pytest.raises(OSError):  # plain HTTP to a TLS port fails (reset or bad status)
            urllib.request.urlopen(viewer.url.replace("https", "http"), timeout=5).read()


def _browser() -> str:
    browser = _chromium()
    if browser is None:
        if os.environ.get("ENDOSTREAM_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium not found but ENDOSTREAM_REQUIRE_BROWSER=1 (apt-get install chromium)")
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    return browser


def screenshot(browser: str, url: str, shot, profile, size: tuple[int, int] = (1000, 700),
               budget_ms: int = 3000) -> np.ndarray:
    """The page at ``url`` as headless Chromium renders it (BGR)."""
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
         f"--virtual-time-budget={budget_ms}", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=120)
    assert os.path.exists(shot), f"no screenshot (rc {proc.returncode}): {proc.stderr[-400:]}"
    return cv2.imread(str(shot))


def _colour(img: np.ndarray, bgr: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return np.all(np.abs(img.astype(int) - np.array(bgr)) < tol, axis=2)


def _feeder(viewer: MjpegViewer, stop: threading.Event) -> threading.Thread:
    def feed() -> None:  # a live stream with its status, as the consumer would feed it
        img = _split_image()
        while not stop.is_set():
            viewer.update(img)
            viewer.set_status({"state": "live", "fps": 25.0, "latency_ms": 30.0, "mask_age_ms": 45.0,
                               "frames_shown": 1, "t_last_frame": time.monotonic(),
                               "model": "polyp", "backend": "onnxruntime"})
            time.sleep(0.04)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def test_viewer_renders_in_headless_chromium(tmp_path):
    """The frame fills the window with its aspect kept; the status bar sits above it."""
    browser = _browser()
    viewer = MjpegViewer(port=0).start()
    stop = threading.Event()
    _feeder(viewer, stop)
    try:
        img = screenshot(browser, viewer.url, tmp_path / "shot.png", tmp_path / "profile")
    finally:
        stop.set()
        viewer.stop()
    red = (img[..., 2] > 200) & (img[..., 1] < 60) & (img[..., 0] < 60)
    green = (img[..., 1] > 200) & (img[..., 2] < 60) & (img[..., 0] < 60)
    assert red.mean() > 0.1 and green.mean() > 0.1, "the MJPEG frame did not render in the page"
    ys, xs = np.nonzero(red)
    yg, xg = np.nonzero(green)
    assert xs.mean() < xg.mean()  # red left of green: the image as sent, not a placeholder
    video = red | green
    rows, cols = np.nonzero(video)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert h > 2 * 240 and abs(w / h - 320 / 240) < 0.03, f"frame shown {w}x{h}: not fitted to the window"
    assert rows.min() > 25, "the status bar must sit outside the image"
    badge = _colour(img[: rows.min()], (0x2e, 0x7a, 0x1b))  # the green LIVE badge, BGR
    assert badge.sum() > 200, "no LIVE badge in the status bar"


def test_page_says_disconnected_when_the_viewer_stops(tmp_path):
    """The consumer exits while a browser shows its page: the last frame is greyed out and
    the page says DISCONNECTED (red badge and red cover text), never a live-looking image."""
    browser = _browser()
    viewer = MjpegViewer(port=0).start()
    stop = threading.Event()
    _feeder(viewer, stop)

    def stop_when_polled() -> None:  # the page is up and polling: now the consumer "exits"
        deadline = time.monotonic() + 90
        while viewer.status_requests < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        viewer.stop()

    threading.Thread(target=stop_when_polled, daemon=True).start()
    img = screenshot(browser, viewer.url, tmp_path / "shot.png", tmp_path / "profile",
                     budget_ms=20000)
    assert viewer.status_requests >= 2
    red = (img[..., 2] > 200) & (img[..., 1] < 60) & (img[..., 0] < 60)
    green = (img[..., 1] > 200) & (img[..., 2] < 60) & (img[..., 0] < 60)
    assert red.mean() < 0.02 and green.mean() < 0.02, "the last frame still looks live"
    assert _colour(img[:60], (0x18, 0x18, 0xc0)).sum() > 200, "no red DISCONNECTED badge"
    cover = _colour(img[200:500], (0x40, 0x40, 0xff), tol=30)  # the red cover text
    assert cover.sum() > 500, "no DISCONNECTED text over the image"
