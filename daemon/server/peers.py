"""Which clients' connections have closed, noticed as soon as libzmq closes them.

A ROUTER socket does not say when a peer goes: ROUTER_NOTIFY is a draft option, absent from the pyzmq
wheels.  Its monitor does report each closed connection, by file descriptor, and each received message
carries the descriptor it arrived on; together they name the client that went.  Heartbeat silence stays the
fallback (a client may hang without closing its connection).
"""
from __future__ import annotations

import logging

import zmq
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)


class PeerConnections:
    def __init__(self, router: zmq.Socket) -> None:
        self._router = router
        self.monitor = router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._descriptor_of: dict[bytes, int] = {}

    def seen(self, client: bytes, frame: zmq.Frame) -> None:
        """Record the connection the client's latest message came on."""
        try:
            self._descriptor_of[client] = frame.get(zmq.SRCFD)
        except zmq.ZMQError:  # a libzmq without the (deprecated) option: heartbeats alone then
            pass

    def closed(self) -> list[bytes]:
        """The clients whose connection closed since the last call.  Called before each received message is
        handled, so that a descriptor reused by a new connection is never blamed for the old one's close:
        the close is reported before the descriptor can be reused."""
        descriptors: set[int] = set()
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                descriptors.add(event["value"])
        if not descriptors:
            return []
        gone = [client for client, fd in self._descriptor_of.items() if fd in descriptors]
        for client in gone:
            del self._descriptor_of[client]
        return gone

    def forget(self, client: bytes) -> None:
        self._descriptor_of.pop(client, None)

    def close(self) -> None:
        try:
            self._router.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)
