"""Browser viewer: HTTP behaviour over real sockets, and the page rendered by headless Chromium."""

from __future__ import annotations

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
        assert 'src="/stream.mjpg"' in page
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


def test_viewer_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("ENDOSTREAM_REQUIRE_BROWSER") == "1":
            pytest.fail("Chromium not found but ENDOSTREAM_REQUIRE_BROWSER=1 (apt-get install chromium)")
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    viewer = MjpegViewer(port=0).start()
    stop = threading.Event()

    def feed() -> None:  # a live stream, as the consumer would feed it
        img = _split_image()
        while not stop.is_set():
            viewer.update(img)
            time.sleep(0.04)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    shot = tmp_path / "shot.png"
    try:
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=400,320", "--virtual-time-budget=3000", f"--screenshot={shot}", viewer.url],
            capture_output=True, text=True, timeout=90)
    finally:
        stop.set()
        viewer.stop()
    assert shot.exists(), f"no screenshot (rc {proc.returncode}): {proc.stderr[-400:]}"
    img = cv2.imread(str(shot))
    red = (img[..., 2] > 200) & (img[..., 1] < 60) & (img[..., 0] < 60)
    green = (img[..., 1] > 200) & (img[..., 2] < 60) & (img[..., 0] < 60)
    assert red.mean() > 0.1 and green.mean() > 0.1, "the MJPEG frame did not render in the page"
    ys, xs = np.nonzero(red)
    yg, xg = np.nonzero(green)
    assert xs.mean() < xg.mean()  # red left of green: the image as sent, not a placeholder
