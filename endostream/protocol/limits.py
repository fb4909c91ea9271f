"""Every default and limit of the transport, written once. The constructors and the config
factory read them from here; configs/transport/default.yaml names the same values as keys.

A limit bounds something a peer controls (frame sizes, stream ids, queued messages), so a
hostile or broken producer cannot grow the consumer's memory or CPU without end."""

from __future__ import annotations

DEFAULT_LIVE_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_LOSSLESS_ENDPOINT = "tcp://127.0.0.1:5556"

# ZMTP heartbeats: a dead TCP peer (power-off, cable pulled) is noticed within the timeout.
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000

# Declared frame sizes beyond these are rejected as malformed.
MAX_WIDTH = 8192
MAX_HEIGHT = 8192

# Streams a receiver keeps state for; the least recently seen is evicted beyond this.
MAX_STREAMS = 64

# Messages one receive call takes off the socket before returning (keeps a flood from
# holding the caller in one call for ever).
DRAIN_BATCH = 1000

LIVE_SNDHWM = 2  # producer queue: small, a stale frame is worth nothing live
LIVE_RCVHWM = 4  # consumer queue; the receiver drains it and keeps the newest per stream
LIVE_MAX_EVENTS = 1000  # end-of-stream / source-lost notices kept until taken

LOSSLESS_WINDOW = 32  # unacked frames a producer keeps
LOSSLESS_ACK_TIMEOUT_S = 10.0  # resend everything unacked when no ack came this long
LOSSLESS_RCVHWM = 1000  # consumer queue (messages)
LOSSLESS_MAX_HOLD = 256  # out-of-order frames held per stream

PUBLISHER_SNDHWM = 4  # a slow subscriber loses messages beyond this

LOG_INTERVAL_S = 10.0  # rate-limited log lines: at most one per key per interval

# Restarted peers are found again quickly, without hammering a peer that stays away.
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 2000
