"""Client library for the daemon over ZeroMQ.  Torch-free: the GIMP plug-in and the command line use it.

Requests are retried with the "Lazy Pirate" pattern: wait for the reply with a time-out, and on time-out close
the socket, open a fresh one and send again, a few times, before giving up with :class:`DaemonUnreachableError`.
While a job runs the client heartbeats every half second from a thread of its own, whatever the caller does with
its progress, and so learns within a few seconds when the daemon has died.  The client trusts a daemon only through
a private connection file: over ipc:// it also checks that the socket is its own user's, over TCP it authenticates
the daemon by its CURVE public key (and the daemon it, by the client key pair the file holds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from nst_engine.settings import DEFAULT_TEMPORAL_WEIGHT

from ..wire.connection import ConnectionFileError, ConnectionInfo, connection_path, read_connection_file
from ..wire.framing import Codec, Message
from ..wire.limits import SEQUENCE_FRAMES_AHEAD
from ..wire.messages import (
    PROTOCOL_VERSION,
    Accepted,
    Buffer,
    Cancel,
    Estimate,
    EstimateReply,
    Frame,
    Hello,
    Image,
    MessageType,
    ProtocolError,
    SequencePlan,
    StatusReply,
    Submit,
    Welcome,
    WireRecord,
)
from ..wire.private_files import UnsafeFileError, private_directory
from .contract import (
    DaemonError,
    DaemonJobError,
    DaemonUnreachableError,
    JobResult,
    ProgressCallback,
    StyleClient,
    parse_reply,
    submit_request,
)
from .remote import Handshake, daemon_silence_limit_s, remote_info, unreachable_message

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 0.5
_STEP_S = 0.1  # how often the job's traffic thread looks at its stop and cancel events
SEND_TIMEOUT_MS = 5000


class DaemonClient(StyleClient):
    """A connection to a running daemon (see :func:`connect`)."""

    transport = "zeromq"

    def __init__(self, info: ConnectionInfo, *, timeout_s: float = 5.0, retries: int = 2) -> None:
        super().__init__()
        if info.protocol_version != PROTOCOL_VERSION:
            raise DaemonError(f"The running daemon speaks protocol version {info.protocol_version}, this client "
                              f"{PROTOCOL_VERSION}: restart the daemon (python -m daemon stop, then start).")
        if info.curve is not None and not zmq.has("curve"):
            raise DaemonError(f"This pyzmq ({zmq.__version__}) cannot use CURVE, which the daemon's TCP endpoint "
                              "requires; install a pyzmq wheel from PyPI (they include it).")
        if info.endpoint.startswith("ipc://"):
            _check_ipc_socket(info.endpoint.removeprefix("ipc://"))
        self.info = info
        self.timeout_s = timeout_s
        self.retries = retries
        self.silence_limit_s = daemon_silence_limit_s(info)
        self.codec = Codec(info.caps)
        self.socket: zmq.Socket | None = None
        self._open()

    # -- socket handling --------------------------------------------------------------------------
    def _open(self) -> None:
        self.close()
        socket = zmq.Context.instance().socket(zmq.DEALER)
        configure_socket(socket, self.info)
        socket.connect(self.info.endpoint)
        self.socket = socket

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(0)
            self.socket = None

    def _send(self, message_type: MessageType, body: WireRecord | dict[str, Any] | None = None,
              frames: Sequence[Buffer] = ()) -> None:
        assert self.socket is not None
        fields = body if body is None or isinstance(body, dict) else body.to_wire()
        try:
            self.socket.send_multipart(self.codec.encode(message_type, fields, frames), copy=False)
        except zmq.Again:
            raise self._lost("takes no messages (its connection was dropped); is it running?") from None

    def _lost(self, what: str) -> DaemonUnreachableError:
        """The error for a daemon that ``what``, after opening a fresh socket (the old one may hold unsent messages)."""
        self._open()
        return DaemonUnreachableError(f"The daemon at {self.info.endpoint} {what}")

    def _receive(self, timeout_s: float) -> Message | None:
        assert self.socket is not None
        if not self.socket.poll(int(timeout_s * 1000)):
            return None
        parts = self.socket.recv_multipart(copy=False)
        try:
            return self.codec.decode([part.buffer for part in parts])
        except ProtocolError as error:
            raise DaemonError(f"The daemon sent a malformed message: {error}") from None

    def request(self, message_type: MessageType, body: WireRecord | None = None, *,
                expect: MessageType, frames: Sequence[Buffer] = ()) -> Message:
        """Send and wait for the reply of type ``expect`` (or an error), retrying on time-out."""
        for attempt in range(self.retries + 1):
            self._send(message_type, body, frames)
            deadline = time.monotonic() + self.timeout_s
            while (remaining := deadline - time.monotonic()) > 0:
                reply = self._receive(remaining)
                if reply is None:
                    break
                if _refuses(reply, message_type):
                    raise DaemonJobError.from_wire(reply.body)
                if reply.type is expect:
                    return reply
                # anything else (a late reply to an earlier request) is skipped
            log.info("No reply to %s (attempt %d); reconnecting", message_type.value, attempt + 1)
            self._open()
        raise DaemonUnreachableError(f"The daemon at {self.info.endpoint} does not answer (tried {self.retries + 1} "
                                     f"times, {self.timeout_s:g} s each). Is it running? Start it with: "
                                     "python -m daemon start")

    # -- requests ---------------------------------------------------------------------------------
    def hello(self) -> Welcome:
        reply = self.request(MessageType.HELLO, Hello(PROTOCOL_VERSION), expect=MessageType.WELCOME)
        return parse_reply(Welcome, reply.body)

    def ping(self) -> None:
        self.request(MessageType.PING, expect=MessageType.PONG)

    def status(self) -> StatusReply:
        return parse_reply(StatusReply, self.request(MessageType.STATUS, expect=MessageType.STATUS_REPLY).body)

    def send_estimate(self, request: Estimate) -> EstimateReply:
        reply = self.request(MessageType.ESTIMATE, request, expect=MessageType.ESTIMATE_REPLY)
        return parse_reply(EstimateReply, reply.body)

    def shutdown(self) -> None:
        self.request(MessageType.SHUTDOWN, expect=MessageType.SHUTTING_DOWN)

    def send_submit(self, request: Submit, frames: Sequence[Buffer]) -> str:
        # Submitting is not retried: a resent job could run twice.
        self._send(MessageType.SUBMIT, request, frames)
        reply = self._receive(self.timeout_s)
        while reply is not None and reply.type is not MessageType.ACCEPTED and not _refuses(reply, MessageType.SUBMIT):
            reply = self._receive(self.timeout_s)  # a late reply to an earlier request or job
        if reply is None:
            raise self._lost(f"did not accept the job within {self.timeout_s:g} s.")
        if reply.type is MessageType.ERROR:
            raise DaemonJobError.from_wire(reply.body)
        return parse_reply(Accepted, reply.body).job_id

    def cancel(self, job_id: str) -> None:
        self._send(MessageType.CANCEL, Cancel(job_id))

    def stylize_sequence(self, frames: Iterable[Image], count: int, styles: Sequence[Image],
                         settings: dict[str, Any] | None = None, *, temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT,
                         frame_iterations: int = 0, on_progress: ProgressCallback | None = None,
                         cancel: threading.Event | None = None, **submit_options: Any) -> Iterator[JobResult]:
        """Stylise an animation's ``count`` frames (all of one size) as one job, consistently frame to frame, and
        yield each frame's result, in order, as it is done.  The frames are read from ``frames`` as they are sent,
        at most SEQUENCE_FRAMES_AHEAD ahead of the results; progress records carry ``frame`` and ``frames``.
        Raises as :meth:`wait` does (a refused frame: DaemonJobError ``invalid_request``); leaving the loop early
        cancels the job.  ``submit_options`` are :func:`submit_request`'s, but for init, warm_start and regions.
        Nothing is sent before the first result is asked for."""
        frames = iter(frames)
        first = next(frames, None)
        if first is None or count < 2:
            raise DaemonJobError("invalid_request", f"a sequence needs at least 2 frames, got {count}")
        request, parts = submit_request(first, styles, settings,
                                        sequence=SequencePlan(count, temporal_weight, frame_iterations),
                                        **submit_options)
        job_id = self.send_submit(request, parts)
        sent, done = 1, 0
        with _JobTraffic(self, job_id, cancel, frames=count) as traffic:
            while done < count:
                while sent < count and sent - done < SEQUENCE_FRAMES_AHEAD:
                    image = next(frames, None)
                    if image is None:
                        raise DaemonJobError("invalid_request", f"the sequence has {sent} frames, not {count}")
                    sent += 1
                    traffic.post(MessageType.FRAME, Frame(job_id, sent, image.spec), [image.data])
                reply = traffic.next()
                if reply.type is MessageType.ERROR:
                    raise DaemonJobError.from_wire(reply.body)
                if (result := self._job_message(reply.type, reply.body, reply.frames, on_progress)) is not None:
                    done += 1
                    yield result

    def _wait(self, job_id: str, on_progress: ProgressCallback | None, cancel: threading.Event | None) -> JobResult:
        """Take the job's messages from :class:`_JobTraffic`, calling ``on_progress`` in this thread."""
        with _JobTraffic(self, job_id, cancel) as traffic:
            while True:
                reply = traffic.next()
                if reply.type is MessageType.ERROR:
                    raise DaemonJobError.from_wire(reply.body)
                if (result := self._job_message(reply.type, reply.body, reply.frames, on_progress)) is not None:
                    return result


