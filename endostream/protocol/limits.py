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

# Streams a receiver (and the live consumer) keeps state for; the least recently seen is
# evicted beyond this (transport.max_streams).
MAX_STREAMS = 16

# Messages one receive call takes off the socket before returning (keeps a flood from
# holding the caller in one call for ever).
DRAIN_BATCH = 1000

LIVE_SNDHWM = 2  # producer queue: small, a stale frame is worth nothing live
LIVE_RCVHWM = 4  # consumer queue; the receiver drains it and keeps the newest per stream
LIVE_SUBSCRIBE_WAIT_S = 2.0  # a live producer waits this long at start for a consumer's subscription
LIVE_MAX_EVENTS = 1000  # end-of-stream / source-lost notices kept until taken

LOSSLESS_WINDOW = 32  # unacked frames a producer keeps
LOSSLESS_ACK_TIMEOUT_S = 10.0  # resend everything unacked when no ack came this long
LOSSLESS_RCVHWM = 1000  # consumer queue (messages)
# The lossless reorder buffer (frames that arrived before an earlier seq): bounded in frames
# per stream, in bytes over all streams and in seconds. A frame not held is resent by its
# producer (every unacked frame is), so these limits cost time, never frames.
LOSSLESS_MAX_HOLD = 64  # transport.lossless.max_hold
LOSSLESS_MAX_HOLD_BYTES = 256 << 20  # transport.lossless.max_hold_mb
LOSSLESS_MAX_HOLD_S = 5.0  # transport.lossless.max_hold_s

# Every socket refuses inbound parts larger than this unless it receives frames: a sender
# only ever gets acks and subscriptions (128 bytes or less).
CONTROL_MAXMSGSIZE = 64 << 10

PUBLISHER_SNDHWM = 4  # a slow subscriber loses messages beyond this

# Log lines a peer can trigger: at most one per key per interval, and at most LOG_MAX_LINES
# per interval over all keys together (protocol.ratelog).
LOG_INTERVAL_S = 10.0
LOG_MAX_LINES = 20
LOG_MAX_KEYS = 64

# Restarted peers are found again quickly, without hammering a peer that stays away.
RECONNECT_IVL_MS = 100
RECONNECT_IVL_MAX_MS = 2000


def max_message_bytes(max_width: int, max_height: int) -> int:
    """ZMQ_MAXMSGSIZE of a receiving socket: the largest part a valid frame message has (a raw
    BGR frame of the largest allowed size). A larger part makes libzmq drop the connection
    before it allocates anything, instead of the receiver checking it after taking it whole."""
    return int(max_width) * int(max_height) * 3
