"""CURVE encryption + authentication for every endostream socket, and `endostream keys`.

Roles: the consumer (the side that binds) is the CURVE *server*: it holds a server key pair
and an allow-list folder of client public keys. Each producer is a CURVE *client*: it holds
its own key pair and the server's public key. Keys are only ever read from files; secret
files must not be readable by group or others. Logs show key ids (8 z85 characters of the
public key), never secret keys and never frame content.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from endostream.protocol.ratelog import RateLimitedLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerKeys:
    """The consumer's key pair (z85 bytes) and the folder of allowed client public keys."""

    public: bytes
    secret: bytes = field(repr=False)
    allow_dir: Path


@dataclass(frozen=True)
class ClientKeys:
    """A producer's key pair and the server's public key (all z85 bytes)."""

    public: bytes
    secret: bytes = field(repr=False)
    server_public: bytes


def key_id(public_key: bytes | str) -> str:
    """A short, non-secret id for logs: the first 8 z85 characters of a public key."""
    text = public_key.decode() if isinstance(public_key, bytes) else public_key
    return text[:8]


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"{path} is readable by group/others (mode {oct(mode & 0o777)}); "
                              f"run: chmod 600 {path}")


def load_secret(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``.key_secret`` file; refuses group/world-readable files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"secret key file not found: {path}")
    _check_private(path)
    public, secret = zmq.auth.load_certificate(path)
    if not secret:
        raise ValueError(f"{path} holds no secret key")
    return public, secret


def load_public(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"public key file not found: {path}")
    return zmq.auth.load_certificate(path)[0]


def load_server_keys(keys_dir: str | Path, name: str = "server",
                     allow_dir: str | Path | None = None) -> ServerKeys:
    """``keys_dir/name.key_secret`` + allow-list folder (default ``keys_dir/allowed``)."""
    public, secret = load_secret(Path(keys_dir) / f"{name}.key_secret")
    allow = Path(allow_dir) if allow_dir else Path(keys_dir) / "allowed"
    if not allow.is_dir():
        raise FileNotFoundError(f"allow-list folder of client public keys not found: {allow}")
    return ServerKeys(public, secret, allow)


def load_client_keys(keys_dir: str | Path, name: str = "client",
                     server_name: str = "server") -> ClientKeys:
    """``keys_dir/name.key_secret`` + the server's public key ``keys_dir/server_name.key``."""
    public, secret = load_secret(Path(keys_dir) / f"{name}.key_secret")
    return ClientKeys(public, secret, load_public(Path(keys_dir) / f"{server_name}.key"))


