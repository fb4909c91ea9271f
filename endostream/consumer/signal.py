"""Signal state of the video feed, and the full-frame cards that show it.

A frozen last frame must never look live in a procedure room. Per stream the consumer tracks:

    waiting    no frame yet                        card "WAITING FOR VIDEO"
    live       frames arriving
    no_signal  no frame for ``no_signal_after_ms``, card "NO SIGNAL - last frame N s ago"
               or the producer reported its source lost   (the last image, dimmed)
    ended      the producer sent end-of-stream     card "STREAM ENDED" (the last image, dimmed)

Each transition (start, loss, return, end) is logged as one line. The overall state of the
consumer (what ``/status.json`` reports) is ``live`` when any stream is live, else
``no_signal`` when any stream lost its signal, else ``ended`` when all ended, else ``waiting``.
Cards are drawn from the raw last frame, never the last overlay: an old mask on a frozen
image is exactly what must not be shown.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from endostream.protocol.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

WAITING, LIVE, NO_SIGNAL, ENDED = "waiting", "live", "no_signal", "ended"
STATES = (WAITING, LIVE, NO_SIGNAL, ENDED)
CARD_SIZE = (640, 360)  # (width, height) of a card drawn before any frame gave a size

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_RED = (40, 40, 235)
_AMBER = (0, 190, 255)
_GREY = (200, 200, 200)


@dataclass
class StreamSignal:
    """One stream's signal. Times are ``time.monotonic()`` seconds."""

    state: str = WAITING
    last_frame_t: float | None = None
    lost_t: float | None = None  # when the signal was lost (or the source reported it)
    last_image: np.ndarray | None = None  # raw BGR of the last frame, for the card
    reason: str = ""
    announced: bool = False  # "video started" was logged


class SignalTracker:
    """Per-stream signal state with one log line per transition.

    Args:
        no_signal_after_ms: a live stream without a new frame for this long is ``no_signal``.
    """

    def __init__(self, no_signal_after_ms: float = 1000.0) -> None:
        if no_signal_after_ms <= 0:
            raise ValueError(f"no_signal_after_ms={no_signal_after_ms}: expected > 0")
        self.after_s = float(no_signal_after_ms) / 1000.0
        self.streams: dict[int, StreamSignal] = {}
        self._log = RateLimitedLog(log, per_key=False)

    def on_frame(self, stream_id: int, image: np.ndarray, now: float, *,
                 new_epoch: bool = False, room: bool = True) -> None:
        """A frame of ``stream_id`` was shown (``image``: its raw HxWx3 BGR). ``room=False``:
        a stream id that may be a stray one; its start is logged once it is a room."""
        st = self.streams.get(stream_id)
        if st is None:
            st = self.streams[stream_id] = StreamSignal()
        if room and not st.announced:
            st.announced = True
            h, w = image.shape[:2]
            self._say(logging.INFO, f"stream {stream_id}: video started ({w}x{h})")
        elif st.state not in (LIVE, WAITING):
            gap = now - (st.last_frame_t or now)
            why = " (producer restarted)" if new_epoch else ""
            self._say(logging.INFO, f"stream {stream_id}: signal back after {gap:.1f} s without frames{why}")
        elif new_epoch:
            self._say(logging.INFO, f"stream {stream_id}: producer restarted (new epoch) after "
                      f"{(now - (st.last_frame_t or now)) * 1000:.0f} ms")
        st.state, st.last_frame_t, st.lost_t, st.last_image, st.reason = LIVE, now, None, image, ""

    def on_lost(self, stream_id: int, now: float,
                reason: str = "the producer reported its source lost") -> None:
        """The producer reported that its source stopped delivering."""
        st = self.streams.setdefault(stream_id, StreamSignal())
        if st.state in (LIVE, WAITING):
            self._lose(stream_id, st, now, reason)

    def on_end(self, stream_id: int, now: float, seq: int | None = None) -> None:
        """End-of-stream from the producer."""
        st = self.streams.setdefault(stream_id, StreamSignal())
        if st.state != ENDED:
            st.state = ENDED
            st.lost_t = st.lost_t or now
            self._say(logging.INFO, f"stream {stream_id}: ended (end-of-stream"
                      f"{'' if seq is None else f' after seq {seq - 1}'})")

    def tick(self, now: float) -> None:
        """Time passes: live streams without a frame for ``no_signal_after_ms`` lose signal."""
        for sid, st in self.streams.items():
            if st.state == LIVE and st.last_frame_t is not None and now - st.last_frame_t > self.after_s:
                self._lose(sid, st, now, f"no frame for {self.after_s * 1000:.0f} ms")

    def _lose(self, stream_id: int, st: StreamSignal, now: float, reason: str) -> None:
        st.state, st.lost_t, st.reason = NO_SIGNAL, now, reason
        self._say(logging.WARNING, f"stream {stream_id}: NO SIGNAL ({reason})")

    def _say(self, level: int, text: str) -> None:
        # Stream ids are the peer's choice: transitions are logged as they come until a flood
        # of ids would turn them into one line each, then only a count.
        self._log("signal", text, level)

    @property
    def state(self) -> str:
        """The consumer's overall state (see the module docstring)."""
        states = {st.state for st in self.streams.values()}
        for s in (LIVE, NO_SIGNAL):
            if s in states:
                return s
        return ENDED if states == {ENDED} else WAITING

    def last_frame_age_ms(self, now: float) -> float | None:
        """Milliseconds since the newest frame of any stream (None before the first)."""
        times = [st.last_frame_t for st in self.streams.values() if st.last_frame_t is not None]
        return None if not times else (now - max(times)) * 1000.0

    def age_s(self, stream_id: int, now: float) -> float | None:
        st = self.streams.get(stream_id)
        return None if st is None or st.last_frame_t is None else now - st.last_frame_t


