"""The daemon's main loop: one ROUTER socket, message dispatch, client liveness, job bookkeeping.

The main thread owns the ROUTER socket and answers ping/status/cancel at once; the workers post their outgoing
messages to the Outbox, which the main thread hands to the ROUTER as each client reads (ZeroMQ sockets must not be
shared between threads).  Only authenticated peers reach the ROUTER: an ipc:// socket that only the daemon's user
can open, or TCP with CURVE and a ZAP handler (docs/security.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import secrets
import signal
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import torch
import torchvision
import zmq

from nst_engine import InvalidSettingsError, StyleSettings
from nst_engine.planning import output_size as result_size

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
    Cancel,
    Empty,
    Error,
    ErrorCode,
    Estimate,
    Frame,
    Hello,
    ImageRole,
    MessageType,
    ProtocolError,
    StatusReply,
    Submit,
    Welcome,
    invalid,
)
from ..wire.private_files import UnsafeFileError, private_directory
from .auth import LOCAL_USER, IssuedKeys, ZapHandler, make_curve_server
from .devices import ROUTER_SEND_HWM, Outbox, ResultCache, Worker, memory_status, worker_status
from .estimates import estimate_job
from .gate import GATE_KEY_BYTES, GateError, GateProcess, GateSettings, memory_bytes_for
from .invitations import CONNECTION_FILE_CLIENT, InvitationError, InvitationStore, keys_path
from .jobs import Client, FrameFeed, Job, JobQueue, JobState
from .lifecycle import DaemonLock, LockHeldError, ProcessIdentity
from .peers import PeerConnections, RejectionLog, over_caps, raise_descriptor_limit, receive_within
from .ray_pool import RayWorker, ray_workers

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_POLL_MS = 100
_RETRY_SEND_MS = 5  # while a client's messages wait for room in libzmq
_RECEIVE_HWM = 64  # messages queued per client before libzmq stops reading from it
_CONNECTION_FILE_CHECK_S = 1.0
_FAREWELL_LINGER_MS = 1000  # at shutdown, how long the last errors to clients may take to leave


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
    ray_address: str | None = None  # run jobs on this Ray cluster's actors instead of local workers
    ray_workers: int = 1


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
    curve: CurveKeys | None = None
    zap: ZapHandler | None = None  # TCP served by the daemon itself (where there is no ipc for a gate)
    gate: GateProcess | None = None  # TCP served by the gate, which reaches the daemon at ``router``'s ipc socket
    socket_file: Path | None = None  # an ipc socket the daemon made and removes
    socket_directory: Path | None = None  # a directory made for it, removed too

    def close(self) -> None:
        self.router.close(0)
        if self.socket_file is not None:
            self.socket_file.unlink(missing_ok=True)
        if self.socket_directory is not None:
            self.socket_directory.rmdir()
        if self.zap is not None:
            self.zap.stop()
        if self.gate is not None:
            self.gate.stop()


def _owner_only(info: os.stat_result, *, directory: bool = False) -> bool:
    """Ours, and nobody else may use it; with ``directory``, also a directory (an lstat: a link is none)."""
    return info.st_uid == os.geteuid() and not info.st_mode & 0o077 and (not directory or stat.S_ISDIR(info.st_mode))


class DaemonService:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.files = DaemonFiles.beside(config.connection_file)
        self.max_pixels = min(config.max_image_pixels, config.max_image_side**2)
        self.codec = Codec(MessageCaps.for_images(self.max_pixels))  # replaced by the transport's at bind
        self.context = zmq.Context()
        self.queue = JobQueue(config.queue_capacity)
        self.jobs: dict[str, Job] = {}
        self.last_seen: dict[Client, float] = {}
        self.started_at = time.monotonic()
        self.endpoint = ""
        self.transport_name = ""
        self.rejections = RejectionLog()
        self._reply = Outbox(self.codec)  # handed to the ROUTER by the main loop
        self._issued_keys: IssuedKeys | None = None  # over TCP: each message's key is checked against them
        self._gated = False  # TCP through the gate process
        self._told_on_return: dict[Client, tuple[float, list[Job]]] = {}  # see _tell_returning
        self._stop = threading.Event()
        self._restore_failing = False  # the removed connection file could not be written again
        self.results = ResultCache()  # shared: a warm start may run on another device than the job it starts from
        self.workers: list[Worker | RayWorker] = []  # one per device, or per Ray actor; made in serve()

    # -- life cycle -------------------------------------------------------------------------------
    def serve(self) -> None:
        """Take the lock, bind, publish the connection file, serve until shutdown or SIGTERM/SIGINT, clean up.
        AlreadyRunningError if a daemon already serves this connection file; UnsafeFileError if not private."""
        prepare_directory(self.files.connection)
        private_directory(self.files.connection.parent)
        raise_descriptor_limit()
        try:
            lock = DaemonLock.acquire(self.files.lock)
        except LockHeldError as error:
            raise AlreadyRunningError(str(error)) from None
        try:
            lock.record(ProcessIdentity.current())
            self._serve_locked()
        finally:
            lock.release()

    def _make_workers(self) -> list[Worker | RayWorker]:
        config = self.config
        if config.ray_address is not None:  # RayUnavailableError: not installed, or not reachable
            return list(ray_workers(
                config.ray_address, config.ray_workers, self.queue, self._reply, self.results, weights=config.weights,
                device=config.device, lazy=config.lazy, gram_cache_bytes=config.gram_cache_bytes,
                memory_budget=config.memory_budget, test_faults=config.test_faults))
        return [Worker(self.queue, self._reply, weights=config.weights, device=device, lazy=config.lazy,
                       gram_cache_bytes=config.gram_cache_bytes, memory_budget=config.memory_budget,
                       test_faults=config.test_faults, results=self.results)
                for device in config.devices or [config.device]]

    def _serve_locked(self) -> None:
        self.workers = self._make_workers()
        transport = self._bind()
        self.endpoint, self.codec = transport.endpoint, Codec(transport.caps)
        self.transport_name = "tcp+curve" if transport.curve is not None else "ipc"
        self._reply.codec = self.codec
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: self._stop.set())
        info = ConnectionInfo(self.endpoint, pid=os.getpid(), curve=transport.curve,
                              max_frame_bytes=TCP_MAX_FRAME_BYTES if transport.curve is not None else 0)
        try:
            write_connection_file(info, self.files.connection)
        except OSError as error:  # a full disk, a read-only folder: say which file
            transport.close()
            raise OSError(f"Cannot write the connection file {self.files.connection}: {error.strerror or error}") \
                from None
        log.info("Listening on %s (%s; connection file %s)", self.endpoint, self.transport_name, self.files.connection)
        for worker in self.workers:
            worker.start()
        try:
            self._loop(transport, info)
        finally:
            log.info("Shutting down")
            self._end_jobs(transport.router)
            remove_connection_file(self.files.connection, pid=os.getpid())
            transport.router.close(linger=_FAREWELL_LINGER_MS)  # delivers the errors _end_jobs sent
            transport.close()
            self._reply.close()
            self.context.destroy(linger=0)  # also closes the workers' sockets should they still be running

    def _end_jobs(self, router: zmq.Socket) -> None:
        """Tell each client whose job has not finished that the daemon stopped (silence would read as a crash),
        stop the workers, and pass on what they sent meanwhile (a result finished just before)."""
        self.queue.close()  # the workers take no more jobs
        for job in self.jobs.values():
            if job.live:
                job.cancel_token.cancel()
                self._reply(job.client, MessageType.ERROR,
                            Error(ErrorCode.CANCELLED, "The daemon was stopped during the job.", job_id=job.id))
        for worker in self.workers:
            worker.join(timeout=10)
        self._reply.send(router)  # these errors and what the workers sent meanwhile, as far as connections take it

    def _bind(self) -> _Transport:
        endpoint, made_directory = (self.config.endpoint, None) if self.config.endpoint else self._default_endpoint()
        if not endpoint.startswith(("ipc://", "tcp://")):
            raise EndpointError(f"The endpoint must be ipc://… or tcp://…, not {endpoint}.")
        tcp = endpoint.startswith("tcp://")
        gated = tcp and os.name == "posix" and zmq.has("ipc")
        public_endpoint = endpoint
        if gated:  # TCP peers reach the daemon through the gate, which reaches it here
            endpoint, made_directory = self._default_endpoint()
        caps = MessageCaps.for_images(self.max_pixels, TCP_MAX_FRAME_BYTES if tcp else None)
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.SNDHWM, ROUTER_SEND_HWM)  # per connection; what waits beyond is the Outbox's
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a full connection says so (EAGAIN) instead of dropping
        router.setsockopt(zmq.RCVHWM, _RECEIVE_HWM)
        router.setsockopt(zmq.MAXMSGSIZE, caps.socket_max_bytes)  # larger frames: libzmq drops the peer unread
        if gated:  # a client reconnecting with its routing id: its new link takes the id at once
            router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        transport = _Transport(router, endpoint, caps, socket_directory=made_directory)
        if tcp:
            store = InvitationStore(keys_path(self.files.connection))  # invited clients; read again when it changes
            try:
                server = store.server_key()  # kept across restarts, so that invitations stay valid
            except InvitationError as error:
                router.close(0)
                raise EndpointError(str(error)) from None
            keys = self._issued_keys = IssuedKeys(store)
            client = keys.issue(CONNECTION_FILE_CLIENT)
            transport.curve = CurveKeys(server.public, client.public, client.secret)
            if not gated:
                transport.zap = ZapHandler(self.context, keys,
                                           lambda reason: self.rejections.count("connections", reason))
                transport.zap.start()  # bound before the ROUTER is, so that no handshake can precede it
                make_curve_server(router, server)
        if not endpoint.startswith("tcp://"):
            private_directory(Path(endpoint.removeprefix("ipc://")).parent)  # nobody else may replace the socket
        # The socket file is made by bind() with the umask's permissions: made private from the start, it
        # leaves no moment in which another user could connect.  No other thread creates files yet.
        umask = os.umask(0o077)
        try:
            router.bind(endpoint)
        except zmq.ZMQError as error:
            transport.close()
            raise EndpointError(f"Cannot listen on {endpoint}: {error}.") from None
        finally:
            os.umask(umask)
        if not endpoint.startswith("tcp://"):
            transport.socket_file = Path(endpoint.removeprefix("ipc://"))
        transport.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        if gated:
            transport.gate = GateProcess(GateSettings(
                public_endpoint, transport.endpoint, server.public, server.secret, client.public,
                str(keys_path(self.files.connection)), TCP_MAX_FRAME_BYTES, self.max_pixels, memory_bytes_for(caps)))
            try:
                transport.endpoint = transport.gate.start()
            except GateError as error:
                transport.close()
                raise EndpointError(str(error)) from None
        return transport

    def _default_endpoint(self) -> tuple[str, Path | None]:
        """(endpoint, a directory made for it): an ipc socket beside the connection file if that directory
        is its user's alone and the path fits in a socket address, else in a 0700 directory of the temporary
        directory, the same one for each connection file (so that daemons killed without cleaning up leave
        one behind, not one each); TCP where the platform has no ipc (Windows)."""
        if os.name != "posix" or not zmq.has("ipc"):
            return "tcp://127.0.0.1:0", None
        socket_path = self.files.socket
        if _owner_only(socket_path.parent.stat()) and self.files.socket_fits:
            return f"ipc://{socket_path}", None  # a stale one is replaced: holding the lock, no other daemon uses it
        name = hashlib.sha256(os.fsencode(os.path.abspath(self.files.connection))).hexdigest()[:12]
        made = Path(tempfile.gettempdir()) / f"neural-style-{os.geteuid()}-{name}"
        with contextlib.suppress(FileExistsError):
            made.mkdir(mode=0o700)
        if not _owner_only(os.lstat(made), directory=True):  # someone else's, or a link: never used
            made = Path(tempfile.mkdtemp(prefix="neural-style-"))
        return f"ipc://{made / 'daemon.sock'}", made

    # -- main loop --------------------------------------------------------------------------------
    def _loop(self, transport: _Transport, info: ConnectionInfo) -> None:
        router = transport.router
        self._gated = transport.gate is not None
        peers = PeerConnections(router, transport.zap is not None,
                                 lambda reason: self.rejections.count("connections", reason))
        poller = zmq.Poller()
        for source in (router, self._reply.wakeup, peers.monitor):
            poller.register(source, zmq.POLLIN)
        next_file_check = 0.0
        waiting = False  # some client's messages wait for room in libzmq
        try:
            while not self._stop.is_set():
                poller.poll(_RETRY_SEND_MS if waiting else _POLL_MS)
                self._cancel_jobs_of_closed_connections(peers)
                while router.poll(0):
                    identity, frames = receive_within(router, self.codec.caps)
                    # Closes reported so far precede this message: its connection may reuse their descriptor.
                    self._cancel_jobs_of_closed_connections(peers)
                    self._handle(identity, frames, peers)
                waiting = self._reply.send(router)
                self._cancel_jobs_of_silent_clients()
                self._forget_finished_jobs(peers)
                self.rejections.flush()
                if transport.gate is not None:
                    transport.gate.keep_running()
                if transport.zap is not None and not transport.zap.alive:
                    log.error("The ZAP handler stopped; shutting down rather than serve unauthenticated peers")
                    break
                if time.monotonic() >= next_file_check:
                    self._restore_connection_file(info)
                    next_file_check = time.monotonic() + _CONNECTION_FILE_CHECK_S
        finally:
            peers.close()

    def _restore_connection_file(self, info: ConnectionInfo) -> None:
        """Write the connection file again if someone removed it: clients find the daemon through it.  A failure
        (a full disk, a folder made unwritable) is logged once and retried; the jobs go on meanwhile."""
        if os.path.lexists(self.files.connection):
            return
        try:
            write_connection_file(info, self.files.connection)
        except (OSError, UnsafeFileError) as error:
            if not self._restore_failing:
                log.error("The connection file %s was removed and cannot be written again (%s); retrying every "
                          "%g s", self.files.connection, error, _CONNECTION_FILE_CHECK_S)
            self._restore_failing = True
            return
        log.warning("The connection file %s was removed; wrote it again", self.files.connection)
        self._restore_failing = False

    def _handle(self, identity: zmq.Frame, frames: list[zmq.Frame] | None, peers: PeerConnections) -> None:
        keys = self._issued_keys
        if keys is None:
            user: str | None = LOCAL_USER
        elif self._gated:  # the gate put the peer's authenticated key first in its routing id
            user = keys.user_of_key(identity.bytes[:GATE_KEY_BYTES].decode("ascii", "replace"))
        else:
            user = keys.user_of(identity)
        if user is None:  # not with CURVE and ZAP enforced; nothing to answer to
            self.rejections.count("messages", "a message without an authenticated key")
            return
        client = Client(identity.bytes, user)
        peers.seen(client, identity)
        self._reply.connected(client)
        if client in self._told_on_return:
            self._tell_returning(client)
        if keys is not None and not keys.admits(user):
            self._refuse_revoked(client)
            return
        try:
            if frames is None:
                raise over_caps(self.codec.caps)
            message = self.codec.decode([frame.buffer for frame in frames])
        except ProtocolError as error:
            self.rejections.count("messages", str(error))
            self._reply(client, MessageType.ERROR, Error.of(error))
            return
        self.last_seen[client] = time.monotonic()
        try:
            if message.type is MessageType.SHUTDOWN and user != LOCAL_USER:
                raise invalid("shutdown: an invited client cannot stop the daemon; its user stops it on its machine "
                              "(python -m daemon stop)")
            self._dispatch(client, message)
        except ProtocolError as error:
            self._reply(client, MessageType.ERROR, Error.of(error, message.type))

    def _refuse_revoked(self, client: Client) -> None:
        """A message on a connection whose key was revoked (daemon revoke) since its handshake."""
        self.rejections.count("messages", "a message from a client whose key was revoked")
        self._cancel_jobs_of(client, "had its key revoked")
        self._reply(client, MessageType.ERROR, Error(
            ErrorCode.INVALID_REQUEST,
            "This client's key was revoked (python -m daemon revoke); ask for a new invitation."))

    def _dispatch(self, client: Client, message: Message) -> None:
        kind = message.type
        if kind is MessageType.HELLO:
            Hello.from_wire(message.body)
            self._reply(client, MessageType.WELCOME, Welcome(PROTOCOL_VERSION, VERSION, os.getpid()))
        elif kind in (MessageType.PING, MessageType.HEARTBEAT):
            self._reply(client, MessageType.PONG, Empty())
        elif kind is MessageType.STATUS:
            self._reply(client, MessageType.STATUS_REPLY, self.status(client))
        elif kind is MessageType.ESTIMATE:
            request = Estimate.from_wire(message.body, self.config.max_image_side)
            worker = self._next_worker()
            reply = estimate_job(request, worker.available_memory(), worker.speed.model(), worker.memory_device())
            self._reply(client, MessageType.ESTIMATE_REPLY, reply)
        elif kind is MessageType.SUBMIT:
            self._submit(client, message)
        elif kind is MessageType.FRAME:
            self._frame(client, message)
        elif kind is MessageType.CANCEL:
            self._cancel(client, Cancel.from_wire(message.body).job_id)
        elif kind is MessageType.SHUTDOWN:
            self._reply(client, MessageType.SHUTTING_DOWN, Empty())
            self._stop.set()
        else:
            raise invalid(f"{kind.value} is not a request the daemon takes")

    # -- jobs -------------------------------------------------------------------------------------
    def _submit(self, client: Client, message: Message) -> None:
        unread = self._reply.unread_results(client.user)
        if unread >= self.queue.capacity:  # they wait in the daemon's memory until read
            raise ProtocolError(ErrorCode.BUSY, f"{unread} results of this client's jobs are not read yet; read them "
                                "before submitting more.")
        job = self._parse_job(client, message)
        position = self.queue.put(job)
        if position is None:
            raise ProtocolError(ErrorCode.BUSY,
                                f"The daemon's queue is full ({self.queue.capacity} jobs); try again later.")
        self.jobs[job.id] = job
        self._reply(client, MessageType.ACCEPTED, Accepted(job.id, position))

    def _parse_job(self, client: Client, message: Message) -> Job:
        submit = Submit.from_wire(message.body, self.config.max_image_side, self.max_pixels)
        if len(message.frames) != len(submit.images):
            raise invalid(f"submit: {len(submit.images)} images described but {len(message.frames)} binary frames sent")
        for index, (entry, frame) in enumerate(zip(submit.images, message.frames)):
            spec, length = entry.spec, memoryview(frame).nbytes
            if length != spec.nbytes:
                raise invalid(f"images[{index}]: {spec.width}×{spec.height}×{spec.channels} {spec.dtype.value} "
                              f"needs {spec.nbytes} bytes but its frame has {length}")
        settings = submit.settings
        if settings.get("size", 0) > self.config.max_image_side:
            raise invalid(f"settings.size must be at most {self.config.max_image_side}")
        if submit.masks(ImageRole.REGION) is not None and settings.get("style_layer_sources") is not None:
            raise invalid("regions: masks over the output cannot be combined with settings.style_layer_sources; "
                          "choose one kind of control")
        if submit.sequence is not None and (submit.indices(ImageRole.INIT) or submit.warm_start
                                            or submit.masks(ImageRole.REGION) is not None):
            raise invalid("sequence: a sequence's frames start from their content and the previous result, so it "
                          "takes no init image, warm_start or regions")
        job = Job(id=secrets.token_hex(8), client=client, submit=submit, frames=list(message.frames))
        job.output_size = self._output_size(job)
        if submit.sequence is not None:
            job.feed = FrameFeed(submit.sequence.frames, job.content.spec.width, job.content.spec.height)
        return job

    def _frame(self, client: Client, message: Message) -> None:
        """A sequence's next frame; one that does not fit ends its job (a queued one at once, a running one by its
        worker, within an iteration).  Frames that cross their job's end are dropped."""
        request = Frame.from_wire(message.body, self.config.max_image_side, self.max_pixels)
        job = self.jobs.get(request.job_id)
        if job is None or job.client != client or job.feed is None:
            raise invalid(f"frame: no sequence job {request.job_id!r} of yours")
        if not job.live:
            return
        job.feed.put(request, message.frames, job.cancel_token)
        if job.feed.refusal is not None and self.queue.remove(job.id) is not None:
            job.state = JobState.FAILED
            self._reply(client, MessageType.ERROR, Error(ErrorCode.INVALID_REQUEST, job.feed.refusal, job_id=job.id))

    def _output_size(self, job: Job) -> tuple[int, int] | None:
        """(height, width) to resize the result to, or None; either way the image sent back (and each
        preview) stays within the pixel limit that inputs have (Submit.from_wire checked ``output``'s)."""
        if job.submit.output is not None:
            width, height = job.submit.output
            return height, width
        content = job.content.spec
        try:
            height, width = result_size(content.height, content.width, StyleSettings.from_values(job.submit.settings))
        except InvalidSettingsError as error:
            raise invalid(str(error)) from None
        if height * width > self.max_pixels:
            raise invalid(f"settings.size {max(height, width)} makes a {width}×{height} result "
                          f"({height * width} pixels); the limit is {self.max_pixels}")
        return None

    def _cancel(self, client: Client, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.client != client:
            raise invalid(f"cancel: no job {job_id!r} of yours")
        self._cancel_job(job, reply=True)

    def _cancel_job(self, job: Job, reply: bool = False) -> None:
        """A queued job at once (``reply``: with the error); a running one within an iteration, by its worker."""
        job.cancel_token.cancel()
        if self.queue.remove(job.id) is not None:
            job.state = JobState.CANCELLED
            if reply:
                self._reply(job.client, MessageType.ERROR, Error(ErrorCode.CANCELLED, "Job cancelled.", job_id=job.id))

    def _cancel_jobs_of(self, client: Client, why: str) -> None:
        for job in self.jobs.values():
            if job.live and job.client == client:
                log.info("Client %s %s: cancelling job %s", client.routing_id.hex(), why, job.id)
                job.cancelled_because = f"The job was cancelled: this client {why} during it."
                self._cancel_job(job)

    def _cancel_jobs_of_closed_connections(self, peers: PeerConnections) -> None:
        for client in peers.closed():
            cancelled = [job for job in self.jobs.values() if job.live and job.client == client]
            self._cancel_jobs_of(client, "disconnected")
            if cancelled:  # a client that comes back (its connection dropped, the TCP gate restarted) is told
                self._told_on_return[client] = (time.monotonic(), cancelled)
            self.last_seen.pop(client, None)
            self._reply.disconnected(client.routing_id)

    def _tell_returning(self, client: Client) -> None:
        """The outcome of the jobs its closed connection cancelled, to a client back on a new one: what the worker
        sent meanwhile went nowhere, and a client waiting for it would wait for ever (heartbeats answered)."""
        _, cancelled = self._told_on_return.pop(client, (0.0, []))
        for job in cancelled:
            self._reply(client, MessageType.ERROR, Error(ErrorCode.CANCELLED, job.cancelled_because, job_id=job.id))

    def _cancel_jobs_of_silent_clients(self) -> None:
        deadline = time.monotonic() - self.config.client_timeout_s
        for client in {job.client for job in self.jobs.values() if job.live}:
            if self.last_seen.get(client, 0.0) < deadline:
                self._cancel_jobs_of(client, "went silent")

    def _forget_finished_jobs(self, peers: PeerConnections) -> None:
        expired = time.monotonic() - 60
        for client in [c for c, (when, _) in self._told_on_return.items() if when < expired]:
            del self._told_on_return[client]
        for job_id, job in list(self.jobs.items()):
            finished = job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
            if finished and not any(worker.running is job for worker in self.workers):
                del self.jobs[job_id]
        active = {job.client for job in self.jobs.values()}
        forgotten = time.monotonic() - 60
        for client in [c for c, seen in self.last_seen.items() if c not in active and seen < forgotten]:
            del self.last_seen[client]
            peers.forget(client)

    # -- status -----------------------------------------------------------------------------------
    def status(self, client: Client) -> StatusReply:
        """The daemon's state as ``client`` may see it: other clients' jobs are counted, not named, and an invited
        client sees its own use of the style caches only (the daemon's own user sees all of it)."""
        upcoming = self._next_worker()
        speed = upcoming.speed.model()
        caches = [worker.gram_cache.figures(None if client.user == LOCAL_USER else client.user)
                  for worker in self.workers]
        return StatusReply(
            version=VERSION, protocol_version=PROTOCOL_VERSION, pid=os.getpid(), endpoint=self.endpoint,
            transport=self.transport_name, uptime_s=time.monotonic() - self.started_at,
            queue=[job.id if job.client == client else None for job in self.queue.snapshot()],
            queue_capacity=self.queue.capacity, jobs_done=sum(worker.jobs_done for worker in self.workers),
            devices=[worker_status(index, worker, client) for index, worker in enumerate(self.workers)],
            ray=None if self.config.ray_address is None else {
                "address": self.config.ray_address,
                "workers": [worker.ray_status(client) for worker in self.workers if isinstance(worker, RayWorker)]},
            style_cache={name: sum(cache[name] for cache in caches) for name in ("hits", "misses", "entries", "bytes")},
            kept_results=len(self.results), memory=memory_status(upcoming.available_memory(), upcoming.memory_device()),
            seconds_per_megapixel_iteration=None if speed is None else speed.seconds_per_megapixel,
            seconds_per_iteration=None if speed is None else speed.seconds_per_iteration,
            versions={"python": platform.python_version(), "torch": torch.__version__,
                      "torchvision": torchvision.__version__, "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
                      "msgpack": ".".join(map(str, msgpack.version))})

    def _next_worker(self) -> Worker:
        """The first idle worker, else the first: where a job sent now would go, which status and estimates describe."""
        return next((worker for worker in self.workers if worker.running is None), self.workers[0])
