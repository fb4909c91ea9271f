"""Re-publishing wire messages to subscribers (remote viewers, recorders)."""

from __future__ import annotations

import zmq

from endostream.protocol.limits import HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS, PUBLISHER_SNDHWM
from endostream.protocol.security import ServerKeys
from endostream.protocol.sockets import BaseSocket, send_parts


class Publisher(BaseSocket):
    """PUB, bound: wire messages out to any number of subscribers (remote viewers,
    recorders). Like the consumer's socket it binds to loopback unless ``allow_remote`` and
    is a CURVE server when ``security`` is given (subscribers need keys on the allow-list).
    ``publish`` never blocks: a slow subscriber loses messages (``sndhwm``)."""

    def __init__(self, endpoint: str, *, sndhwm: int = PUBLISHER_SNDHWM, context: zmq.Context | None = None,
                 allow_remote: bool = False, security: ServerKeys | None = None,
                 heartbeat_ivl_ms: int = HEARTBEAT_IVL_MS,
                 heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS):
        super().__init__(zmq.PUB, context, linger_ms=0, heartbeat_ivl_ms=heartbeat_ivl_ms,
                         heartbeat_timeout_ms=heartbeat_timeout_ms)
        self.sock.sndhwm = sndhwm
        try:
            self._bind(endpoint, allow_remote, security)
        except Exception:
            self.close()
            raise

    def publish(self, parts: list) -> bool:
        """Queue one message; False when it could not be queued."""
        self._drain_monitor()
        try:
            send_parts(self.sock, parts)
        except zmq.Again:
            return False
        return True


# ============================================================================= from config
