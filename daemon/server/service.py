"""The daemon's main loop: one ROUTER socket, message dispatch, client liveness, job bookkeeping.

The main thread owns the ROUTER socket and answers ping/status/cancel at once; the worker thread runs
jobs and hands its outgoing messages to the main thread through an inproc PUSH/PULL pair (ZeroMQ
sockets must not be shared between threads).  Only authenticated peers reach the ROUTER: an ipc://
socket that only the daemon's user can open, or TCP with CURVE and a ZAP handler (docs/security.md).
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import torch
import torchvision
import zmq

from nst_engine import InvalidSettingsError, Optimizer, Precision, StyleSettings
from nst_engine.memory import arithmetic_for, largest_fitting_side
from nst_engine.planning import output_size as result_size
from nst_engine.tiling import largest_runnable_side

from ..wire.connection import (
    ConnectionInfo,
    CurveKeys,
    DaemonFiles,
    connection_path,
    prepare_directory,
    remove_connection_file,
    write_connection_file,
)
from ..wire.framing import Codec, Message
from ..wire.limits import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, TCP_MAX_FRAME_BYTES, MessageCaps
from ..wire.messages import (
    PROTOCOL_VERSION,
    Accepted,
    Buffer,
    Cancel,
    Empty,
    Error,
    ErrorCode,
    Estimate,
    EstimateReply,
    Hello,
    ImageRole,
    ImageSpec,
    MessageType,
    ProtocolError,
    StatusReply,
    Submit,
    Welcome,
    WireRecord,
    invalid,
)
from ..wire.private_files import private_directory
from .auth import IssuedKeys, ZapHandler, make_curve_server
from .devices import WorkerPool
from .estimates import estimate_job
from .invitations import CONNECTION_FILE_CLIENT, InvitationError, InvitationStore, keys_path
from .jobs import Job, JobQueue, JobState
from .lifecycle import DaemonLock, LockHeldError, ProcessIdentity
from .peers import PeerConnections
from .rejections import RejectionLog

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_EVENTS_ENDPOINT = "inproc://worker-events"
_POLL_MS = 100
_RECEIVE_HWM = 64  # messages queued per client before libzmq stops reading from it
_CONNECTION_FILE_CHECK_S = 1.0


@dataclass
class DaemonConfig:
    # None: the default local transport, an ipc:// socket beside the connection file where the platform
    # has one, else TCP on 127.0.0.1 (a free port).  A tcp:// endpoint is always served with CURVE.
    endpoint: str | None = None
    connection_file: Path = field(default_factory=connection_path)
    weights: Path | None = None
    device: str | None = None
    devices: list[str | None] = field(default_factory=list)  # one worker each; empty: one on ``device``
    lazy: bool = False
    queue_capacity: int = 4
    max_image_side: int = MAX_IMAGE_SIDE
    max_image_pixels: int = MAX_IMAGE_PIXELS
    gram_cache_bytes: int = 512 * 2**20
    memory_budget: int | None = None  # bytes a job may use; None: what the device has free when it starts
    client_timeout_s: float = 1.5  # clients heartbeat every 0.5 s while they have jobs
    test_faults: bool = False


class AlreadyRunningError(Exception):
    pass


class EndpointError(Exception):
    """The endpoint cannot be served: a scheme other than ipc:// or tcp://, or the bind failed."""


@dataclass
class _Transport:
    """The bound ROUTER socket and what goes with it."""

    router: zmq.Socket
    endpoint: str
    caps: MessageCaps
    curve: CurveKeys | None
    zap: ZapHandler | None
    socket_file: Path | None  # an ipc socket the daemon made and removes
    socket_directory: Path | None  # a directory made for it, removed too


@dataclass
class _Received:
    client: bytes  # routing identity
    identity_frame: zmq.Frame  # carries the connection it arrived on
    frames: list[zmq.Frame]
    refusal: str | None  # why the message was dropped unread, if it was