class _JobTraffic:
    """The socket's side of waiting for a job, in a thread of its own: it heartbeats and sends the cancel whatever
    the caller's thread is doing (GIMP paints a large preview in the progress callback for over a second, and the
    daemon cancels the job of a client silent for 1.5 s), notices a silent daemon, and hands the job's messages over
    one at a time.  It reads no further ahead: what the caller has not taken waits in libzmq and the daemon, as it
    would without the thread.  ZeroMQ sockets are not thread-safe, so the thread owns the client's socket from its
    start until it has been joined.  A caller that leaves before the job's end (its callback raised) cancels it."""

    def __init__(self, client: DaemonClient, job_id: str, cancel: threading.Event | None,
                 frames: int | None = None) -> None:
        self.client, self.job_id, self.cancel = client, job_id, cancel
        self.frames = frames  # a sequence job's: it ends with that frame's result
        self.inbox: queue.Queue[Message | Exception] = queue.Queue(maxsize=1)
        self.outbox: queue.Queue[tuple[MessageType, WireRecord, Sequence[Buffer]]] = queue.Queue()
        self.stop = threading.Event()
        self.ended = False  # the job's last message, or a failure, was received: nothing is left to cancel
        self.thread = threading.Thread(target=self._run, name=f"heartbeats for job {job_id}", daemon=True)

    def __enter__(self) -> _JobTraffic:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()  # every step of the thread is bounded: _STEP_S, or a send's SNDTIMEO
        if not self.ended:
            with contextlib.suppress(DaemonError):
                self.client.cancel(self.job_id)

    def post(self, message_type: MessageType, body: WireRecord, frames: Sequence[Buffer]) -> None:
        """Have the thread send a message of the job's (a sequence's frame)."""
        self.outbox.put((message_type, body, frames))

    def next(self) -> Message:
        """The job's next message; the thread's error (the daemon went silent, say) is raised here."""
        item = self.inbox.get()  # bounded: the thread hands over a message or its error before it ends
        if isinstance(item, Exception):
            raise item
        return item

    def _run(self) -> None:
        try:
            self._carry()
        except Exception as error:  # the caller raises it, in its own thread
            self.ended = True
            while not self.stop.is_set():
                with contextlib.suppress(queue.Full):
                    self.inbox.put(error, timeout=_STEP_S)
                    return

    def _carry(self) -> None:
        client = self.client
        last_heard, next_heartbeat = time.monotonic(), 0.0
        held: Message | None = None  # received, not yet taken by the caller
        while not self.stop.is_set():
            now = time.monotonic()
            if self.cancel is not None and self.cancel.is_set():
                client.cancel(self.job_id)
                self.cancel = None  # sent once
            while not self.outbox.empty():
                client._send(*self.outbox.get())
            if now >= next_heartbeat:
                client._send(MessageType.HEARTBEAT)
                next_heartbeat = now + HEARTBEAT_INTERVAL_S
            if held is not None:
                with contextlib.suppress(queue.Full):
                    self.inbox.put(held, timeout=_STEP_S)
                    if self.ended:
                        return
                    held = None
                last_heard = time.monotonic()  # while the caller is busy, the daemon's messages wait unread
                continue
            if now - last_heard > client.silence_limit_s:
                raise client._lost(f"stopped answering during the job (nothing for {client.silence_limit_s:g} s); "
                                   "it may have crashed.")
            reply = client._receive(_STEP_S)
            if reply is None:
                continue
            last_heard = time.monotonic()
            if self._concerns_the_job(reply):
                self.ended = reply.type is MessageType.ERROR or (
                    reply.type is MessageType.RESULT and reply.body.get("frame") == self.frames)
                held = reply

    def _concerns_the_job(self, reply: Message) -> bool:
        """The job's messages and errors that end the wait, not pongs, another job's messages or the refusal of a
        cancel sent too late for an earlier job."""
        if reply.type is MessageType.PONG or reply.body.get("job_id") not in (None, self.job_id):
            return False
        return reply.type is not MessageType.ERROR or reply.body.get("request") != MessageType.CANCEL.value


