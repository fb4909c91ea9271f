"""The re-publish sink: each overlay as a JPEG frame over ZeroMQ PUB, in wire protocol v1."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np

from endostream.consumer.sinks import SinkError, _os_reason
from endostream.types import Frame, Prediction

log = logging.getLogger(__name__)


class ZmqRepublishSink:
    """Publish each overlay on a ZeroMQ PUB socket in wire protocol v1 (format: docs/PROTOCOL.md,
    "Re-publish stream"): a JPEG frame message per overlay, with the drawn mask as a raw part
    (``send_mask``) so a recorder gets the mask, not only pixels with the HUD; end-of-stream
    for every stream on ``close``; ``source_lost`` / ``end_stream`` when the consumer says so.

    The socket binds like the consumer's own: loopback unless ``allow_remote``, and a CURVE
    server when ``security.enabled`` (the ``transport.security`` block; subscribers need
    their public key on its allow-list). PUB never blocks: a slow subscriber loses frames
    (send high-water mark ``hwm``), the consumer never waits.

    Args:
        endpoint: where to bind, loopback by default.
        jpeg_quality: 0..100.
        send_mask: add the drawn mask (HxW uint8, 0/255) as part 2 when there is one.
        security: the ``transport.security`` block (``configs/sink/republish.yaml`` passes it).
        allow_remote: the ``transport.allow_remote`` flag.
        configure: called with the raw socket before ``bind`` (extra socket options).
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5560", *, jpeg_quality: int = 80, hwm: int = 4,
                 send_mask: bool = True, security: Mapping[str, Any] | None = None,
                 allow_remote: bool = False, configure: Callable[[Any], None] | None = None) -> None:
        import zmq

        from endostream.protocol.factory import security_keys
        from endostream.protocol.publisher import Publisher

        self.endpoint, self.jpeg_quality, self.send_mask = endpoint, int(jpeg_quality), bool(send_mask)
        self.frames_written = 0
        self._streams: dict[int, tuple[int, int]] = {}  # stream id -> (epoch, last seq published)
        try:
            keys = security_keys(security, server=True)
        except (OSError, ValueError) as exc:
            raise SinkError(f"republish sink: security keys: {_os_reason(exc)}") from None
        try:
            self._pub = Publisher(endpoint, sndhwm=int(hwm), allow_remote=bool(allow_remote),
                                  security=keys) if configure is None else \
                self._configured(endpoint, int(hwm), bool(allow_remote), keys, configure)
        except (zmq.ZMQError, ValueError) as exc:
            raise SinkError(f"republish sink: cannot bind {endpoint}: {exc}") from None
        self._sock = self._pub.sock
        self.endpoint = self._pub.endpoint
        log.info("republish sink on %s%s", self.endpoint, " (CURVE)" if keys else "")

    @staticmethod
    def _configured(endpoint: str, hwm: int, allow_remote: bool, keys: Any,
                    configure: Callable[[Any], None]) -> Any:
        """A Publisher whose raw socket ``configure`` sees before it binds."""
        from endostream.protocol.publisher import Publisher

        class _Configured(Publisher):
            def _bind(self, ep: str, remote: bool, security: Any) -> None:
                configure(self.sock)
                super()._bind(ep, remote, security)

        return _Configured(endpoint, sndhwm=hwm, allow_remote=allow_remote, security=keys)

    def _epoch(self, stream_id: int, seq: int) -> int:
        """This sink's epoch for a stream: new when the source's seq goes backwards (its
        producer restarted), so subscribers never discard the new frames as stale."""
        from endostream.protocol import wire

        known = self._streams.get(stream_id)
        if known is None or seq <= known[1]:
            epoch = wire.new_epoch()
        else:
            epoch = known[0]
        self._streams[stream_id] = (epoch, seq)
        return epoch

    def write(self, frame: Frame, overlay_bgr: np.ndarray, prediction: Prediction | None) -> None:
        from endostream.protocol import wire

        mask = None
        if self.send_mask and prediction is not None:
            mask = prediction.mask.astype(np.uint8) * 255
            if mask.shape != overlay_bgr.shape[:2]:
                mask = cv2.resize(mask, overlay_bgr.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        out = Frame(stream_id=frame.stream_id, seq=frame.seq, t_capture_ns=frame.t_capture_ns,
                    image=overlay_bgr, modality=frame.modality, stamps_ns=dict(frame.stamps_ns),
                    gt_mask=mask)
        epoch = self._epoch(frame.stream_id, frame.seq)
        parts = wire.encode_frame(out, epoch=epoch, codec="jpeg", jpeg_quality=self.jpeg_quality,
                                  send_mask=mask is not None)
        if self._publish(parts):
            self.frames_written += 1

    def _publish(self, parts: list) -> bool:
        import zmq

        try:
            return self._pub.publish(parts)  # False: no room, a live viewer wants the next frame
        except zmq.ZMQError as exc:
            raise SinkError(f"republish sink: send on {self.endpoint} failed: {exc}") from None

    def end_stream(self, stream_id: int) -> None:
        """Forward end-of-stream (seq = last published seq + 1) for one stream."""
        from endostream.protocol import wire

        known = self._streams.pop(stream_id, None)
        if known is not None:
            self._publish(wire.encode_end_of_stream(stream_id, known[0], known[1] + 1))

    def source_lost(self, stream_id: int) -> None:
        """Forward the producer's source-lost notice (seq = next seq, not consumed)."""
        from endostream.protocol import wire

        known = self._streams.get(stream_id)
        if known is not None:
            self._publish(wire.encode_source_lost(stream_id, known[0], known[1] + 1))

    def close(self) -> None:
        """End every stream still open, give those messages a moment to leave, close."""
        if self._pub.sock.closed:
            return
        for sid in list(self._streams):
            self.end_stream(sid)
        self._pub.sock.linger = 500
        self._pub.close()
