"""The wire protocol (pure encode/decode and validation), the ZeroMQ transport and its security.

The lowest layer of the frame path: it imports only ``endostream.types`` and ``fileutil``;
capture, consumer and bench import it, never the reverse. Spec: docs/PROTOCOL.md."""
