"""The daemon's main loop: one ROUTER socket, message dispatch, client liveness, job bookkeeping.

The main thread owns the ROUTER socket and answers ping/status/cancel at once; the worker thread runs
jobs and hands its outgoing messages to the main thread through an inproc PUSH/PULL pair (ZeroMQ
sockets must not be shared between threads).
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
import signal
import sys
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

from nst_engine import Optimizer, Precision, StyleSettings
from nst_engine.device import choose_precision
from nst_engine.memory import largest_fitting_side
from nst_engine.tiling import largest_runnable_side

from .connection import (
    ConnectionFileError,
    ConnectionInfo,
    connection_path,
    process_alive,
    read_connection_file,
    remove_connection_file,
    write_connection_file,
)
from .jobs import Job, JobImage, JobQueue, JobState
from .protocol import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_IMAGE_SIDE,
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    Buffer,
    Codec,
    ErrorCode,
    Message,
    MessageType,
    ProtocolError,
    ReplayGuard,
    new_key,
    validate_image_spec,
    validate_settings,
)
from .worker import Worker

log = logging.getLogger(__name__)

VERSION = "0.1.0"
_EVENTS_ENDPOINT = "inproc://worker-events"
_POLL_MS = 100


@dataclass
class DaemonConfig:
    endpoint: str = "tcp://127.0.0.1:0"  # port 0: a free one, written to the connection file
    connection_file: Path = field(default_factory=connection_path)
    weights: Path | None = None
    device: str | None = None
    lazy: bool = False
    queue_capacity: int = 4
    max_image_side: int = DEFAULT_MAX_IMAGE_SIDE
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    gram_cache_bytes: int = 512 * 2**20
    memory_budget: int | None = None  # bytes a job may use; None: what the device has free when it starts
    client_timeout_s: float = 1.5  # clients heartbeat every 0.5 s while they have jobs
    test_faults: bool = False


class AlreadyRunningError(Exception):
    pass


class _WorkerSender:
    """The worker thread's way out: its own PUSH socket into the main loop, made in that thread."""

    def __init__(self, context: zmq.Context, codec: Codec) -> None:
        self.codec = codec
        self.push = context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(_EVENTS_ENDPOINT)

    def __call__(self, client: bytes, message_type: MessageType, body: dict[str, Any], frames: Sequence[Buffer]) -> None:
        self.push.send_multipart([client, *self.codec.encode(message_type, body, frames)], copy=False)

    def close(self) -> None:
        self.push.close(0)