class _WorkerSender:
    """The worker thread's way out: its own PUSH socket into the main loop, made in that thread."""

    def __init__(self, context: zmq.Context, codec: Codec) -> None:
        self.codec = codec
        self.push = context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(_EVENTS_ENDPOINT)

    def __call__(self, client: bytes, message_type: MessageType, body: WireRecord, frames: Sequence[Buffer]) -> None:
        self.push.send_multipart([client, *self.codec.encode(message_type, body.to_wire(), frames)], copy=False)

    def close(self) -> None:
        self.push.close(0)


class DaemonService:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.files = DaemonFiles.beside(config.connection_file)
        self.max_pixels = min(config.max_image_pixels, config.max_image_side**2)
        self.codec = Codec(MessageCaps.for_images(self.max_pixels))  # replaced by the transport's at bind
        self.context = zmq.Context()
        self.queue = JobQueue(config.queue_capacity)
        self.jobs: dict[str, Job] = {}
        self.last_seen: dict[bytes, float] = {}
        self.started_at = time.monotonic()
        self.endpoint = ""
        self.transport_name = ""
        self.rejections = RejectionLog(log)
        self._issued_keys: IssuedKeys | None = None  # over TCP: each message's key is checked against them
        self._stop = threading.Event()
        self.pool = WorkerPool(  # one worker per device (daemon/server/devices.py)
            self.queue, self._make_worker_sender, config.devices or [config.device], weights=config.weights,
            lazy=config.lazy, gram_cache_bytes=config.gram_cache_bytes, memory_budget=config.memory_budget,
            test_faults=config.test_faults,
        )

    # -- life cycle -------------------------------------------------------------------------------
    def serve(self) -> None:
        """Take the lock, bind, publish the connection file, serve until shutdown or SIGTERM/SIGINT,
        clean up.  AlreadyRunningError if a daemon already serves this connection file; UnsafeFileError
        if its directory is not private."""
        prepare_directory(self.files.connection)
        private_directory(self.files.connection.parent)
        try:
            lock = DaemonLock.acquire(self.files.lock)
        except LockHeldError as error:
            raise AlreadyRunningError(str(error)) from None
        try:
            lock.record(ProcessIdentity.current())
            self._serve_locked()
        finally:
            lock.release()

    def _serve_locked(self) -> None:
        transport = self._bind()
        self.endpoint, self.codec = transport.endpoint, Codec(transport.caps)
        self.transport_name = "tcp+curve" if transport.curve is not None else "ipc"
        events = self.context.socket(zmq.PULL)
        events.bind(_EVENTS_ENDPOINT)
        self._install_signal_handlers()
        info = ConnectionInfo(self.endpoint, pid=os.getpid(), curve=transport.curve,
                              max_frame_bytes=TCP_MAX_FRAME_BYTES if transport.curve is not None else 0)
        write_connection_file(info, self.files.connection)
        log.info("Listening on %s (%s; connection file %s)", self.endpoint, self.transport_name, self.files.connection)
        self.pool.start()
        try:
            self._loop(transport, events, info)
        finally:
            log.info("Shutting down")
            self.queue.close()
            for running in self.pool.running_jobs():
                running.cancel_token.cancel()
            self.pool.join(timeout=10)
            remove_connection_file(self.files.connection, pid=os.getpid())
            transport.router.close(0)
            if transport.socket_file is not None:
                transport.socket_file.unlink(missing_ok=True)
            if transport.socket_directory is not None:
                transport.socket_directory.rmdir()
            if transport.zap is not None:
                transport.zap.stop()
            events.close(0)
            self.context.destroy(linger=0)  # also closes the worker's socket should it still be running

    def stop(self) -> None:
        self._stop.set()

    def _bind(self) -> _Transport:
        endpoint, made_directory = (self.config.endpoint, None) if self.config.endpoint else self._default_endpoint()
        if not endpoint.startswith(("ipc://", "tcp://")):
            raise EndpointError(f"The endpoint must be ipc://… or tcp://…, not {endpoint}.")
        tcp = endpoint.startswith("tcp://")
        caps = MessageCaps.for_images(self.max_pixels, TCP_MAX_FRAME_BYTES if tcp else None)
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.SNDHWM, 1000)  # a client that never reads: its messages are dropped, not queued forever
        router.setsockopt(zmq.RCVHWM, _RECEIVE_HWM)
        router.setsockopt(zmq.MAXMSGSIZE, caps.socket_max_bytes)  # larger frames: libzmq drops the peer unread
        zap = curve = None
        socket_file = None
        if tcp:
            store = InvitationStore(keys_path(self.files.connection))  # invited clients; read again when it changes
            try:
                server = store.server_key()  # kept across restarts, so that invitations stay valid
            except InvitationError as error:
                router.close(0)
                raise EndpointError(str(error)) from None
            keys = self._issued_keys = IssuedKeys(store)
            zap = ZapHandler(self.context, keys, lambda reason: self.rejections.count("connections", reason))
            zap.start()  # bound before the ROUTER is, so that no handshake can precede it
            client = keys.issue(CONNECTION_FILE_CLIENT)
            make_curve_server(router, server)
            curve = CurveKeys(server.public, client.public, client.secret)
        else:
            socket_file = Path(endpoint.removeprefix("ipc://"))
            private_directory(socket_file.parent)  # nobody else may replace the socket
        # The socket file is made by bind() with the umask's permissions: made private from the start, it
        # leaves no moment in which another user could connect.  No other thread creates files yet.
        umask = os.umask(0o077)
        try:
            router.bind(endpoint)
        except zmq.ZMQError as error:
            router.close(0)
            if zap is not None:
                zap.stop()
            if made_directory is not None:
                made_directory.rmdir()
            raise EndpointError(f"Cannot listen on {endpoint}: {error}.") from None
        finally:
            os.umask(umask)
        bound = router.getsockopt_string(zmq.LAST_ENDPOINT)
        return _Transport(router, bound, caps, curve, zap, socket_file, made_directory)

    def _default_endpoint(self) -> tuple[str, Path | None]:
        """(endpoint, a directory made for it): an ipc socket beside the connection file if that directory
        is its user's alone and the path fits in a socket address, else in a fresh 0700 directory of the
        temporary directory; TCP where the platform has no ipc (Windows)."""
        if os.name != "posix" or not zmq.has("ipc"):
            return "tcp://127.0.0.1:0", None
        socket = self.files.socket
        directory = socket.parent.stat()
        owner_only = directory.st_uid == os.geteuid() and not directory.st_mode & 0o077
        if owner_only and self.files.socket_fits:
            return f"ipc://{socket}", None  # a stale one is replaced: holding the lock, no other daemon uses it
        made = Path(tempfile.mkdtemp(prefix="neural-style-"))  # mode 0700
        return f"ipc://{made / 'daemon.sock'}", made

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())

    def _make_worker_sender(self) -> _WorkerSender:
        return _WorkerSender(self.context, self.codec)

    # -- main loop --------------------------------------------------------------------------------
    def _loop(self, transport: _Transport, events: zmq.Socket, info: ConnectionInfo) -> None:
        router = transport.router
        peers = PeerConnections(router)
        poller = zmq.Poller()
        for socket in (router, events, peers.monitor):
            poller.register(socket, zmq.POLLIN)
        next_file_check = 0.0
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(_POLL_MS))
                if events in ready:
                    while events.poll(0):
                        router.send_multipart(events.recv_multipart(copy=False), copy=False)
                self._cancel_jobs_of_closed_connections(peers)
                while router.poll(0):
                    received = self._receive(router, transport.caps)
                    # Closes reported so far precede this message: its connection may reuse their descriptor.
                    self._cancel_jobs_of_closed_connections(peers)
                    peers.seen(received.client, received.identity_frame)
                    self._handle(router, received)
                self._cancel_jobs_of_silent_clients()
                self._forget_finished_jobs(peers)
                self.rejections.flush()
                if transport.zap is not None and not transport.zap.alive:
                    log.error("The ZAP handler stopped; shutting down rather than serve unauthenticated peers")
                    break
                if time.monotonic() >= next_file_check:
                    self._restore_connection_file(info)
                    next_file_check = time.monotonic() + _CONNECTION_FILE_CHECK_S
        finally:
            peers.close()

    def _restore_connection_file(self, info: ConnectionInfo) -> None:
        """Write the connection file again if someone removed it: clients find the daemon through it, and
        holding the lock, this daemon is the only one for it."""
        if not os.path.lexists(self.files.connection):
            log.warning("The connection file %s was removed; writing it again", self.files.connection)
            write_connection_file(info, self.files.connection)

    @staticmethod
    def _receive(router: zmq.Socket, caps: MessageCaps) -> _Received:
        """One message, frame by frame.  libzmq has already limited each frame to ZMQ_MAXMSGSIZE; frames
        beyond the message caps are dropped as they are read, and none of them is parsed or copied."""
        client = router.recv(copy=False)
        frames: list[zmq.Frame] = []
        size, count, refusal = 0, 0, None
        more = client.more
        while more:
            frame = router.recv(copy=False)
            more = frame.more
            count += 1
            size += len(frame)
            if refusal is not None:
                continue
            if count > caps.max_frames or size > caps.max_message_bytes:
                refusal = (f"a message of more than {caps.max_frames} frames or {caps.max_message_bytes} bytes "
                           "(the daemon's limits)")
                frames.clear()
            else:
                frames.append(frame)
        return _Received(client.bytes, client, frames, refusal)

    def _reply(self, router: zmq.Socket, client: bytes, message_type: MessageType, body: WireRecord,
               frames: Sequence[Buffer] = ()) -> None:
        router.send_multipart([client, *self.codec.encode(message_type, body.to_wire(), frames)], copy=False)

    def _handle(self, router: zmq.Socket, received: _Received) -> None:
        client = received.client
        if self._issued_keys is not None and not self._issued_keys.admits(received.identity_frame):
            self._refuse_revoked(router, client)
            return
        try:
            if received.refusal is not None:
                raise ProtocolError(ErrorCode.INVALID_REQUEST, f"refused {received.refusal}")
            message = self.codec.decode([frame.buffer for frame in received.frames])
        except ProtocolError as error:
            self.rejections.count("messages", str(error))
            self._reply(router, client, MessageType.ERROR, Error.of(error))
            return
        self.last_seen[client] = time.monotonic()
        try:
            if message.type is MessageType.SHUTDOWN and self._issued_keys is not None \
                    and not self._issued_keys.issued_here(received.identity_frame):
                raise ProtocolError(ErrorCode.INVALID_REQUEST, "shutdown: an invited client cannot stop the daemon; "
                                    "its user stops it on its machine (python -m daemon stop)")
            self._dispatch(router, client, message)
        except ProtocolError as error:
            self._reply(router, client, MessageType.ERROR, Error.of(error, message.type))

    def _refuse_revoked(self, router: zmq.Socket, client: bytes) -> None:
        """A message on a connection whose key was revoked (daemon revoke) since its handshake."""
        self.rejections.count("messages", "a message from a client whose key was revoked")
        for job in self._live_jobs_of(client):
            self._cancel_job(job, None)
        self._reply(router, client, MessageType.ERROR, Error(
            ErrorCode.INVALID_REQUEST,
            "This client's key was revoked (python -m daemon revoke); ask for a new invitation."))

    def _dispatch(self, router: zmq.Socket, client: bytes, message: Message) -> None:
        kind = message.type
        if kind is MessageType.HELLO:
            Hello.from_wire(message.body)
            self._reply(router, client, MessageType.WELCOME, Welcome(PROTOCOL_VERSION, VERSION, os.getpid()))
        elif kind in (MessageType.PING, MessageType.HEARTBEAT):
            self._reply(router, client, MessageType.PONG, Empty())
        elif kind is MessageType.STATUS:
            self._reply(router, client, MessageType.STATUS_REPLY, self.status(client))
        elif kind is MessageType.ESTIMATE:
            request = Estimate.from_wire(message.body, self.config.max_image_side)
            self._reply(router, client, MessageType.ESTIMATE_REPLY, self.estimate(request))
        elif kind is MessageType.SUBMIT:
            self._submit(router, client, message)
        elif kind is MessageType.CANCEL:
            self._cancel(router, client, Cancel.from_wire(message.body).job_id)
        elif kind is MessageType.SHUTDOWN:
            self._reply(router, client, MessageType.SHUTTING_DOWN, Empty())
            self._stop.set()
        else:
            raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{kind.value} is not a request the daemon takes")

    # -- jobs -------------------------------------------------------------------------------------
    def _submit(self, router: zmq.Socket, client: bytes, message: Message) -> None:
        job = self._parse_job(client, message)
        position = self.queue.put(job)
        if position is None:
            raise ProtocolError(ErrorCode.BUSY,
                                f"The daemon's queue is full ({self.queue.capacity} jobs); try again later.")
        self.jobs[job.id] = job
        self._reply(router, client, MessageType.ACCEPTED, Accepted(job.id, position))

    def _parse_job(self, client: bytes, message: Message) -> Job:
        submit = Submit.from_wire(message.body, self.config.max_image_side, self.max_pixels)
        if len(message.frames) != len(submit.images):
            raise invalid(f"submit: {len(submit.images)} images described but {len(message.frames)} binary frames sent")
        for index, (entry, frame) in enumerate(zip(submit.images, message.frames)):
            spec, length = entry.spec, memoryview(frame).nbytes
            if length != spec.nbytes:
                raise invalid(
                    f"images[{index}]: {spec.width}×{spec.height}×{spec.channels} {spec.dtype.value} "
                    f"needs {spec.nbytes} bytes but its frame has {length}"
                )
        settings = submit.settings
        if settings.get("size", 0) > self.config.max_image_side:
            raise invalid(f"settings.size must be at most {self.config.max_image_side}")
        if submit.masks(ImageRole.REGION) is not None and settings.get("style_layer_sources") is not None:
            raise invalid("regions: masks over the output cannot be combined with settings.style_layer_sources; "
                          "choose one kind of control")
        job = Job(id=secrets.token_hex(8), client=client, submit=submit, frames=list(message.frames))
        job.output_size = self._output_size(submit.output, job.content.spec, settings)
        return job

    def _output_size(self, output: tuple[int, int] | None, content: ImageSpec,
                     settings: dict[str, Any]) -> tuple[int, int] | None:
        """(height, width) to resize the result to, or None; either way the image sent back (and each
        preview) stays within the pixel limit that inputs have (Submit.from_wire checked ``output``'s)."""
        if output is None:
            try:
                height, width = result_size(content.height, content.width, StyleSettings.from_values(settings))
            except InvalidSettingsError as error:
                raise invalid(str(error)) from None
            if height * width > self.max_pixels:
                raise invalid(f"settings.size {max(height, width)} makes a {width}×{height} result "
                              f"({height * width} pixels); the limit is {self.max_pixels}")
            return None
        width, height = output
        return height, width

    def _cancel(self, router: zmq.Socket, client: bytes, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.client != client:
            raise invalid(f"cancel: no job {job_id!r} of yours")
        self._cancel_job(job, router)

    def _cancel_job(self, job: Job, router: zmq.Socket | None) -> None:
        job.cancel_token.cancel()
        if self.queue.remove(job.id) is not None:
            job.state = JobState.CANCELLED
            if router is not None:
                self._reply(router, job.client, MessageType.ERROR,
                            Error(ErrorCode.CANCELLED, "Job cancelled.", job_id=job.id))
        # A running job stops within one iteration; the worker then sends the cancelled error.

    def _cancel_jobs_of_closed_connections(self, peers: PeerConnections) -> None:
        for client in peers.closed():
            for job in self._live_jobs_of(client):
                log.info("Client %s disconnected: cancelling job %s", client.hex(), job.id)
                self._cancel_job(job, None)
            self.last_seen.pop(client, None)

    def _live_jobs_of(self, client: bytes) -> list[Job]:
        return [job for job in self.jobs.values() if job.client == client
                and job.state in (JobState.QUEUED, JobState.RUNNING) and not job.cancel_token.cancelled]

    def _cancel_jobs_of_silent_clients(self) -> None:
        deadline = time.monotonic() - self.config.client_timeout_s
        for job in list(self.jobs.values()):
            if job.state in (JobState.QUEUED, JobState.RUNNING) and not job.cancel_token.cancelled:
                if self.last_seen.get(job.client, 0.0) < deadline:
                    log.info("Client %s went silent: cancelling job %s", job.client.hex(), job.id)
                    self._cancel_job(job, None)

    def _forget_finished_jobs(self, peers: PeerConnections) -> None:
        for job_id, job in list(self.jobs.items()):
            if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED) and not self.pool.is_running(job):
                del self.jobs[job_id]
        active = {job.client for job in self.jobs.values()}
        for client in [c for c in self.last_seen if c not in active]:
            if self.last_seen[client] < time.monotonic() - 60:
                del self.last_seen[client]
                peers.forget(client)

    # -- status -----------------------------------------------------------------------------------
    def status(self, client: bytes | None = None) -> StatusReply:
        """The daemon's state as ``client`` may see it: other clients' jobs are counted, not named."""
        worker = self.pool.next_worker()
        speed = worker.speed.model()
        return StatusReply(
            version=VERSION,
            protocol_version=PROTOCOL_VERSION,
            pid=os.getpid(),
            endpoint=self.endpoint,
            transport=self.transport_name,
            uptime_s=time.monotonic() - self.started_at,
            queue=[job.id if job.client == client else None for job in self.queue.snapshot()],
            queue_capacity=self.queue.capacity,
            jobs_done=self.pool.jobs_done,
            devices=self.pool.device_status(client),
            style_cache=self.pool.style_cache_status(),
            kept_results=len(self.pool.results),
            memory=_memory_status(worker.available_memory(), worker.memory_device()),
            seconds_per_megapixel_iteration=None if speed is None else speed.seconds_per_megapixel,
            seconds_per_iteration=None if speed is None else speed.seconds_per_iteration,
            versions={
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "pyzmq": zmq.__version__,
                "libzmq": zmq.zmq_version(),
                "msgpack": ".".join(map(str, msgpack.version)),
            },
        )

    def estimate(self, request: Estimate) -> EstimateReply:
        worker = self.pool.next_worker()
        return estimate_job(request, worker.available_memory(), worker.speed.model(), worker.memory_device())


