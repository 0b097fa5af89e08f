"""The TCP gate: a process of its own between TCP clients and the daemon, so that what an authenticated peer makes
libzmq buffer (a whole multipart message, before anyone can see it) is bounded by the gate's memory limit, not the
daemon's memory.  docs/protocol.md ("Caps before allocation for an invited client") argues the design.

The gate terminates CURVE (with its own ZAP handler over the same keys), checks each message against the caps, and
forwards those within them to the daemon's private ipc socket: one DEALER connection per TCP peer, whose routing id
is the peer's authenticated key (GATE_KEY_BYTES) and a digest of the peer's own routing id, so that the daemon knows
the user and the client (a client that reconnects with its routing id owns its jobs still), sees the peer's
connection close, and applies its per-connection flow control unchanged.  Answers go back the same way.

Run as ``python -m daemon.server.gate``; the daemon writes the settings (JSON, one line) to its stdin and keeps
stdin open: the gate ends when it closes.  Its stdout is its log, one ``LEVEL message`` line each; the first is
``READY <endpoint>`` or an ``ERROR``.  No torch here: the gate's working set stays small.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import zmq

from ..wire.framing import Codec
from ..wire.limits import MessageCaps
from ..wire.messages import Error, MessageType
from .auth import IssuedKeys, KeyPair, ZapHandler, make_curve_server
from .invitations import CONNECTION_FILE_CLIENT, InvitationStore
from .peers import PeerConnections, RejectionLog, over_caps, raise_descriptor_limit, receive_within

log = logging.getLogger(__name__)

GATE_KEY_BYTES = 40  # the Z85 public key that begins each routing id the gate gives the daemon
READY = "READY"
SEND_HWM = 2  # messages libzmq holds per TCP connection, as the daemon's ROUTER_SEND_HWM
RECEIVE_HWM = 64
_POLL_MS = 100
_RETRY_SEND_MS = 5
_START_TIMEOUT_S = 30.0
_RESTART_INTERVAL_S = 1.0


@dataclass(frozen=True)
class GateSettings:
    endpoint: str  # tcp://HOST:PORT to listen on
    daemon_endpoint: str  # the daemon's ipc:// socket
    server_public: str
    server_secret: str
    own_client_public: str  # the key of the daemon's own connection file: its user's
    keys_file: str  # the invitations (connection.keys.json), read again when it changes
    max_frame_bytes: int
    max_image_pixels: int
    memory_bytes: int  # the gate's data memory beyond what it uses once listening (RLIMIT_DATA)

    @property
    def caps(self) -> MessageCaps:
        return MessageCaps.for_images(self.max_image_pixels, self.max_frame_bytes)


def memory_bytes_for(caps: MessageCaps) -> int:
    """The gate's memory limit: a largest message coming in and as much going out (results, previews), plus room
    for libzmq's buffers.  All TCP clients together share it."""
    return 2 * caps.max_message_bytes + 64 * 2**20


# -- the daemon's side ---------------------------------------------------------------------------------------------
class GateError(Exception):
    """The gate could not start (e.g. its port is taken); the message says why."""