def _refuses(reply: Message, request: MessageType) -> bool:
    """Whether ``reply`` is the daemon's refusal of a ``request`` just sent: an error of no job (a job's error
    ends that job), answering that type of request (not the refusal of a cancel sent too late for a job
    that had ended)."""
    return (reply.type is MessageType.ERROR and "job_id" not in reply.body
            and reply.body.get("request") in (None, request.value))


def configure_socket(socket: zmq.Socket, info: ConnectionInfo) -> None:
    """Make a DEALER socket ready to connect to the daemon ``info`` describes (before connecting it)."""
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SNDTIMEO, SEND_TIMEOUT_MS)  # a send never blocks for ever, say on a dropped connection
    # Our own random routing id: the ROUTER never generates one for us (its generated ids are
    # predictable, and a peer that took the next one could make libzmq abort).
    socket.setsockopt(zmq.ROUTING_ID, b"c" + secrets.token_bytes(15))
    socket.setsockopt(zmq.MAXMSGSIZE, info.caps.socket_max_bytes)
    if info.curve is not None:
        socket.curve_serverkey = info.curve.server_public.encode("ascii")
        socket.curve_publickey = info.curve.client_public.encode("ascii")
        socket.curve_secretkey = info.curve.client_secret.encode("ascii")


def probe_handshake(info: ConnectionInfo, timeout_s: float = 3.0) -> Handshake:
    """Connect once with a monitored socket and say how the CURVE handshake went."""
    socket = zmq.Context.instance().socket(zmq.DEALER)
    configure_socket(socket, info)
    monitor = socket.get_monitor_socket()
    connected = False
    try:
        socket.connect(info.endpoint)
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if not monitor.poll(int(remaining * 1000) + 1):
                break
            event = recv_monitor_message(monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return Handshake.SUCCEEDED
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                return Handshake.KEY_REFUSED
            if event == zmq.EVENT_CONNECTED:
                connected = True
            elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL) and connected:
                return Handshake.SERVER_KEY_MISMATCH
        return Handshake.SERVER_KEY_MISMATCH if connected else Handshake.NO_CONNECTION
    finally:
        socket.disable_monitor()
        monitor.close(0)
        socket.close(0)


