"""What the daemon and its TCP gate both do with the peers of a ROUTER socket: read a message within the caps,
notice closed connections (and cap TCP connections per address), log refusals in summaries, and make room for
many descriptors.  No torch: the gate (gate.py) imports this."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..wire.limits import MessageCaps
from ..wire.messages import ProtocolError, invalid

log = logging.getLogger(__name__)

MAX_CONNECTIONS_PER_ADDRESS = 64  # over TCP: one host's share of the descriptors
_REJECTION_LOG_INTERVAL_S = 10.0

Peer = TypeVar("Peer", bound=Hashable)


def receive_within(router: zmq.Socket, caps: MessageCaps) -> tuple[zmq.Frame, list[zmq.Frame] | None]:
    """One message: its routing identity (which carries its connection and its ZAP User-Id) and frames, None beyond
    the caps.  libzmq has limited each frame to ZMQ_MAXMSGSIZE; frames beyond the caps are dropped unread."""
    identity = router.recv(copy=False)
    frames: list[zmq.Frame] | None = []
    size = 0
    more = identity.more
    while more:
        frame = router.recv(copy=False)
        more, size = frame.more, size + len(frame)
        if frames is not None:
            frames.append(frame)
            if len(frames) > caps.max_frames or size > caps.max_message_bytes:
                frames = None
    return identity, frames


def over_caps(caps: MessageCaps) -> ProtocolError:
    return invalid(f"refused a message of more than {caps.max_frames} frames or {caps.max_message_bytes} bytes "
                   "(the daemon's limits)")


class PeerConnections(Generic[Peer]):
    """Which peers' connections have closed, noticed as soon as libzmq closes them.  A ROUTER socket does not say
    when a peer goes (ROUTER_NOTIFY is a draft option, absent from the pyzmq wheels), but its monitor reports each
    closed connection by file descriptor, and each message carries the descriptor it arrived on.  Over TCP it also
    counts the connections libzmq accepts by their peer's address, and at once cuts off those beyond
    MAX_CONNECTIONS_PER_ADDRESS: one host's idle connections cannot take all the descriptors."""

    def __init__(self, router: zmq.Socket, tcp: bool, on_refused: Callable[[str], None]) -> None:
        self._router = router
        self.monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED | (zmq.EVENT_ACCEPTED if tcp else 0))
        self._on_refused = on_refused
        self._descriptor_of: dict[Peer, int] = {}
        self._address_of: dict[int, str] = {}  # accepted TCP connections by descriptor: their peer's address
        self._per_address: Counter[str] = Counter()

    def seen(self, peer: Peer, identity: zmq.Frame) -> None:
        """Record the connection a peer's latest message came on."""
        with contextlib.suppress(zmq.ZMQError):  # a libzmq without the (deprecated) option: heartbeats alone
            self._descriptor_of[peer] = identity.get(zmq.SRCFD)

    def closed(self) -> list[Peer]:
        """The peers whose connection closed since the last call.  Called before each received message is handled:
        a close is reported before its descriptor can be reused, so no new connection is blamed for it."""
        events = []
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            events.append((event["event"], event["value"]))
        last_close = {descriptor: index for index, (kind, descriptor) in enumerate(events)
                      if kind == zmq.EVENT_DISCONNECTED}
        for index, (kind, descriptor) in enumerate(events):
            if kind == zmq.EVENT_DISCONNECTED:
                self._count_closed(descriptor)
            elif last_close.get(descriptor, -1) < index:  # still open: the descriptor is that connection's
                self._count_accepted(descriptor)
        descriptors = set(last_close)
        gone = [peer for peer, fd in self._descriptor_of.items() if fd in descriptors]
        for peer in gone:
            del self._descriptor_of[peer]
        return gone

    def _count_accepted(self, descriptor: int) -> None:
        self._count_closed(descriptor)  # a close the monitor dropped (its queue was full): the descriptor is reused
        try:
            peer = socket.fromfd(descriptor, socket.AF_INET, socket.SOCK_STREAM)  # a duplicate; libzmq keeps its own
        except OSError:
            return
        with peer, contextlib.suppress(OSError):
            address = peer.getpeername()[0]
            if self._per_address[address] >= MAX_CONNECTIONS_PER_ADDRESS:
                peer.shutdown(socket.SHUT_RDWR)  # libzmq sees the connection end and closes its descriptor
                self._on_refused(f"a connection from {address} beyond its {MAX_CONNECTIONS_PER_ADDRESS}")
                return
            self._address_of[descriptor] = address
            self._per_address[address] += 1

    def _count_closed(self, descriptor: int) -> None:
        address = self._address_of.pop(descriptor, None)
        if address is not None:
            self._per_address[address] -= 1
            if not self._per_address[address]:
                del self._per_address[address]

    def forget(self, peer: Peer) -> None:
        self._descriptor_of.pop(peer, None)

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self._router.disable_monitor()
        self.monitor.close(0)


class RejectionLog:
    """Refused messages and connections, logged as one summary line with counts per interval at most: a peer (or a
    flood of handshakes) may be refused thousands of times a second, and a line each would fill the disk.  Counting
    is thread-safe: the ZAP handler counts from its own thread."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._last_detail = ""
        self._lock = threading.Lock()
        self._next_line = time.monotonic()  # the first refusal is reported at once, later ones in summaries

    def count(self, reason: str, detail: str = "") -> None:
        """Note one refusal; ``reason`` groups the counts, ``detail`` (e.g. the error text) is kept for the last one."""
        with self._lock:
            self._counts[reason] += 1
            self._last_detail = detail or reason

    def flush(self) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._counts or now < self._next_line:
                return
            counts, detail = self._counts, self._last_detail
            self._counts = Counter()
            self._next_line = now + _REJECTION_LOG_INTERVAL_S
        summary = ", ".join(f"{count} {reason}" for reason, count in counts.most_common())
        log.warning("Refused since the last such line (one per %g s at most): %s; %d in all (last: %s)",
                    _REJECTION_LOG_INTERVAL_S, summary, counts.total(), detail)


def raise_descriptor_limit() -> None:
    """The soft limit on open files up to the hard one: room for idle connections (each holds a descriptor until
    the handshake time-out) beside the clients' own."""
    if os.name != "posix":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (hard, 10240):  # macOS refuses an unlimited hard limit as the soft one
        if soft < limit:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
                return
