"""CurveZMQ for TCP endpoints: the daemon's key pair, the client keys it issued, and the ZAP handler that
admits only those.

A TCP port on 127.0.0.1 is open to every local user (and, bound elsewhere, to the network), so a TCP
endpoint is always a CURVE server.  The handshake runs inside libzmq: a peer whose key the ZAP handler
does not admit is disconnected before it is attached to the ROUTER socket, so it never gets a routing
id, cannot queue a message and cannot make the daemon parse anything.  The handler admits the keys of
:class:`IssuedKeys`: those issued for the daemon's own connection file and those invited (``daemon invite``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import zmq
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by the ZAP specification (RFC 27)
ZAP_DOMAIN = b"neural-style"
HANDSHAKE_TIMEOUT_MS = 2000  # a peer that has not finished the CURVE handshake by then is dropped
LOCAL_USER = ""  # who owns a job: the daemon's own user (over ipc, or its connection file's key), or an invited key


@dataclass(frozen=True)
class KeyPair:
    public: str  # Z85, 40 characters
    secret: str

    @classmethod
    def generate(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(public.decode("ascii"), secret.decode("ascii"))


class KeyDirectory(Protocol):
    """Names the client keys admitted from elsewhere (the invitations file); None for any other key."""

    def name_of(self, public_key: str) -> str | None: ...


class IssuedKeys:
    """The client public keys the daemon admits, each with a name: those issued in this process, and
    those ``invited`` names."""

    def __init__(self, invited: KeyDirectory | None = None) -> None:
        self._names: dict[str, str] = {}
        self._lock = threading.Lock()
        self._invited = invited

    def issue(self, name: str) -> KeyPair:
        pair = KeyPair.generate()
        with self._lock:
            self._names[pair.public] = name
        return pair

    def user_of(self, frame: zmq.Frame) -> str | None:
        """Who sent a received message, by the key it came with (its ZAP User-Id): LOCAL_USER for a key this
        process issued (its own connection file's), else that key; None for a message without one."""
        try:
            key = frame.get("User-Id")
        except zmq.ZMQError:
            return None
        with self._lock:
            return LOCAL_USER if key in self._names else key

    def admits(self, user: str) -> bool:
        """Whether ``user`` (from :meth:`user_of`) is still admitted: an invited key may have been revoked."""
        return user == LOCAL_USER or self.name_of(user) is not None

    def name_of(self, public_key: str) -> str | None:
        with self._lock:
            name = self._names.get(public_key)
        if name is None and self._invited is not None:
            return self._invited.name_of(public_key)
        return name


def make_curve_server(socket: zmq.Socket, server: KeyPair) -> None:
    """Make ``socket`` a CURVE server whose peers need the ZAP handler's approval (fail closed: with
    ZAP_ENFORCE_DOMAIN, no handler means no peer, instead of libzmq's default of admitting any key)."""
    socket.curve_server = True
    socket.curve_secretkey = server.secret.encode("ascii")
    socket.curve_publickey = server.public.encode("ascii")
    socket.zap_domain = ZAP_DOMAIN
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    socket.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)


class ZapHandler:
    """The ZAP handler thread.  ``on_denied`` is called (from that thread) with the reason of each refusal."""

    def __init__(self, context: zmq.Context, keys: IssuedKeys, on_denied: Callable[[str], None]) -> None:
        self.context = context
        self.keys = keys
        self.on_denied = on_denied
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zap-handler", daemon=True)

    def start(self) -> None:
        """Start and return once the handler is bound, so that no handshake can happen before it."""
        self._thread.start()
        if not self._bound.wait(10):  # it failed (self._error) or hangs
            raise RuntimeError(f"the ZAP handler could not start: {self._error}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            socket = self.context.socket(zmq.REP)
            socket.setsockopt(zmq.LINGER, 0)
            socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as error:
            self._error = error
            return
        self._bound.set()
        try:
            while not self._stop.is_set():
                if socket.poll(100):
                    socket.send_multipart(self._answer(socket.recv_multipart()))
        finally:
            socket.close(0)

    def _answer(self, request: list[bytes]) -> list[bytes]:
        """The reply to a ZAP request [version, request id, domain, address, routing id, mechanism, key]:
        [version, request id, status, text, user id, metadata]."""
        request_id = request[1] if len(request) > 1 else b""
        if len(request) != 7 or request[0] != b"1.0":
            reason = "malformed ZAP request"
        elif request[2] != ZAP_DOMAIN or request[5] != b"CURVE" or len(request[6]) != 32:
            reason = f"{request[5].decode(errors='replace')} handshake outside the daemon's CURVE domain"
        elif self.keys.name_of(z85.encode(request[6]).decode("ascii")) is None:
            reason = "CURVE handshake with a key the daemon did not issue (never invited, or revoked)"
        else:
            # The User-Id libzmq attaches to this peer's messages is its key, so that each message can be
            # checked against the current invitations (IssuedKeys.admits), and own the jobs it submits.
            return [b"1.0", request_id, b"200", b"OK", z85.encode(request[6]), b""]
        self.on_denied(reason)
        return [b"1.0", request_id, b"400", reason.encode(), b"", b""]