# --------------------------------------------------------------------------- cards


def _centered(img: np.ndarray, text: str, cy: int, scale: float, thick: int,
              color: tuple[int, int, int]) -> None:
    (w, h), _ = cv2.getTextSize(text, _FONT, scale, thick)
    x = max(4, (img.shape[1] - w) // 2)
    cv2.putText(img, text, (x, cy + h // 2), _FONT, scale, (0, 0, 0), thick + 4, cv2.LINE_AA)
    cv2.putText(img, text, (x, cy + h // 2), _FONT, scale, color, thick, cv2.LINE_AA)


def _fit_scale(text: str, width: int, frac: float, thick_of: float = 0.08) -> tuple[float, int]:
    """Font scale making ``text`` about ``frac`` of ``width`` wide; thickness to match."""
    (w, _), _ = cv2.getTextSize(text, _FONT, 1.0, 2)
    scale = max(0.4, frac * width / max(w, 1))
    return scale, max(1, int(round(scale * 2 * thick_of / 0.08)))


def dim(image: np.ndarray) -> np.ndarray:
    """The last image as a card background: grey and at a third of its brightness, so it can
    never be mistaken for live video. HxWx3 uint8 BGR -> same shape, new array."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    grey = cv2.convertScaleAbs(grey, alpha=0.3)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def draw_card(state: str, background: np.ndarray | None = None, *, age_s: float | None = None,
              stream_id: int | None = None, size: tuple[int, int] = CARD_SIZE,
              dimmed: bool = False) -> np.ndarray:
    """A full-frame card for ``state`` (waiting, no_signal, ended).

    Args:
        background: the last raw frame (HxWx3 uint8 BGR), dimmed here; None: a dark card of
            ``size`` (width, height).
        age_s: seconds since the last frame ("last frame 3.2 s ago").
        stream_id: named on the card when given (several streams).
        dimmed: ``background`` is already the output of :func:`dim` (saves work per card).

    Returns:
        HxWx3 uint8 BGR, the size of ``background`` (or ``size``).
    """
    if background is None:
        img = np.full((size[1], size[0], 3), 24, np.uint8)
    else:
        img = background.copy() if dimmed else dim(background)
    h, w = img.shape[:2]
    if state == WAITING:
        title, color, sub = "WAITING FOR VIDEO", _AMBER, "no frame received yet"
    elif state == ENDED:
        title, color = "STREAM ENDED", _GREY
        sub = "" if age_s is None else f"last frame {age_s:.0f} s ago"
    else:
        title, color = "NO SIGNAL", _RED
        sub = "last frame ? s ago" if age_s is None else f"last frame {age_s:.0f} s ago"
    if stream_id is not None:
        sub = f"stream {stream_id}: {sub}" if sub else f"stream {stream_id}"
    border = max(3, w // 100)
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), color, border)
    scale, thick = _fit_scale("NO SIGNAL", w, 0.55)
    (_, th), _ = cv2.getTextSize(title, _FONT, scale, thick)
    if cv2.getTextSize(title, _FONT, scale, thick)[0][0] > w - 2 * border - 8:
        scale, thick = _fit_scale(title, w, 0.85)
    _centered(img, title, h // 2 - th // 2, scale, thick, color)
    if sub:
        s2, t2 = _fit_scale("last frame 10 s ago", w, 0.45)
        _centered(img, sub, h // 2 + int(th * 1.3), min(s2, scale * 0.6), t2, (235, 235, 235))
    s3, t3 = _fit_scale("research use only", w, 0.25)
    (lw, lh), _ = cv2.getTextSize("research use only", _FONT, s3, t3)
    cv2.putText(img, "research use only", (w - lw - border - 6, h - border - 6), _FONT, s3,
                _AMBER, t3, cv2.LINE_AA)
    return img


# --------------------------------------------------------------------------- driving the sinks


@dataclass
class _Shown:
    """The newest frame shown of a stream, kept for its cards."""

    frame: Any
    epoch: int
    background: np.ndarray | None = None  # the dimmed last image, made once per loss
    next_card_t: float = 0.0
    card_interval_s: float = 0.2


def _inner(sink: Any) -> Any:
    return getattr(sink, "sink", sink)  # GuardedSink wraps the real sink


class SignalCards:
    """Drives the sinks from the signal state, between and beside the real frames.

    * display sinks (the viewer: ``shows_cards``; the OpenCV window) get "WAITING FOR VIDEO"
      before the first frame, "NO SIGNAL - last frame N s ago" while a stream has none and
      "STREAM ENDED" after end-of-stream;
    * the overlay video gets the NO SIGNAL cards in live mode, at most one a second over all
      streams (``VIDEO_CARD_EVERY_S``): the recording marks the gap without a flood of stream
      ids filling it with cards (a lossless recording holds exactly the frames sent);
    * cards only for streams that are rooms (``is_room``, set by the live consumer: a stream
      id that sent a stray frame or two gets none);
    * sinks with ``set_status`` (the viewer) get the status dict a few times a second.
    Mask PNGs and the re-publish socket get no cards: a card is not an analysed frame, and a
    downstream consumer sees the gap itself.

    Args:
        tracker: the consumer's signal state.
        sinks: the consumer's (guarded) sinks.
        telemetry: for fps (:class:`endostream.consumer.telemetry.Telemetry`).
        model: ``{"model", "backend", "steps", "trained"}`` shown in the status.
        live: live mode (cards into the overlay video) or lossless.
    """

    STATUS_EVERY_S = 0.2
    WAITING_EVERY_S = 0.5
    ENDED_EVERY_S = 1.0
    VIDEO_CARD_EVERY_S = 1.0

    def __init__(self, tracker: SignalTracker, sinks: list[Any], telemetry: Any,
                 model: dict[str, Any], *, live: bool) -> None:
        self.tracker, self.tel, self.model, self.live = tracker, telemetry, dict(model), live
        self.live_status: Callable[[], dict[str, Any]] | None = None  # more /status.json keys, read each time
        self.display = [s for s in sinks if getattr(_inner(s), "shows_cards", False)
                        or type(_inner(s)).__name__ == "WindowSink"]
        self.video = [s for s in sinks if type(_inner(s)).__name__ == "VideoSink"] if live else []
        self.status_sinks = [s for s in sinks if hasattr(_inner(s), "set_status")]
        self.shown: dict[int, _Shown] = {}
        self.is_room: Any = lambda stream_id: True
        self._next_video_card_t = 0.0
        self.cards_written = 0
        self.video_cards = 0
        self.losses = 0
        self.no_signal_s = 0.0
        self._latency_ms: float | None = None
        self._mask_age_ms: float | None = None
        self._fps: float | None = None
        self._last_sid: int | None = None
        self._state = ""
        self._next_status_t = 0.0
        self._next_waiting_t = 0.0

    # -- from the display path -----------------------------------------------------------

    def on_shown(self, frame: Any, epoch: int, latency_ms: float, mask_age_ms: float | None) -> None:
        """A real frame went to the sinks (``frame.image``: its raw BGR image)."""
        now = time.monotonic()
        prev = self.shown.get(frame.stream_id)
        st = self.tracker.streams.get(frame.stream_id)
        if st is not None and st.state == NO_SIGNAL and st.lost_t is not None:
            self.no_signal_s += now - st.lost_t
        self.tracker.on_frame(frame.stream_id, frame.image, now, room=self.is_room(frame.stream_id),
                              new_epoch=prev is not None and prev.epoch != epoch)
        self.shown[frame.stream_id] = _Shown(frame, epoch)
        self._latency_ms, self._mask_age_ms, self._last_sid = latency_ms, mask_age_ms, frame.stream_id
        self._fps = self.tel.fps(frame.stream_id)
        if now >= self._next_status_t or self._state != LIVE:
            self._push_status(now)

    def tick(self) -> None:
        """Call often (every loop turn): state changes, cards that are due, status."""
        now = time.monotonic()
        before = {sid: st.state for sid, st in self.tracker.streams.items()}
        self.tracker.tick(now)
        for sid, st in self.tracker.streams.items():
            if st.state == NO_SIGNAL and before.get(sid) != NO_SIGNAL:
                self.losses += 1
            if st.state in (NO_SIGNAL, ENDED) and sid in self.shown and self.is_room(sid):
                self._card(sid, st, now, changed=before.get(sid) != st.state)
        if self.display and not self.tracker.streams and now >= self._next_waiting_t:
            self._next_waiting_t = now + self.WAITING_EVERY_S
            self._write(self.display, None, draw_card(WAITING))
        if now >= self._next_status_t or self.tracker.state != self._state:
            self._push_status(now)

    def final(self) -> None:
        """The consumer stops: a last status (``ended`` when every stream ended)."""
        now = time.monotonic()
        for st in self.tracker.streams.values():
            if st.state == NO_SIGNAL and st.lost_t is not None:
                self.no_signal_s += now - st.lost_t
                st.lost_t = now
        self._push_status(now)

    def summary(self) -> dict[str, Any]:
        return {"state": self.tracker.state, "losses": self.losses,
                "no_signal_s": round(self.no_signal_s, 2), "cards_written": self.cards_written,
                "video_cards": self.video_cards}

    def status(self, now: float) -> dict[str, Any]:
        """The dict the viewer serves as ``/status.json`` (plus ``t_last_frame``)."""
        state = self.tracker.state

        def current(value: float | None) -> float | None:
            return None if state != LIVE or value is None else round(value, 1)

        times = [st.last_frame_t for st in self.tracker.streams.values() if st.last_frame_t]
        return {
            "state": state,
            # Figures of the newest frame; none while no frame is current (they would read live).
            "fps": current(self._fps),
            "latency_ms": current(self._latency_ms),
            "mask_age_ms": current(self._mask_age_ms),
            "frames_shown": int(self.tel.shown),
            "t_last_frame": max(times) if times else None,
            "no_signal_after_ms": self.tracker.after_s * 1000.0,
            "streams": {str(sid): st.state for sid, st in self.tracker.streams.items()},
            **self.model,
            **(self.live_status() if self.live_status is not None else {}),
            "research_use_only": True,
        }

    # -- internals ------------------------------------------------------------------------

    def _push_status(self, now: float) -> None:
        self._next_status_t = now + self.STATUS_EVERY_S
        self._state = self.tracker.state
        if not self.status_sinks:
            return
        status = self.status(now)
        for sink in self.status_sinks:
            try:
                _inner(sink).set_status(status)
            except Exception as exc:  # noqa: BLE001 - the status bar must never stop the video
                log.debug("status to %s failed: %s", getattr(sink, "name", sink), exc)

    def _card(self, sid: int, st: StreamSignal, now: float, *, changed: bool) -> None:
        shown = self.shown[sid]
        if changed:  # a new loss (or end): dim the last image once, pick the card rate
            shown.background = dim(shown.frame.image)
            fps = self.tel.fps(sid) or 25.0
            shown.card_interval_s = 1.0 / min(max(fps, 5.0), 30.0)
            shown.next_card_t = now
        if now < shown.next_card_t:
            return
        ended = st.state == ENDED
        shown.next_card_t = now + (self.ENDED_EVERY_S if ended else shown.card_interval_s)
        to_video = bool(self.video) and not ended and now >= self._next_video_card_t
        if not (self.display or to_video):
            return
        if to_video:
            self._next_video_card_t = now + self.VIDEO_CARD_EVERY_S
        card = draw_card(st.state, shown.background, dimmed=True,
                         age_s=None if st.last_frame_t is None else now - st.last_frame_t,
                         stream_id=sid if len(self.tracker.streams) > 1 else None)
        self._write(self.display + self.video if to_video else self.display, shown.frame, card)
        self.video_cards += to_video

    def _write(self, sinks: list[Any], frame: Any, card: np.ndarray) -> None:
        if not sinks:
            return
        if frame is None:  # before any frame: a stand-in, the cards need none of its fields
            from endostream.types import Frame

            frame = Frame(stream_id=0, seq=-1, t_capture_ns=0, image=card)
        for sink in sinks:
            sink.write(frame, card, None)  # guarded: a failing sink is disabled, never raises
        self.cards_written += 1