def create_keys(keys_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Create ``name.key`` (public, 0644) and ``name.key_secret`` (0600) in ``keys_dir``.

    Written in a private (0700) temporary folder first, so the secret is never briefly
    readable by others; refuses to overwrite an existing pair.
    """
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    pub, sec = keys_dir / f"{name}.key", keys_dir / f"{name}.key_secret"
    if pub.exists() or sec.exists():
        raise FileExistsError(f"key pair {name!r} already exists in {keys_dir}")
    tmp = Path(tempfile.mkdtemp(dir=keys_dir, prefix=".new-"))
    try:
        tpub, tsec = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
        os.chmod(tsec, 0o600)
        os.chmod(tpub, 0o644)
        os.replace(tsec, sec)
        os.replace(tpub, pub)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return pub, sec


def list_keys(keys_dir: str | Path) -> list[tuple[str, str, bool]]:
    """(file name, key id, has secret) for every ``*.key`` under keys_dir and its subfolders."""
    rows = []
    for p in sorted(Path(keys_dir).rglob("*.key")):
        rows.append((str(p.relative_to(keys_dir)), key_id(load_public(p)),
                     p.with_suffix(".key_secret").exists()))
    return rows


# ----------------------------------------------------------------------------- sockets


def secure_server(sock: zmq.Socket, keys: ServerKeys) -> None:
    """Make ``sock`` a CURVE server (call before bind). Needs ``start_auth`` on its context."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def secure_client(sock: zmq.Socket, keys: ClientKeys) -> None:
    """Make ``sock`` a CURVE client of the server whose public key is in ``keys``."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server_public


class _AllowList:
    """ZAP callback: a client is allowed when its public key is a ``*.key`` file in the
    allow folder. The folder is re-read when it changes, so adding a client needs no restart.
    Unknown clients retry every reconnect interval, so their log line is rate-limited."""

    def __init__(self, allow_dir: Path):
        self.allow_dir = allow_dir
        self._mtime = -1.0
        self._keys: set[bytes] = set()
        self._denied: dict[bytes, int] = {}
        self.denied_total = 0
        self.last_refused: str | None = None  # key id, for the socket's handshake-failure line
        self._log = RateLimitedLog(log)

    def _reload(self) -> None:
        mtime = self.allow_dir.stat().st_mtime
        if mtime != self._mtime:
            self._keys = set(zmq.auth.load_certificates(self.allow_dir))
            self._mtime = mtime

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            self._reload()
        except OSError as exc:
            self._log("allow_list_unreadable", f"allow-list folder unreadable ({exc}): refusing "
                      "all clients", logging.ERROR)
            return False
        if key in self._keys:
            return True
        n = self._denied.get(key, 0)
        if len(self._denied) < 10_000 or key in self._denied:  # bounded under a key flood
            self._denied[key] = n + 1
        self.last_refused = key_id(key)
        self.denied_total += 1
        # One limiter for every key: a peer cycling through fresh keys gets no line per key.
        self._log("curve_refused", f"refused unknown CURVE client key_id={key_id(key)} (attempt "
                  f"{n + 1} of this key, {len(self._denied)} unknown keys so far)")
        return False


# One ZAP handler per zmq.Context (ZeroMQ allows only one); shared, reference-counted.
_auth_lock = threading.Lock()
_auths: dict[int, tuple[ThreadAuthenticator, _AllowList, int]] = {}


def start_auth(context: zmq.Context, keys: ServerKeys) -> _AllowList:
    """Start (or share) the context's authenticator; pair every call with ``stop_auth``."""
    with _auth_lock:
        entry = _auths.get(id(context))
        if entry:
            auth, allow, n = entry
            _auths[id(context)] = (auth, allow, n + 1)
            return allow
        auth = ThreadAuthenticator(context, log=logging.getLogger("endostream.zap"))
        auth.start()
        allow = _AllowList(keys.allow_dir)
        auth.configure_curve_callback("*", credentials_provider=allow)
        _auths[id(context)] = (auth, allow, 1)
        return allow


def stop_auth(context: zmq.Context) -> None:
    with _auth_lock:
        entry = _auths.pop(id(context), None)
        if entry is None:
            return
        auth, allow, n = entry
        if n > 1:
            _auths[id(context)] = (auth, allow, n - 1)
        else:
            auth.stop()


# ----------------------------------------------------------------------------- command


def run_keys(cfg) -> int:
    """`endostream keys action=create|list|allow name=... dir=... path=...`.

    create: a key pair ``dir/name.key`` + ``dir/name.key_secret``;
    allow:  copy a client's public key file (``path=``) into ``dir/allowed/``;
    list:   every public key with its id.
    """
    keys_dir = Path(cfg.dir)
    if cfg.action == "create":
        pub, sec = create_keys(keys_dir, cfg.name)
        print(f"created {pub} (public, id {key_id(load_public(pub))}) and {sec} (secret, 0600)")
    elif cfg.action == "allow":
        src = Path(cfg.path)
        if not src.is_file():
            raise FileNotFoundError(f"public key file not found: {src}")
        public, secret = zmq.auth.load_certificate(src)
        if secret:  # never spread a secret key into the allow-list
            raise ValueError(f"{src} holds a secret key; pass the public .key file")
        allow = keys_dir / "allowed"
        allow.mkdir(parents=True, exist_ok=True)
        dst = allow / src.name
        dst.write_text(src.read_text())
        print(f"allowed {dst} (id {key_id(public)})")
    elif cfg.action == "list":
        if not keys_dir.is_dir():
            raise FileNotFoundError(f"key folder not found: {keys_dir}")
        for name, kid, secret in list_keys(keys_dir):
            print(f"{kid}  {name}{'  (+secret)' if secret else ''}")
    else:
        raise ValueError(f"unknown action {cfg.action!r}; expected create, list or allow")
    return 0
