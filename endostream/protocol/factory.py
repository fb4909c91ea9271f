"""Senders and receivers built from a ``configs/transport`` block."""

from __future__ import annotations

import zmq

from endostream.protocol.limits import (DEFAULT_LIVE_ENDPOINT, DEFAULT_LOSSLESS_ENDPOINT, HEARTBEAT_IVL_MS,
                                        HEARTBEAT_TIMEOUT_MS, LOSSLESS_MAX_HOLD, LOSSLESS_MAX_HOLD_BYTES,
                                        LOSSLESS_MAX_HOLD_S, MAX_HEIGHT, MAX_STREAMS, MAX_WIDTH)
from endostream.protocol.live import LiveReceiver, LiveSender
from endostream.protocol.lossless_receiver import LosslessReceiver
from endostream.protocol.lossless_sender import LosslessSender
from endostream.protocol.security import ClientKeys, ServerKeys


def _security(cfg, server: bool) -> ServerKeys | ClientKeys | None:
    return security_keys(cfg.get("security"), server=server)


def security_keys(sec, *, server: bool) -> ServerKeys | ClientKeys | None:
    """Keys from a ``transport.security`` block (None when it is off or absent): the server
    side for a socket that binds (consumer, re-publish sink), the client side for one that
    connects (producer, subscriber)."""
    sec = sec or {}
    if not sec.get("enabled", False):
        return None
    from endostream.protocol.security import load_client_keys, load_server_keys

    if server:
        return load_server_keys(sec["keys_dir"], sec.get("server_key", "server"),
                                sec.get("allow_dir"))
    return load_client_keys(sec["keys_dir"], sec.get("client_key", "client"),
                            sec.get("server_key", "server"))


def resolve_endpoint(cfg) -> str:
    """``cfg.endpoint``, or the mode's default when it is null."""
    if cfg.get("endpoint"):
        return str(cfg["endpoint"])
    return DEFAULT_LIVE_ENDPOINT if cfg["mode"] == "live" else DEFAULT_LOSSLESS_ENDPOINT


def setting(cfg, key: str, default: float) -> float:
    """``cfg[key]``, or ``default`` (from ``protocol.limits``) when absent or null."""
    value = cfg.get(key) if cfg is not None else None
    return default if value is None else value


def _check_mode(cfg) -> str:
    mode = cfg["mode"]
    if mode not in ("live", "lossless"):
        raise ValueError(f"transport.mode={mode!r}; expected live or lossless")
    return mode


def open_sender(cfg, *, codec: str = "raw", jpeg_quality: int = 90, send_mask: bool = False,
                context: zmq.Context | None = None) -> LiveSender | LosslessSender:
    """Build the producer side from a ``configs/transport`` block."""
    hb = dict(heartbeat_ivl_ms=int(cfg.get("heartbeat_ivl_ms", HEARTBEAT_IVL_MS)),
              heartbeat_timeout_ms=int(cfg.get("heartbeat_timeout_ms", HEARTBEAT_TIMEOUT_MS)))
    common = dict(codec=codec, jpeg_quality=jpeg_quality, send_mask=send_mask, context=context,
                  security=_security(cfg, server=False), **hb)
    if _check_mode(cfg) == "live":
        return LiveSender(resolve_endpoint(cfg), sndhwm=int(cfg["live"]["sndhwm"]), **common)
    ll = cfg["lossless"]
    return LosslessSender(resolve_endpoint(cfg), window=int(ll["window"]),
                          ack_timeout_s=float(ll["ack_timeout_s"]), **common)


def open_receiver(cfg, *, context: zmq.Context | None = None) -> LiveReceiver | LosslessReceiver:
    """Build the consumer side from a ``configs/transport`` block."""
    common = dict(context=context, allow_remote=bool(cfg.get("allow_remote", False)),
                  security=_security(cfg, server=True),
                  max_width=int(setting(cfg, "max_width", MAX_WIDTH)),
                  max_height=int(setting(cfg, "max_height", MAX_HEIGHT)),
                  max_streams=int(setting(cfg, "max_streams", MAX_STREAMS)),
                  heartbeat_ivl_ms=int(cfg.get("heartbeat_ivl_ms", HEARTBEAT_IVL_MS)),
                  heartbeat_timeout_ms=int(cfg.get("heartbeat_timeout_ms", HEARTBEAT_TIMEOUT_MS)))
    if _check_mode(cfg) == "live":
        return LiveReceiver(resolve_endpoint(cfg), rcvhwm=int(cfg["live"]["rcvhwm"]), **common)
    ll = cfg["lossless"]
    return LosslessReceiver(resolve_endpoint(cfg), state_file=ll.get("state_file") or None,
                            max_hold=int(setting(ll, "max_hold", LOSSLESS_MAX_HOLD)),
                            max_hold_bytes=int(float(setting(ll, "max_hold_mb", LOSSLESS_MAX_HOLD_BYTES / 2**20))
                                               * 2**20),
                            max_hold_s=float(setting(ll, "max_hold_s", LOSSLESS_MAX_HOLD_S)), **common)