class GateProcess:
    """The gate the daemon runs and watches: started again (on the endpoint it first bound) when it ends."""

    def __init__(self, settings: GateSettings) -> None:
        self.settings = settings
        self.endpoint = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._next_start = 0.0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> str:
        """Start the gate and return the endpoint it listens on; GateError if it cannot listen."""
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        process = subprocess.Popen([sys.executable, "-m", "daemon.server.gate"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": path})
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        process.stdin.write(json.dumps(asdict(self.settings)).encode() + b"\n")
        process.stdin.flush()
        first: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_relay_log, args=(process, first), name="gate-log", daemon=True).start()
        try:
            line = first.get(timeout=_START_TIMEOUT_S)
        except queue.Empty:
            line = "ERROR the TCP gate did not start in time"
        kind, _, text = line.partition(" ")
        if kind != READY:
            self.stop()
            raise GateError(text or f"the TCP gate ended at start (exit status {process.poll()})")
        self.endpoint = text
        self.settings = replace(self.settings, endpoint=text)  # a restart listens where clients already connect
        log.info("TCP gate (pid %d) listening on %s", process.pid, text)
        return text

    def keep_running(self) -> None:
        """Called from the daemon's loop: start the gate again if it ended, at most once a second."""
        if self._process is None or self._process.poll() is None or time.monotonic() < self._next_start:
            return
        status = self._process.returncode
        why = f"signal {-status}" if status < 0 else f"exit status {status}"
        log.error("The TCP gate (pid %d) ended (%s; a client's message beyond its memory limit of %d MiB ends "
                  "it); starting it again", self._process.pid, why, self.settings.memory_bytes // 2**20)
        self._next_start = time.monotonic() + _RESTART_INTERVAL_S
        try:
            self.start()
        except GateError as error:
            log.error("The TCP gate could not start again: %s; retrying", error)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()  # the gate's signal to end
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _relay_log(process: subprocess.Popen[bytes], first: queue.Queue[str]) -> None:
    """The gate's stdout into the daemon's log; the first line also to ``first``."""
    assert process.stdout is not None
    started = False
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace").rstrip()
        if not started:
            first.put(line)
            started = True
            if line.startswith(READY):
                continue
        level, _, text = line.partition(" ")
        log.log(logging.getLevelName(level) if level in ("INFO", "WARNING", "ERROR") else logging.INFO,
                "gate: %s", text)
    if not started:
        first.put("")


# -- the gate's side -----------------------------------------------------------------------------------------------
class _Gate:
    def __init__(self, settings: GateSettings, context: zmq.Context) -> None:
        self.settings = settings
        self.context = context
        self.caps = settings.caps
        self.codec = Codec(self.caps)
        self.keys = IssuedKeys(InvitationStore(Path(settings.keys_file)))
        self.keys.admit(settings.own_client_public, CONNECTION_FILE_CLIENT)
        self.rejections = RejectionLog()
        self.zap = ZapHandler(context, self.keys, lambda reason: self.rejections.count("connections", reason))
        self.router = context.socket(zmq.ROUTER)
        self.inward: dict[tuple[bytes, str], zmq.Socket] = {}  # per TCP peer (routing id, key): its daemon link
        self.peer_of: dict[zmq.Socket, bytes] = {}  # a daemon link → its TCP routing id
        self.unsent: dict[zmq.Socket, list[zmq.Frame]] = {}  # an answer the TCP peer had no room for yet

    def listen(self) -> str:
        self.zap.start()  # bound before the ROUTER is, so that no handshake can precede it
        router = self.router
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.SNDHWM, SEND_HWM)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.setsockopt(zmq.RCVHWM, RECEIVE_HWM)
        router.setsockopt(zmq.MAXMSGSIZE, self.caps.socket_max_bytes)
        make_curve_server(router, KeyPair(self.settings.server_public, self.settings.server_secret))
        router.bind(self.settings.endpoint)
        return router.getsockopt_string(zmq.LAST_ENDPOINT)

    def serve(self, stdin: int) -> None:
        peers: PeerConnections[tuple[bytes, str]] = PeerConnections(
            self.router, True, lambda reason: self.rejections.count("connections", reason))
        waiting = False
        try:
            while self.zap.alive:
                poller = zmq.Poller()
                for source in (self.router, peers.monitor, stdin):
                    poller.register(source, zmq.POLLIN)
                for link in self.inward.values():
                    if link not in self.unsent:
                        poller.register(link, zmq.POLLIN)
                ready = dict(poller.poll(_RETRY_SEND_MS if waiting else _POLL_MS))
                if stdin in ready and not os.read(stdin, 4096):
                    return  # the daemon closed our stdin: it is stopping, or gone
                self._close_links(peers.closed())
                while self.router.poll(0):
                    identity, frames = receive_within(self.router, self.caps)
                    self._close_links(peers.closed())
                    self._inward(identity, frames, peers)
                for link in list(self.peer_of):
                    if link not in self.unsent and link.poll(0):
                        self.unsent[link] = link.recv_multipart(copy=False)
                waiting = self._outward()
                self.rejections.flush()
            log.error("the ZAP handler stopped; ending rather than admit unauthenticated peers")
        finally:
            peers.close()

    def _inward(self, identity: zmq.Frame, frames: list[zmq.Frame] | None, peers: PeerConnections) -> None:
        try:
            key = identity.get("User-Id")
        except zmq.ZMQError:
            key = ""
        if len(key) != GATE_KEY_BYTES:  # not with CURVE and ZAP enforced
            self.rejections.count("messages", "a message without an authenticated key")
            return
        peer = (identity.bytes, key)
        peers.seen(peer, identity)
        if frames is None:
            error = over_caps(self.caps)
            self.rejections.count("messages", str(error))
            with contextlib.suppress(zmq.ZMQError):
                self.router.send_multipart([identity, *self.codec.encode(MessageType.ERROR, Error.of(error).to_wire())],
                                           zmq.NOBLOCK)
            return
        link = self.inward.get(peer) or self._open_link(peer)
        try:
            link.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:  # the daemon has RECEIVE_HWM of this peer's messages unread
            self.rejections.count("messages", "a message the daemon had no room for")

    def _open_link(self, peer: tuple[bytes, str]) -> zmq.Socket:
        link = self.context.socket(zmq.DEALER)
        link.setsockopt(zmq.LINGER, 0)
        link.setsockopt(zmq.RCVHWM, 1)  # answers wait in the daemon (its Outbox), not here
        link.setsockopt(zmq.SNDHWM, RECEIVE_HWM)
        link.setsockopt(zmq.ROUTING_ID, peer[1].encode("ascii") + hashlib.sha256(peer[0]).digest()[:16])
        link.connect(self.settings.daemon_endpoint)
        self.inward[peer] = link
        self.peer_of[link] = peer[0]
        return link

    def _close_links(self, gone: list[tuple[bytes, str]]) -> None:
        """The daemon sees each closed peer's link close, and ends its jobs."""
        for peer in gone:
            link = self.inward.pop(peer, None)
            if link is not None:
                del self.peer_of[link]
                self.unsent.pop(link, None)
                link.close(0)

    def _outward(self) -> bool:
        """Hand each waiting answer to its TCP peer; True while some wait for room."""
        for link, frames in list(self.unsent.items()):
            try:
                self.router.send_multipart([self.peer_of[link], *frames], zmq.NOBLOCK, copy=False)
            except zmq.Again:  # the peer is not reading: its answers wait, and then the daemon's
                continue
            except zmq.ZMQError:  # its connection is gone
                pass
            del self.unsent[link]
        return bool(self.unsent)

    def close(self) -> None:
        for link in self.peer_of:
            link.close(0)
        self.router.close(0)
        self.zap.stop()


def _data_bytes() -> int | None:
    """This process's data memory (VmData), where /proc tells it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return None


def _limit_memory(extra: int) -> None:
    """Cap the data memory at what is used now plus ``extra``: beyond it allocations fail, and libzmq drops the
    connection or ends the gate, never the daemon."""
    import resource

    used = _data_bytes()
    if used is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (used + extra, used + extra))


def main() -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")
    stdin = sys.stdin.buffer
    try:
        settings = GateSettings(**json.loads(stdin.readline()))
    except (ValueError, TypeError) as error:
        print(f"ERROR unreadable gate settings: {error}", flush=True)
        return 2
    raise_descriptor_limit()
    context = zmq.Context()
    gate = _Gate(settings, context)
    try:
        try:
            endpoint = gate.listen()
        except (zmq.ZMQError, RuntimeError) as error:
            print(f"ERROR Cannot listen on {settings.endpoint}: {error}.", flush=True)
            return 1
        if os.name == "posix":
            _limit_memory(settings.memory_bytes)
        print(f"{READY} {endpoint}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C in a foreground serve: the daemon stops us
            gate.serve(stdin.fileno())
    finally:
        gate.close()
        context.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