def _check_ipc_socket(path: str) -> None:
    """Refuse a socket another user could have put there (say, once the daemon's temporary directory was
    gone); report a missing one as no daemon."""
    try:
        private_directory(Path(path).parent)
        info = os.lstat(path)
    except UnsafeFileError as error:
        raise DaemonError(str(error)) from None
    except FileNotFoundError:
        raise DaemonUnreachableError(f"The daemon's socket {path} does not exist: the daemon is not running "
                                     "(start it with: python -m daemon start).") from None
    if not stat.S_ISSOCK(info.st_mode) or (os.name == "posix" and info.st_uid != os.geteuid()):
        raise DaemonError(f"{path} is not a socket of this user's daemon; remove it and restart the daemon.")


# -- finding or starting the daemon -------------------------------------------------------------------
def connect(path: Path | None = None, *, start_command: Sequence[str] | None = None, start_timeout_s: float = 120.0,
            on_wait: Callable[[str], None] | None = None, timeout_s: float = 5.0) -> DaemonClient:
    """A handshaken client for the daemon named by the connection file; with ``start_command``, start
    the daemon when none answers and wait for it (calling ``on_wait`` with a message meanwhile).  A
    connection file that is not private is never used and starts nothing (DaemonError).  An invitation to
    a remote daemon (``daemon invite``) starts nothing either; its errors name the remote endpoint."""
    path = path or connection_path()
    if (remote := remote_info(path)) is not None:
        try:
            return handshake(path, timeout_s, retries=1)
        except DaemonUnreachableError:
            raise DaemonUnreachableError(unreachable_message(remote, path, probe_handshake(remote))) from None
    try:
        return handshake(path, timeout_s, retries=0 if start_command else 2)
    except (ConnectionFileError, DaemonUnreachableError) as error:
        if start_command is None:
            raise DaemonUnreachableError(str(error)) from None
    if on_wait is not None:
        on_wait("Starting the Neural Style daemon…")
    environment = dict(os.environ, NEURAL_STYLE_CONNECTION=str(path))
    try:
        started = subprocess.run(list(start_command), env=environment, check=False, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=start_timeout_s)
    except (OSError, subprocess.SubprocessError) as error:
        raise DaemonUnreachableError(f"No daemon is running and starting one failed ({error}). "
                                     "Start it with: python -m daemon start") from None
    if started.returncode != 0:  # its last line says why (a daemon not answering, a full disk): no use waiting
        said = started.stderr.decode(errors="replace").strip().splitlines() or [
            f"Starting the daemon failed (exit status {started.returncode}); start it with: python -m daemon start"]
        raise DaemonUnreachableError(said[-1].removeprefix("error: "))
    deadline = time.monotonic() + start_timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return handshake(path, timeout_s, retries=0)
        except (ConnectionFileError, DaemonUnreachableError) as error:
            last_error = error
            time.sleep(0.2)
    raise DaemonUnreachableError(f"The daemon did not start within {start_timeout_s:g} s ({last_error}).")


def handshake(path: Path, timeout_s: float, retries: int) -> DaemonClient:
    """A client of the daemon the connection file names once it answered hello (then retrying twice)."""
    try:
        info = read_connection_file(path)
    except UnsafeFileError as error:
        raise DaemonError(str(error)) from None
    client = DaemonClient(info, timeout_s=timeout_s, retries=retries)
    try:
        client.hello()
    except BaseException:
        client.close()
        raise
    client.retries = 2
    return client
