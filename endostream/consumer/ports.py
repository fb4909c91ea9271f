"""Start-up checks of what the consumer binds: its transport endpoint and its viewer ports.

A second consumer on a taken port must fail at once, in one line that names the override
to change, and before the model loads: a browser on a taken viewer port would show the
*other* consumer's video. Only cheap imports here (socket, zmq), so ``endostream.cli`` runs
the check before the consumer's heavy modules (numpy, OpenCV, the runtimes) are imported.
The consumer binds for real right after; a port taken in between fails there, as clearly.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any


class StartupError(RuntimeError):
    """The consumer cannot start (endpoint or port taken); a one-line message naming the
    override that changes it."""


def endpoint_in_use(endpoint: str) -> StartupError:
    return StartupError(f"transport endpoint {endpoint} is already in use (another consumer?); "
                        f"choose a free one with transport.endpoint=tcp://127.0.0.1:<port>")


def check_endpoint(endpoint: str) -> None:
    """Bind ``endpoint`` once and let go; :class:`StartupError` when another process holds it.
    Only fixed tcp ports are probed (``:*`` picks a free one; ipc/inproc cannot collide so)."""
    if not endpoint.startswith("tcp://") or endpoint.endswith(":*"):
        return
    import zmq

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PULL)
    sock.linger = 0
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EADDRINUSE:
            raise endpoint_in_use(endpoint) from None
        # a bad address etc.: left to the real bind, which explains it in full
    finally:
        sock.close(linger=0)


def viewer_specs(sink_specs: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The viewer sinks among ``{name: {_target_: ..., ...}}`` (the ``sink`` config group)."""
    return {name: spec for name, spec in sink_specs.items()
            if isinstance(spec, Mapping) and str(spec.get("_target_", "")).endswith("ViewerSink")
            and spec.get("enabled", True)}


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound as the viewer binds it (SO_REUSEADDR, like
    http.server: a port in TIME_WAIT is free, one another process listens on is not)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_viewer_ports(sink_specs: Mapping[str, Any]) -> None:
    """:class:`StartupError` when a viewer's port is taken, naming a free one to use."""
    for name, spec in viewer_specs(sink_specs).items():
        host, port = str(spec.get("host", "127.0.0.1")), int(spec.get("port", 8090))
        if port and not port_free(host, port):
            free = next((p for p in range(port + 1, min(port + 100, 65536)) if port_free(host, p)), None)
            hint = f"sink.{name}.port={free}" if free else f"sink.{name}.port=<port>"
            raise StartupError(f"viewer port {host}:{port} is already in use (another consumer's "
                               f"viewer?); choose another with {hint}")


def check(cfg: Any) -> None:
    """``endostream consume`` / ``demo`` before anything heavy: endpoint and viewer ports."""
    from omegaconf import OmegaConf

    sink_cfg = OmegaConf.select(cfg, "sink")
    check_viewer_ports((OmegaConf.to_container(sink_cfg, resolve=True) or {}) if sink_cfg is not None else {})
    check_endpoint(default_endpoint(OmegaConf.to_container(cfg.transport, resolve=True)))


def default_endpoint(tcfg: Mapping[str, Any]) -> str:
    """``transport.resolve_endpoint`` without importing the transport (numpy, OpenCV: seconds
    on a loaded machine); tests/test_cli_errors.py checks the two agree."""
    if tcfg.get("endpoint"):
        return str(tcfg["endpoint"])
    return "tcp://127.0.0.1:5555" if tcfg.get("mode") == "live" else "tcp://127.0.0.1:5556"
