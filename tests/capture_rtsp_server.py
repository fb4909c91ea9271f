"""A loopback RTSP server for the network-source tests: GStreamer's gst-rtsp-server (Debian:
python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good) re-serving the H.264 RTP
that Debian's ffmpeg sends to ``rtp_port``. Run with the system Python (it has ``gi``):

    /usr/bin/python3 tests/capture_rtsp_server.py PORT RTP_PORT any|tcp|udp

Serves ``rtsp://127.0.0.1:PORT/cam``; ``tcp``/``udp`` offers only that RTP transport (a
client asking for the other one gets "461 Unsupported transport"). Prints ``ready``.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main() -> None:
    port, rtp_port, transport = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Gst.init(None)
    server = GstRtspServer.RTSPServer.new()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory.new()
    caps = "application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload=96"
    factory.set_launch(f'( udpsrc address=127.0.0.1 port={rtp_port} caps="{caps}" ! rtph264depay '
                       f"! rtph264pay name=pay0 pt=96 config-interval=-1 )")
    factory.set_shared(True)  # one pipeline for every client: a reconnecting client rejoins it
    if transport == "tcp":
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    elif transport == "udp":
        factory.set_protocols(GstRtsp.RTSPLowerTrans.UDP)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