class DaemonService:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.key = new_key()
        self.codec = Codec(self.key, ReplayGuard())
        self.context = zmq.Context()
        self.queue = JobQueue(config.queue_capacity)
        self.jobs: dict[str, Job] = {}
        self.last_seen: dict[bytes, float] = {}
        self.started_at = time.monotonic()
        self.endpoint = ""
        self._stop = threading.Event()
        self.worker = Worker(
            self.queue, self._make_worker_sender, weights=config.weights, device=config.device, lazy=config.lazy,
            gram_cache_bytes=config.gram_cache_bytes, memory_budget=config.memory_budget, test_faults=config.test_faults,
        )

    # -- life cycle -------------------------------------------------------------------------------
    def serve(self) -> None:
        """Bind, publish the connection file, serve until shutdown or SIGTERM/SIGINT, clean up."""
        self._refuse_if_live_daemon()
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.SNDHWM, 1000)  # a client that never reads: its messages are dropped, not queued forever
        router.setsockopt(zmq.MAXMSGSIZE, self._max_message_bytes())
        router.bind(self.config.endpoint)
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        events = self.context.socket(zmq.PULL)
        events.bind(_EVENTS_ENDPOINT)
        self._install_signal_handlers()
        info = ConnectionInfo(self.endpoint, self.key.hex(), pid=os.getpid())
        write_connection_file(info, self.config.connection_file)
        log.info("Listening on %s (connection file %s)", self.endpoint, self.config.connection_file)
        self.worker.start()
        try:
            self._loop(router, events)
        finally:
            log.info("Shutting down")
            self.queue.close()
            if self.worker.running is not None:
                self.worker.running.cancel_token.cancel()
            self.worker.join(timeout=10)
            remove_connection_file(self.config.connection_file, pid=os.getpid())
            router.close(0)
            events.close(0)
            self.context.destroy(linger=0)  # also closes the worker's socket should it still be running

    def stop(self) -> None:
        self._stop.set()

    def _refuse_if_live_daemon(self) -> None:
        try:
            existing = read_connection_file(self.config.connection_file)
        except ConnectionFileError:
            return
        if existing.pid != os.getpid() and process_alive(existing.pid):
            raise AlreadyRunningError(
                f"A daemon (pid {existing.pid}) already serves {existing.endpoint}; "
                f"its connection file is {self.config.connection_file}."
            )
        log.info("Replacing the stale connection file of a dead daemon (pid %d)", existing.pid)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())

    def _max_message_bytes(self) -> int:
        largest_frame = self.config.max_image_pixels * 4 * 4  # RGBA float32
        return largest_frame + MAX_HEADER_BYTES

    def _make_worker_sender(self) -> _WorkerSender:
        return _WorkerSender(self.context, self.codec)

    # -- main loop --------------------------------------------------------------------------------
    def _loop(self, router: zmq.Socket, events: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(events, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(_POLL_MS))
            if events in ready:
                while events.poll(0):
                    router.send_multipart(events.recv_multipart(copy=False), copy=False)
            if router in ready:
                while router.poll(0):
                    parts = router.recv_multipart(copy=False)
                    self._handle(router, parts)
            self._cancel_jobs_of_silent_clients()
            self._forget_finished_jobs()

    def _reply(self, router: zmq.Socket, client: bytes, message_type: MessageType, body: dict[str, Any],
               frames: Sequence[Buffer] = ()) -> None:
        router.send_multipart([client, *self.codec.encode(message_type, body, frames)], copy=False)

    def _handle(self, router: zmq.Socket, parts: list[zmq.Frame]) -> None:
        client = parts[0].bytes
        try:
            message = self.codec.decode([part.buffer for part in parts[1:]])
        except ProtocolError as error:
            log.warning("Refused a message from %s: %s", client.hex(), error)
            self._reply(router, client, MessageType.ERROR, {"code": error.code.value, "message": str(error)})
            return
        self.last_seen[client] = time.monotonic()
        try:
            self._dispatch(router, client, message)
        except ProtocolError as error:
            self._reply(router, client, MessageType.ERROR, {"code": error.code.value, "message": str(error),
                                                            "request": message.type.value})

    def _dispatch(self, router: zmq.Socket, client: bytes, message: Message) -> None:
        kind = message.type
        if kind is MessageType.HELLO:
            self._reply(router, client, MessageType.WELCOME, {"protocol_version": PROTOCOL_VERSION, "version": VERSION,
                                                              "pid": os.getpid()})
        elif kind in (MessageType.PING, MessageType.HEARTBEAT):
            self._reply(router, client, MessageType.PONG, {})
        elif kind is MessageType.STATUS:
            self._reply(router, client, MessageType.STATUS_REPLY, self.status())
        elif kind is MessageType.SUBMIT:
            self._submit(router, client, message)
        elif kind is MessageType.CANCEL:
            self._cancel(router, client, message.body.get("job_id"))
        elif kind is MessageType.SHUTDOWN:
            self._reply(router, client, MessageType.SHUTTING_DOWN, {})
            self._stop.set()
        else:
            raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{kind.value} is not a request the daemon takes")

    # -- jobs -------------------------------------------------------------------------------------
    def _submit(self, router: zmq.Socket, client: bytes, message: Message) -> None:
        job = self._parse_job(client, message)
        position = self.queue.put(job)
        if position is None:
            raise ProtocolError(ErrorCode.BUSY, f"The daemon's queue is full ({self.queue.capacity} jobs); try again later.")
        self.jobs[job.id] = job
        self._reply(router, client, MessageType.ACCEPTED, {"job_id": job.id, "position": position})

    def _parse_job(self, client: bytes, message: Message) -> Job:
        body = message.body
        unknown = set(body) - {"settings", "images", "warm_start", "progress_every", "preview_every", "output", "fault"}
        if unknown:
            raise _invalid(f"submit: unknown field {sorted(unknown)[0]}")
        settings = validate_settings(body.get("settings", {}))
        if settings.get("size", 0) > self.config.max_image_side:
            raise _invalid(f"settings.size must be at most {self.config.max_image_side}")
        images = body.get("images")
        if not isinstance(images, list) or not 2 <= len(images) <= 17:
            raise _invalid("submit: images must list the content, 1 to 15 styles and an optional init image")
        if len(message.frames) != len(images):
            raise _invalid(f"submit: {len(images)} images described but {len(message.frames)} binary frames sent")
        content: JobImage | None = None
        styles: list[JobImage] = []
        init: JobImage | None = None
        for index, (description, frame) in enumerate(zip(images, message.frames)):
            where = f"images[{index}]"
            if not isinstance(description, dict):
                raise _invalid(f"{where} must be a map")
            spec = validate_image_spec(description, where, self.config.max_image_side, self.config.max_image_pixels)
            length = memoryview(frame).nbytes
            if length != spec.nbytes:
                raise _invalid(
                    f"{where}: {spec.width}×{spec.height}×{spec.channels} {spec.dtype.value} needs {spec.nbytes} "
                    f"bytes but its frame has {length}"
                )
            role = description.get("role")
            image = JobImage(spec, frame)
            if role == "content" and content is None:
                content = image
            elif role == "style":
                styles.append(image)
            elif role == "init" and init is None:
                init = image
            else:
                raise _invalid(f"{where}.role must be content (once), style or init (once), got {role!r}")
        if content is None or not styles:
            raise _invalid("submit: needs one content image and at least one style image")
        warm_start = body.get("warm_start")
        if warm_start is not None and not isinstance(warm_start, str):
            raise _invalid("warm_start must be a job id (string)")
        output = body.get("output")
        output_size = None
        if output is not None:
            if not isinstance(output, dict):
                raise _invalid("output must be a map with width and height")
            output_size = (_int_field(output, "height", 1, 1, self.config.max_image_side),
                           _int_field(output, "width", 1, 1, self.config.max_image_side))
        progress_every = _int_field(body, "progress_every", 1, 1, 100_000)
        preview_every = _int_field(body, "preview_every", 0, 0, 100_000)
        fault = body.get("fault") if self.config.test_faults else None
        return Job(
            id=secrets.token_hex(8), client=client, settings=settings, content=content, styles=styles, init=init,
            warm_start=warm_start, progress_every=progress_every, preview_every=preview_every, fault=fault,
            output_size=output_size,
        )

    def _cancel(self, router: zmq.Socket, client: bytes, job_id: object) -> None:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None or job.client != client:
            raise _invalid(f"cancel: no job {job_id!r} of yours")
        self._cancel_job(job, router)

    def _cancel_job(self, job: Job, router: zmq.Socket | None) -> None:
        job.cancel_token.cancel()
        if self.queue.remove(job.id) is not None:
            job.state = JobState.CANCELLED
            if router is not None:
                self._reply(router, job.client, MessageType.ERROR,
                            {"job_id": job.id, "code": ErrorCode.CANCELLED.value, "message": "Job cancelled."})
        # A running job stops within one iteration; the worker then sends the cancelled error.

    def _cancel_jobs_of_silent_clients(self) -> None:
        deadline = time.monotonic() - self.config.client_timeout_s
        for job in list(self.jobs.values()):
            if job.state in (JobState.QUEUED, JobState.RUNNING) and not job.cancel_token.cancelled:
                if self.last_seen.get(job.client, 0.0) < deadline:
                    log.info("Client %s went silent: cancelling job %s", job.client.hex(), job.id)
                    self._cancel_job(job, None)

    def _forget_finished_jobs(self) -> None:
        for job_id, job in list(self.jobs.items()):
            if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED) and job is not self.worker.running:
                del self.jobs[job_id]
        active = {job.client for job in self.jobs.values()}
        for client in [c for c in self.last_seen if c not in active]:
            if self.last_seen[client] < time.monotonic() - 60:
                del self.last_seen[client]

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        running = self.worker.running
        memory: dict[str, Any] = {"rss_bytes": _rss_bytes()}
        if torch.cuda.is_available():
            memory["cuda_allocated_bytes"] = torch.cuda.memory_allocated()
            memory["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
        # What the engine's measured memory model lets a new job do now (square image, default layers):
        # the largest size at all (in tiles where needed) and the largest that runs whole (faster).
        available = self.worker.available_memory()
        memory["available_bytes"] = available
        defaults = {optimizer.value: StyleSettings(optimizer=optimizer) for optimizer in Optimizer}
        memory["largest_size"] = {name: largest_runnable_side(available, settings) for name, settings in defaults.items()}
        memory["largest_whole_size"] = {
            name: largest_fitting_side(available, settings.layers, settings.optimizer) for name, settings in defaults.items()
        }
        cache = self.worker.gram_cache
        return {
            "version": VERSION,
            "protocol_version": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "endpoint": self.endpoint,
            "uptime_s": time.monotonic() - self.started_at,
            "device": self.worker.device,
            "precision": precision_status(self.worker.memory_device()),
            "model": self.worker.model_state.value,
            "model_error": self.worker.model_error,
            "queue": [job.id for job in self.queue.snapshot()],
            "queue_capacity": self.queue.capacity,
            "running": None if running is None else {"job_id": running.id, "progress": running.progress},
            "jobs_done": self.worker.jobs_done,
            "style_cache": {"hits": cache.hits, "misses": cache.misses, "entries": len(cache), "bytes": cache.nbytes},
            "kept_results": len(self.worker.results),
            "memory": memory,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "pyzmq": zmq.__version__,
                "libzmq": zmq.zmq_version(),
                "msgpack": ".".join(map(str, msgpack.version)),
            },
        }


def precision_status(device: torch.device) -> dict[str, str]:
    """What a job's ``auto`` precision runs in on ``device``, and why."""
    choice = choose_precision(Precision.AUTO, device)
    return {"auto": choice.precision.value, "reason": choice.reason}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, message)


def _int_field(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value