def _memory_status(available: int, device: torch.device) -> dict[str, Any]:
    """The process's memory, and what the engine's measured memory model lets a new job do now on the
    device it would run on (square image, default layers, ``auto`` precision): the largest size at all
    (in tiles where needed) and the largest that runs whole (faster)."""
    memory: dict[str, Any] = {"rss_bytes": _rss_bytes(), "available_bytes": available}
    if torch.cuda.is_available():  # every GPU's together (``devices`` has each one's)
        gpus = range(torch.cuda.device_count())
        memory["cuda_allocated_bytes"] = sum(torch.cuda.memory_allocated(gpu) for gpu in gpus)
        memory["cuda_max_allocated_bytes"] = sum(torch.cuda.max_memory_allocated(gpu) for gpu in gpus)
    defaults = {optimizer.value: StyleSettings(optimizer=optimizer) for optimizer in Optimizer}
    arithmetic = arithmetic_for(Precision.AUTO, device)
    memory["largest_size"] = {name: largest_runnable_side(available, settings, arithmetic=arithmetic)
                              for name, settings in defaults.items()}
    memory["largest_whole_size"] = {
        name: largest_fitting_side(available, settings.layers, settings.style_layers, settings.optimizer, arithmetic)
        for name, settings in defaults.items()}
    return memory


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale




