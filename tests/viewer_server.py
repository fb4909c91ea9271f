"""A browser viewer in its own process, fed 25 frames a second, for the flood tests:

    python tests/viewer_server.py NOFILE_LIMIT [MAX_CONNECTIONS]

Lowers its descriptor limit to NOFILE_LIMIT, logs to stderr at DEBUG (asyncio and aiohttp too:
any traceback shows), prints ``port N`` once serving, and stops on a line on stdin or EOF.
"""

import logging
import resource
import sys
import threading
import time

import numpy as np

from endostream.consumer.viewer import MjpegViewer


def main() -> None:
    limit = int(sys.argv[1])
    max_connections = int(sys.argv[2]) if len(sys.argv) > 2 else None
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    kwargs = {} if max_connections is None else {"max_connections": max_connections}
    viewer = MjpegViewer(port=0, idle_timeout_s=5.0, write_timeout_s=3.0, **kwargs).start()
    stop = threading.Event()

    def feed() -> None:  # the consumer's display loop: a new frame every 40 ms
        rng = np.random.default_rng(0)
        n = 0
        while not stop.is_set():
            img = np.full((240, 320, 3), n % 250, np.uint8)
            img[:8] = rng.integers(0, 255, (8, 320, 3), dtype=np.uint8)
            viewer.update(img)
            viewer.set_status({"state": "live", "frames_shown": n, "t_last_frame": time.monotonic()})
            n += 1
            time.sleep(0.04)

    threading.Thread(target=feed, daemon=True).start()
    print(f"port {viewer.port}", flush=True)
    sys.stdin.readline()
    stop.set()
    viewer.stop()
    print(f"stopped refused={viewer.refused} evicted={viewer.evicted}", flush=True)


if __name__ == "__main__":
    main()
